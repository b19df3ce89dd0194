"""One training run, as one job of a run or a sweep: its stages, Keras callbacks, checkpoints,
what it records, the inputs all runs share, and what a job knows of its sweep."""
