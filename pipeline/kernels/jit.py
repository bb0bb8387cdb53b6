"""The one switch for numba: ``from madpipe.pipeline.kernels.jit import njit``.

Importing a kernel module compiles nothing and imports no numba: ``njit`` returns a
:class:`Kernel`, the plain function in a light wrapper. The first call of any kernel decides,
once per process, how every kernel runs (:func:`backend`) and binds them all at once
(:func:`resolve`):

- ``"aot"``: compiled ahead of time into a C extension (:mod:`madpipe.pipeline.kernels.aot`) that
  loads in milliseconds without importing numba. The default for large jobs; built once per
  version of the kernels (20-25 s) by ``madpipe build-kernels`` or by the first large job
  (which says so on stderr), then loaded.
- ``"numba"``: ``numba.njit`` with ``cache=True`` (compiled kernels written to numba's
  ``__pycache__``), each kernel compiled on its first call. Used when the ahead-of-time build is
  impossible (no C compiler), for kernels it does not list, and when asked for
  (``MADPIPE_JIT=1``). Costs ~0.8 s per process to import numba and load the cached kernels,
  ~4 s cold.
- ``"python"``: the plain Python function (the same code the test suite also runs with
  ``NUMBA_DISABLE_JIT=1``). Small jobs run this way unless the ahead-of-time kernels are already
  built: a few hundred frames are done before numba could load, and long before a build ends.
  The CLI calls :func:`plan_for_inputs` with its input files before any kernel runs; inputs
  under ``SMALL_INPUT_BYTES`` never build or JIT-compile. From Python, the library notes each
  capture it opens (:func:`note_inputs`, from ``Ingest``): a small first capture runs as Python
  *provisionally*, and a large capture opened later in the same process switches every kernel
  to the compiled way (a notebook that looks at a small file first is not stuck with Python).

Binding replaces every :class:`Kernel` in the globals of madpipe's modules (and of any module
that defines kernels with ``njit``) by what it resolved to: numba finds a kernel's helpers in its
module's globals when it compiles, so they must be dispatchers by then, and Python code that
reads ``module.kernel`` then calls it directly. A :class:`Kernel` held elsewhere
(``from x import kernel`` before the first call) forwards each call, one call deep. Kernel
modules imported after the decision get the bound functions straight from ``njit``. Numba code
of your own that calls a madpipe kernel: call :func:`resolve` before it compiles.

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

import functools
import importlib
import os
import sys
import threading

#: True unless the environment asks for no on-disk cache (read once, at import).
CACHE = os.environ.get("MADPIPE_NO_CACHE", "") != "1"

#: Inputs smaller than this (in bytes, all files together) run the kernels as plain Python.
SMALL_INPUT_BYTES = 256 * 1024

_MODE = os.environ.get("MADPIPE_JIT", "")
_enabled = _MODE != "0"
_decided = _MODE in ("0", "1", "aot")
_backend: str | None = None  # "aot", "numba" or "python" once decided

_lock = threading.RLock()  # two threads' first calls: one decides and binds, the other waits
_waiting: list[Kernel] = []  # kernels made before the decision, bound by resolve()
_bound = False  # resolve() has run: njit binds at once
# Plain Python chosen only because the library's first capture was small (note_inputs): kernels
# stay Kernel wrappers (module globals are not rebound), so a later large capture can rebind them.
_provisional = False
_kernels: list[Kernel] = []  # every kernel made while provisional, for that rebinding


def plan_for_inputs(paths, small: int = SMALL_INPUT_BYTES) -> bool:
    """Decide, before any kernel runs, whether this process compiles kernels.

    Inputs under ``small`` bytes in all run as plain Python. Returns the decision. Has no effect
    once the backend is decided (the first kernel call, or :func:`backend`).
    """
    try:
        total = sum(os.path.getsize(p) for p in paths)
    except OSError:
        total = 0  # unreadable: the command will say so; do not compile for it
    return plan(large=total >= small)


def plan(large: bool) -> bool:
    """Decide, before any kernel runs, whether this is a large job (kernels compiled, built ahead
    of time first if need be) or a small one (plain Python unless the build exists). Returns the
    decision; no effect once decided."""
    global _enabled, _decided
    if not _decided:
        _enabled = large
        _decided = True
    return _enabled


def note_inputs(paths, small: int = SMALL_INPUT_BYTES) -> None:
    """The library is about to read ``paths``: plan for them if nobody has (Python code that did
    not call :func:`plan_for_inputs`), or, when the plan so far is plain Python for a small
    capture, switch to compiled kernels for a large one. Forced ways (``MADPIPE_JIT``,
    ``NUMBA_DISABLE_JIT``) and the CLI's plan are kept."""
    global _enabled, _decided, _provisional
    if _MODE or os.environ.get("NUMBA_DISABLE_JIT", "") == "1" or (_decided and not _provisional):
        return
    try:
        total = sum(os.path.getsize(p) for p in paths)
    except OSError:
        return  # the reader will say what is wrong
    with _lock:
        if not _decided:
            _enabled = total >= small
            _decided = True
            _provisional = not _enabled
        elif _provisional and total >= small:
            _upgrade()


def _upgrade() -> None:
    """Leave provisional plain Python: decide again for a large job and rebind every kernel."""
    global _enabled, _provisional, _backend, _bound
    _enabled, _provisional = True, False
    if _backend is None:  # no kernel has run yet: the first call decides as for any large job
        return
    _backend, _bound = None, False
    _waiting.extend(_kernels)
    _kernels.clear()
    resolve()


def enabled() -> bool:
    """True when kernels are to be compiled (ahead of time or by numba), False when they run as
    Python: ``MADPIPE_JIT=0``, ``NUMBA_DISABLE_JIT=1``, or inputs planned as small."""
    return _enabled and os.environ.get("NUMBA_DISABLE_JIT", "") != "1"


def backend() -> str:
    """How kernels run in this process: "aot", "numba" or "python" (decided on the first call).

    Deciding "aot" loads the ahead-of-time extension, building it first for a large job."""
    global _backend
    with _lock:
        if _backend is None:
            _backend = _decide()
    return _backend


def _decide() -> str:
    if _MODE == "0" or os.environ.get("NUMBA_DISABLE_JIT", "") == "1":
        return "python"
    from madpipe.pipeline.kernels import aot

    global _provisional
    if not _enabled:
        # A small job: the ahead-of-time kernels if they are built (loading them takes a
        # millisecond), never a build or numba for it.
        if aot.load(build=False) is not None:
            _provisional = False  # the best way there is: nothing to switch to later
            return "aot"
        return "python"
    if _MODE == "1":
        return "numba"
    if aot.load() is not None:
        return "aot"
    if _MODE == "aot":
        raise SystemExit(f"madpipe: MADPIPE_JIT=aot, but the ahead-of-time kernels are "
                         f"unavailable: {aot.failure()}")
    return "numba"


def resolve() -> str:
    """Decide how kernels run and bind every kernel made so far (what the first call does).

    Returns :func:`backend`. The CLI calls it before a progress line starts, so that a first
    build's message stands on its own line; anyone may call it to pay the decision up front."""
    global _bound
    with _lock:
        if not _bound:
            how = backend()
            while _waiting:  # again if binding made kernels (a kernel module imported meanwhile)
                batch = list(_waiting)
                _waiting.clear()
                bound = {id(k): _bind(k.py_func, k.numba_args, k.numba_options, how) for k in batch}
                # Globals first, then the kernels' own targets: a thread that sees a target bound
                # finds every helper bound too when numba compiles what it calls.
                if _provisional:
                    _kernels.extend(batch)  # stay wrappers, to be rebound by a large job
                else:
                    _rebind_globals(bound, {k.__module__ for k in batch})
                for k in batch:
                    k.target = bound[id(k)]
            _bound = True
    return backend()


def _bind(fn, args, kwargs, how: str):
    """What ``fn`` runs as in backend ``how``."""
    if how == "python":
        return fn
    if how == "aot":
        from madpipe.pipeline.kernels import aot

        module = fn.__module__.removeprefix("madpipe.pipeline.")
        if fn.__name__ in aot.KERNELS.get(module, ()):
            compiled = aot.kernel(module, fn.__name__)
            compiled.py_func = fn  # as on numba's dispatchers
            return compiled
        if module in aot.KERNELS or module in aot.HELPER_MODULES or module.startswith("madpipe.codecs."):
            # A helper (or a codecs rule a kernel module wraps, njit(wire.mad_start)): compiled
            # into the kernels that call it, plain Python when Python calls it.
            return fn
    import numba

    kwargs = dict(kwargs)
    kwargs.setdefault("cache", CACHE)
    kwargs.setdefault("nogil", True)  # kernels touch no Python object: let a reader thread run
    return numba.njit(*args, **kwargs)(fn)


def _rebind_globals(bound: dict, kernel_modules: set) -> None:
    """Replace each waiting Kernel in madpipe's modules' globals (and the kernels' modules') by
    what it is bound to."""
    for name, module in list(sys.modules.items()):
        if not (name.startswith("madpipe.") or name in kernel_modules):
            continue
        namespace = getattr(module, "__dict__", None) or {}
        items = list(namespace.items())  # one step under the GIL: a module may be importing
        found = [(attr, value) for attr, value in items if id(value) in bound and isinstance(value, Kernel)]
        for attr, value in found:
            namespace[attr] = bound[id(value)]


class Kernel:
    """A kernel before the process has decided how kernels run: the plain function, wrapped.

    Calling it binds every kernel (:func:`resolve`), then forwards the call; later calls forward
    straight to what it is bound to. ``py_func`` is the plain function (as on a numba
    dispatcher); other public attributes (``signatures``, ``compile``...) are those of what it is
    bound to, and asking for one binds. Private and special names never bind (tools probe them).
    """

    def __init__(self, fn, args: tuple, options: dict):
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self.numba_args = args
        self.numba_options = options
        self.target = None  # what a call runs, once bound

    @property
    def __call__(self):
        # A property: ``kernel(...)`` gets the bound function and calls it with the arguments as
        # given, one Python frame (this getter) and no repacking of the arguments.
        return self.target or self.bind()

    def bind(self):
        """What this kernel runs as, deciding how kernels run if nobody has yet."""
        resolve()
        if self.target is None:  # made before an importlib.reload of this module
            self.target = _bind(self.py_func, self.numba_args, self.numba_options, backend())
        return self.target

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.bind(), name)

    def __reduce__(self):  # pickled by name, as a function is: the module's kernel when loaded
        return _kernel_named, (self.__module__, self.__qualname__)

    def __repr__(self):
        state = "unbound" if self.target is None else f"bound: {self.target!r}"
        return f"<madpipe kernel {self.__module__}.{self.__qualname__} ({state})>"


def _kernel_named(module: str, qualname: str):
    return getattr(importlib.import_module(module), qualname)


def _decorate(fn, args: tuple, kwargs: dict):
    with _lock:
        if _bound and not _provisional:
            return _bind(fn, args, kwargs, backend())
        kernel = Kernel(fn, args, kwargs)
        if _bound:  # provisional plain Python: bound now, rebound by a large job
            kernel.target = fn
            _kernels.append(kernel)
            return kernel
        _waiting.append(kernel)
        return kernel


def njit(*args, **kwargs):
    """Decorate a kernel: compiled ahead of time, by numba with ``cache=CACHE``, or left as Python
    (decided on the first call of any kernel)."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return _decorate(args[0], (), {})
    return lambda fn: _decorate(fn, args, kwargs)


__all__ = ["CACHE", "SMALL_INPUT_BYTES", "Kernel", "backend", "enabled", "njit", "note_inputs", "plan",
           "plan_for_inputs", "resolve"]
