"""The exceptions slimpipe raises on purpose, each a message for people (Ray-free)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending key."""


class RunConflict(RuntimeError):
    """The run directory holds a run with another config or input."""


class ConservationError(RuntimeError):
    """Records went missing or were counted twice: the run's output cannot be trusted."""


class InputUnreadable(RuntimeError):
    """An input file that storage would not hand over (open or read failed, also after the configured
    retries): the message names the file and the last error. Not an OSError on purpose, so code that
    treats an OSError from a decompressor as damaged data cannot mistake it for that."""


class InputChanged(RuntimeError):
    """An input file that changed (size, modification time, or shorter than its planned range) between
    planning and reading: its records would be silently lost or doubled. The message names the file
    and what changed; rerunning re-plans it."""


class RunLocked(RunConflict):
    """Another slimpipe process holds the run directory's lock (RUN/.lock): the message names it
    (pid, host, since when). Nothing in the run directory was touched."""
