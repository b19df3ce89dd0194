"""``python -m src.report [SWEEP_ID]`` (``make report``): the comparison report of a sweep, built
by :mod:`src.study.report`."""

from src.study.report import main

if __name__ == "__main__":
    main()
