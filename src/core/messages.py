"""The one way the harness speaks to its user besides results: notices and warnings are lines
on stderr through one logger (``upsampler_gan``); errors that end a command are one line from
``sys.exit("error: ...")``, which Python also writes to stderr.

Results (a run's final line, a sweep's summary, a report) are the command's output and go to
stdout. The logger has its own handler and does not propagate: Hydra configures the root logger
of every job (to stdout, with its own prefix), and these lines should look the same everywhere.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("upsampler_gan")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged: a sweep job's log file
    (src/run/job_output.py redirects it), pytest's capture, or the terminal."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass  # StreamHandler.__init__ assigns it; the current sys.stderr is always used


if not LOGGER.handlers:
    _handler = _CurrentStderr()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(_handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def say(line: str) -> None:
    """Tell the user ``line`` (a notice: what the harness is doing or did for them) on stderr."""
    # hydra/job_logging=disabled disables every logger that exists; these lines are the user's
    # (a resume, the Ctrl-C line), not log chatter, so they are not silenced with it.
    LOGGER.disabled = False
    LOGGER.info(line)
