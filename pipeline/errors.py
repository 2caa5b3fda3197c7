"""The exceptions slimpipe raises on purpose, each a message for people (Ray-free)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending key."""


class RunConflict(RuntimeError):
    """The run directory holds a run with another config or input."""


class ConservationError(RuntimeError):
    """Records went missing or were counted twice: the run's output cannot be trusted."""
