"""A multirun's grid: the command line's overrides split into jobs exactly as Hydra's basic
sweeper splits them, for the sweep's checks (src/study/sweep.py) and for make tune's cells
(src/study/tuning.py)."""

from __future__ import annotations


def split(arguments: list[str]) -> list[list[str]]:
    """Each job's overrides, in launch order: the cartesian product of the comma lists."""
    # The sweeper's own splitting (a private module of hydra-core, pinned to 1.3.2), so the
    # jobs counted and checked are exactly the ones it launches.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
