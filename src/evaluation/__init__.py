"""Judging generated images: the digit classifier that defines the quality metrics, the
metrics themselves, FLOPs, sample grids and figures."""
