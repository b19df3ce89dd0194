"""Sweeps of runs and what compares them: the Hydra sweep callback, launchers, statistics
and the comparison report."""
