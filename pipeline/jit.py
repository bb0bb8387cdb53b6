"""The one switch for numba: ``from madpipe.pipeline.jit import njit``.

``njit`` is ``numba.njit`` with ``cache=True``: compiled kernels are written to disk (numba's
``__pycache__`` next to the module, or its per-user cache directory when that is read-only) and a
later process loads them instead of compiling again.

Small jobs skip numba altogether. Loading numba and the first cached kernel costs about 0.6 s
on this class of machine, far more than a few hundred frames take as plain Python; so the CLI
calls :func:`plan_for_inputs` with its input files before it imports any kernel module, and for
inputs under ``SMALL_INPUT_BYTES`` the kernels stay the plain Python functions they are written
as (the same code the test suite runs with ``NUMBA_DISABLE_JIT=1``).

Environment:

- ``MADPIPE_JIT=1`` / ``MADPIPE_JIT=0``: always / never compile, whatever the input size.
- ``MADPIPE_NO_CACHE=1``: compile in memory only (no cache files read or written).
- ``NUMBA_DISABLE_JIT=1``: numba's own switch; kernels run as plain Python.

Both forms work: ``@njit`` and ``@njit(...)`` with any numba keyword (an explicit ``cache=``
wins over the switch).
"""
from __future__ import annotations

import os

#: True unless the environment asks for no on-disk cache (read once, at import).
CACHE = os.environ.get("MADPIPE_NO_CACHE", "") != "1"

#: Inputs smaller than this (in bytes, all files together) run the kernels as plain Python.
SMALL_INPUT_BYTES = 256 * 1024

_enabled = os.environ.get("MADPIPE_JIT", "") != "0"
_decided = os.environ.get("MADPIPE_JIT", "") in ("0", "1")


def plan_for_inputs(paths, small: int = SMALL_INPUT_BYTES) -> bool:
    """Decide, before any kernel module is imported, whether this process compiles kernels.

    Inputs under ``small`` bytes in all run as plain Python. Returns the decision. Has no effect
    on kernel modules imported earlier (they keep theirs).
    """
    global _enabled, _decided
    if not _decided:
        try:
            total = sum(os.path.getsize(p) for p in paths)
        except OSError:
            total = 0  # unreadable: the command will say so; do not compile for it
        _enabled = total >= small
        _decided = True
    return _enabled


def enabled() -> bool:
    return _enabled


def njit(*args, **kwargs):
    """``numba.njit`` with ``cache=CACHE`` unless the caller sets ``cache`` explicitly."""
    if not _enabled:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn
    import numba

    kwargs.setdefault("cache", CACHE)
    return numba.njit(*args, **kwargs)


__all__ = ["CACHE", "SMALL_INPUT_BYTES", "enabled", "njit", "plan_for_inputs"]
