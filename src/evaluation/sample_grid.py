"""Sample grids: many small images tiled into one picture a person can read."""

from __future__ import annotations

import math

import numpy as np


def sample_grid(images: np.ndarray, zoom: int = 4, columns: int | None = None) -> np.ndarray:
    """Tile (n, s, s, 1) images in [-1, 1] into one uint8 (H, W) picture, enlarged ``zoom`` times.

    Images are separated by a one-pixel mid-grey border (before enlargement), so neighbouring
    digits never merge; ``columns`` defaults to a square layout.
    """
    count, side = images.shape[0], images.shape[1]
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cell = side + 1
    canvas = np.full((rows * cell + 1, columns * cell + 1), 0.5, np.float32)
    # A diverged generator yields NaN: draw it as black rather than fail the logging.
    pixels = (np.clip(np.nan_to_num(images[..., 0], nan=-1.0), -1.0, 1.0) + 1.0) / 2.0
    for index, image in enumerate(pixels):
        row, col = divmod(index, columns)
        top, left = 1 + row * cell, 1 + col * cell
        canvas[top : top + side, left : left + side] = image
    enlarged = np.kron(canvas, np.ones((zoom, zoom), np.float32))
    return (enlarged * 255.0 + 0.5).astype(np.uint8)
