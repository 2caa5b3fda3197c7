"""slimpipe: a SlimPajama-style corpus pipeline on Ray."""

import os
import sys

__version__ = "0.1.0"


def _numba_cache_dir() -> None:
    """Point numba's on-disk cache (the `cache=True` kernels in slimpipe.stages) at a per-user
    folder, $XDG_CACHE_HOME/slimpipe/numba (default ~/.cache/slimpipe/numba), unless the user
    set NUMBA_CACHE_DIR. Left alone, numba writes `__pycache__/*.nbi|*.nbc` beside the sources:
    inside site-packages once installed, where they survive `pip uninstall` and later shadow an
    editable install of the same package.

    This package's __init__ runs before any of its modules in every process (the driver, the
    CLI, Ray workers unpickling a stage), so before those modules import numba. If numba was
    imported first by someone else, its config has already read the environment: set it there
    too (numba picks the cache folder when a `cache=True` function is decorated).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "slimpipe", "numba")
    os.environ["NUMBA_CACHE_DIR"] = path  # also inherited by child processes
    numba = sys.modules.get("numba")
    if numba is not None and not numba.config.CACHE_DIR:
        numba.config.CACHE_DIR = path


_numba_cache_dir()
