"""Hydra finds sweepers only in the ``hydra_plugins`` namespace; the search lives in
``src.study.tuning`` with the rest of the study layer."""

from src.study.tuning import TuneSweeper as _Search


class TuneSweeper(_Search):
    """``hydra/sweeper=tune`` (conf/hydra/sweeper/tune.yaml): see src/study/tuning.py."""
