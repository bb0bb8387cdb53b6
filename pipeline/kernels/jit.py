"""The one switch for numba: ``from madpipe.pipeline.kernels.jit import njit``.

A function decorated with ``njit`` runs one of three ways, decided once per process when the
first kernel module is imported (:func:`backend`):

- ``"aot"``: compiled ahead of time into a C extension (:mod:`madpipe.pipeline.kernels.aot`) that loads
  in milliseconds without importing numba. The default for large jobs; built once per version
  of the kernels on the first large job (about 20 s), then loaded.
- ``"numba"``: ``numba.njit`` with ``cache=True`` (compiled kernels written to numba's
  ``__pycache__``). Used when the ahead-of-time build is impossible (no C compiler), for kernels
  it does not list, and when asked for (``MADPIPE_JIT=1``). Costs ~0.8 s per process to import
  numba and load the cached kernels, ~4 s cold.
- ``"python"``: the plain Python function (the same code the test suite also runs with
  ``NUMBA_DISABLE_JIT=1``). Small jobs run this way unless the ahead-of-time kernels are already
  built: a few hundred frames are done before numba could load, and long before a build ends.
  The CLI calls :func:`plan_for_inputs` with its input files before it imports any kernel
  module; inputs under ``SMALL_INPUT_BYTES`` never build or JIT-compile.

In the ahead-of-time backend a kernel module's entry points (those ``aot.KERNELS`` lists) are
the compiled ones, behind a type check, and its helpers (called only from inside kernels, which
have them compiled in) stay plain Python.

Environment:

- ``MADPIPE_JIT=aot`` / ``MADPIPE_JIT=1`` / ``MADPIPE_JIT=0``: ahead of time (building it if
  needed; an error if that fails) / numba's JIT / plain Python, whatever the input size.
- ``MADPIPE_NO_CACHE=1``: numba compiles in memory only (no cache files read or written).
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

_MODE = os.environ.get("MADPIPE_JIT", "")
_enabled = _MODE != "0"
_decided = _MODE in ("0", "1", "aot")
_backend: str | None = None  # "aot", "numba" or "python" once the first kernel is decorated


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
    """True when kernels are compiled (ahead of time or by numba), False when they run as Python."""
    return _enabled


def backend() -> str:
    """How kernels run in this process: "aot", "numba" or "python" (decided on the first call)."""
    global _backend
    if _backend is None:
        if _MODE == "0" or os.environ.get("NUMBA_DISABLE_JIT", "") == "1":
            _backend = "python"
        elif not _enabled:
            # A small job: the ahead-of-time kernels if they are built (loading them takes a
            # millisecond), never a build or numba for it.
            from madpipe.pipeline.kernels import aot

            _backend = "aot" if aot.load(build=False) is not None else "python"
        elif _MODE == "1":
            _backend = "numba"
        else:
            from madpipe.pipeline.kernels import aot

            if aot.load() is not None:
                _backend = "aot"
            elif _MODE == "aot":
                raise SystemExit(f"madpipe: MADPIPE_JIT=aot, but the ahead-of-time kernels are "
                                 f"unavailable: {aot.failure()}")
            else:
                _backend = "numba"
    return _backend


def _compile(fn, args, kwargs):
    how = backend()
    if how == "python":
        return fn
    if how == "aot":
        from madpipe.pipeline.kernels import aot

        module = fn.__module__.removeprefix("madpipe.pipeline.")
        if module.startswith("madpipe.codecs."):
            return fn  # a codecs rule a kernel module wraps (njit(wire.mad_start)): a helper too
        if module in aot.KERNELS:
            return aot.kernel(module, fn.__name__) if fn.__name__ in aot.KERNELS[module] else fn
    import numba

    kwargs.setdefault("cache", CACHE)
    kwargs.setdefault("nogil", True)  # kernels touch no Python object: let a reader thread run
    return numba.njit(*args, **kwargs)(fn)


def njit(*args, **kwargs):
    """Decorate a kernel: compiled ahead of time, by numba with ``cache=CACHE``, or left as Python."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return _compile(args[0], (), {})
    return lambda fn: _compile(fn, args, kwargs)


__all__ = ["CACHE", "SMALL_INPUT_BYTES", "backend", "enabled", "njit", "plan_for_inputs"]
