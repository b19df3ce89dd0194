"""Foundation every layer may use: notices and errors on stderr, files the harness keeps,
and signals handled like Ctrl-C."""
