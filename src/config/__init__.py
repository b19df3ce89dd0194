"""The structured-config schemas every config group is validated against, and how much of
the machine a sweep uses."""
