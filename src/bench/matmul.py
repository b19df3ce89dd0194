"""The machine's float32 matrix-multiply rate: the ceiling model FLOP utilisation is measured
against, for one process on every thread and for one single-threaded process per core."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from src.config import resources


def product_gflops(size: int, repeats: int = 10, threads: int = 0, start: Any = None) -> float:
    """GFLOP/s of the fastest of ``repeats`` n x n float32 products in this process, on
    ``threads`` TensorFlow threads (0: its default); after ``start.wait()`` when a barrier is
    given, so that several processes multiply at the same time.

    The fastest, not the mean: on a shared machine a slow repeat measures the neighbours.
    """
    import tensorflow as tf

    resources.apply_threads(threads)
    a, b = tf.random.normal((size, size)), tf.random.normal((size, size))
    product = tf.function(lambda x, y: tf.matmul(x, y))
    product(a, b).numpy()  # tracing is not multiplying
    if start is not None:
        start.wait()
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product(a, b).numpy()
        fastest = min(fastest, time.perf_counter() - started)
    return 2 * size**3 / fastest / 1e9


def _worker(size: int, repeats: int, start: Any, rates: Any) -> None:
    rates.put(product_gflops(size, repeats, threads=1, start=start))


def all_cores_gflops(size: int, repeats: int = 10) -> float:
    """Summed rate of one single-threaded process per usable core, all multiplying at once."""
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow in each
    count = resources.usable_cores()
    start, rates = context.Barrier(count), context.Queue()
    processes = [
        context.Process(target=_worker, args=(size, repeats, start, rates)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    total = sum(rates.get(timeout=600) for _ in processes)
    for process in processes:
        process.join()
    return total
