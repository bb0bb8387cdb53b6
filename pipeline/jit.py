"""The one switch for numba: ``from madpipe.pipeline.jit import njit``.

``njit`` is ``numba.njit`` with ``cache=True``: compiled kernels are written to disk (numba's
``__pycache__`` next to the module, or its per-user cache directory when that is read-only) and a
later process loads them instead of compiling again, so a command-line run over a small capture
does not pay seconds of JIT compilation.

Environment:

- ``MADPIPE_NO_CACHE=1``: compile in memory only (no cache files read or written).
- ``NUMBA_DISABLE_JIT=1``: numba's own switch; ``njit`` then returns the plain Python function,
  which is how the test suite runs the kernels a second time as ordinary Python.

Both forms work: ``@njit`` and ``@njit(...)`` with any numba keyword (an explicit ``cache=``
wins over the switch).
"""
from __future__ import annotations

import os

import numba

#: True unless the environment asks for no on-disk cache (read once, at import).
CACHE = os.environ.get("MADPIPE_NO_CACHE", "") != "1"


def njit(*args, **kwargs):
    """``numba.njit`` with ``cache=CACHE`` unless the caller sets ``cache`` explicitly."""
    kwargs.setdefault("cache", CACHE)
    return numba.njit(*args, **kwargs)


__all__ = ["CACHE", "njit"]
