"""slimpipe: a SlimPajama-style corpus pipeline on Ray."""

__version__ = "0.1.0"
