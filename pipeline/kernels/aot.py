"""Ahead-of-time kernels: the numba kernels compiled once into a C extension, loaded without numba.

A process that JIT-compiles, even from numba's warm on-disk cache, first imports numba (0.3 s,
scipy included) and initialises its code generator (0.5 s): on a 2-core machine that is longer
than snooping a million MADs. So the kernels the CLI calls from Python are also compiled ahead
of time with ``numba.pycc``, from the same functions the tests compare with the references, into
one extension module in the user's cache directory. Loading it takes milliseconds and imports
no numba.

:data:`KERNELS` lists every kernel called from Python with the one signature the Python API
calls it with (a test checks that the JIT compiles no other). pycc's wrappers do not check the
types of what they are given (a wrong dtype reads the wrong bytes), so each loaded function is
wrapped in a guard that does, and names the kernel, the argument and the expected type.

The extension's name holds a checksum of the sources it was built from (every kernel
module, ``codecs/``, this file) and of the CPU it is built for (:func:`host_cpu`), so an edited
kernel never runs stale and a shared cache never hands another kind of CPU instructions it
lacks: the next large job builds again.
Building takes the time of a cold JIT compile (about 20 s here) and happens once per version,
in a subprocess that imports numba; ``madpipe`` prints a line while it does. Where it cannot
(no C compiler, a read-only cache), the kernels JIT-compile as before and the reason is kept
in ``build-failed.txt`` beside the cache, so later runs do not try again for that version.

Environment: ``MADPIPE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/madpipe`` or ``~/.cache/madpipe``);
``MADPIPE_JIT=aot`` insists on these kernels (an error if they cannot be built),
``MADPIPE_JIT=1`` uses numba's JIT instead (see :mod:`madpipe.pipeline.kernels.jit`).

Build by hand (for example in an image, before the first large job): ``python -m
madpipe.pipeline.kernels.aot`` builds it unless it exists (``--force``: again) and prints its path.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import time
import zlib

_KERNELS = os.path.dirname(os.path.abspath(__file__))
_PIPELINE = os.path.dirname(_KERNELS)
_CODECS = os.path.join(os.path.dirname(_PIPELINE), "codecs")

#: module -> kernel -> (result, arguments). Types: u1..u8 / i1..i8 unsigned / signed integers of
#: 1..8 bytes, b1 bool; ``[::1]``, ``[:,::1]``, ``[:,:,::1]`` C-contiguous arrays of 1-3
#: dimensions, ``!`` before one the kernel writes (it must be writable; a test has numba check
#: that the others are only read); ``i8x4`` a tuple of four int64; ``void`` nothing.
KERNELS = {
    "ingest.kernels": {
        "scan_pcap": ("i8x4", "u1[::1] i8 b1 i8 b1 i8 !i8[::1] !i8[::1] !i8[::1] !i8[::1] !i8[::1] "
                              "!u1[::1]"),
        "gather_rows": ("void", "u1[::1] i8[::1] i8[::1] i8 !u1[:,::1] !i2[::1]"),
        "gather_mads": ("i8", "u1[:,::1] i2[::1] !u1[:,::1] !i8[::1]"),
        "snoop_smps": ("i8x4", "u1[::1] i8[::1] i8[::1] u1[::1] !i8[::1] !u1[::1] !u2[::1] !u8[::1] "
                               "!u4[::1] !u1[:,::1] !u1[:,::1] !u1[:,::1] !u1[:,::1] !u1[:,::1]"),
    },
    "fabric.kernels": {
        "intern_keys": ("i8x2", "u1[:,::1] i8 !i4[::1] !u1[:,::1] i8 !i4[::1]"),
        "rehash": ("void", "u1[:,::1] i8 !i4[::1]"),
        "pair_answers": ("void", "u8[::1] i4[::1] i8[::1] u8[::1] i4[::1] i8[::1] i4[::1] i8 !i4[::1]"),
        "snoop_ports": ("void", "i4[::1] u4[::1] u1[:,::1] i8 !u2[:,:,::1] !u4[::1] !i1[::1] "
                                "!u2[:,::1]"),
        "learn_routes": ("i8", "i4[::1] u1[:,::1] u1[:,::1] i8 !i8[:,::1]"),
        "queue_smps": ("i8x3", "u1[::1] u2[::1] u8[::1] i4[::1] u4[::1] u1[:,::1] i8[::1] i8[::1] i8[::1] i8 "
                               "!i8[::1] !u8[::1] !i4[::1] !i8[::1] !i8[::1] !u4[::1] !u1[:,::1] i8 "
                               "!i8[::1] !u8[::1] !i4[::1] !i4[::1] i8"),
        "note_applied": ("i8", "i4[::1] u4[::1] i1[::1] !u2[::1] !i8[::1] i8"),
    },
    "fabric.text_kernels": {
        "pkey_lines": ("i8", "u2[:,::1] i8[::1] !u1[:,::1]"),
        "change_texts": ("i8", "u4[::1] u2[::1] u2[:,::1] u2[:,::1] i8 !u1[::1] !i8[::1]"),
        "relative_times": ("i8", "i8[::1] i8 !u1[::1] !i8[::1]"),
        "event_lines": ("i8", "i8[::1] u1[::1] i8[::1] i4[::1] u1[::1] i8[::1] u2[::1] u4[::1] u1[::1] "
                              "i8[::1] u1[::1] !u1[::1]"),
        "event_json_lines": ("i8", "i8[::1] u1[::1] i8[::1] i4[::1] u1[::1] i8[::1] u2[::1] u4[::1] "
                                   "u1[::1] i8[::1] u1[::1] !u1[::1]"),
    },
    "mlx4.snoop_kernels": {
        "smp_snoop_kernel": ("i8", "u1[:,::1] u1[::1] u2[::1] !u2[:,::1] u1[:,:,::1] !u2[::1] !u2[::1] "
                                   "!u1[::1] i8 i8 i8 i8 b1 b1 b1 !u4[::1] !b1[::1] !i8[::1] "
                                   "!u8[:,::1] !i1[::1] !b1[::1] !b1[::1] !b1[::1] !b1[::1]"),
    },
    "mlx4.paravirt_kernels": {
        "rewrite_kernel": ("i8", "u1[:,::1] !u1[:,::1] u1[::1] i4[::1] u4[::1] u1[:,:,::1] i8 i8 i8 "
                                 "u1[::1] u1[:,::1] i8 !i4[::1] !i1[::1]"),
        "rewrite_inplace_kernel": ("i8", "!u1[:,::1] u1[::1] i4[::1] u4[::1] u1[:,:,::1] i8 i8 i8 "
                                         "u1[::1] u1[:,::1] i8 !i4[::1] !i1[::1]"),
    },
    "decode.kernels": {
        "check_crcs": ("void", "u1[::1] i8[::1] i8[::1] u1[::1] u4[::1] u4[::1] !i1[::1] !i1[::1]"),
    },
    "decode.crc_kernels": {
        "icrc_rows": ("void", "u1[:,::1] i8[::1] u4[::1] !u4[::1]"),
        "vcrc_rows": ("void", "u1[:,::1] i8[::1] u4[::1] !u4[::1]"),
    },
    "bench.kernels": {
        "touch_lines": ("i8", "u1[:,::1]"),
    },
}

_DTYPES = {"u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64",
           "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64", "b1": "bool"}
_NUMBA_RESULT = {"void": "void", "i8": "i8", "i8x2": "UniTuple(i8, 2)", "i8x3": "UniTuple(i8, 3)", "i8x4": "UniTuple(i8, 4)"}

_module = None  # the loaded extension, once
_failure: str | None = None  # why it could not be loaded or built, once


def numba_signature(result: str, args: str) -> str:
    """The pycc signature string of a KERNELS entry."""
    return f"{_NUMBA_RESULT[result]}({', '.join(t.lstrip('!') for t in args.split())})"


def _arg_spec(token: str) -> tuple[str, int, bool]:
    """(numpy dtype name, dimensions (0: a scalar), written by the kernel) of one argument type."""
    written = token.startswith("!")
    code, _, dims = token.lstrip("!").partition("[")
    return _DTYPES[code], (dims.count(",") + 1 if dims else 0), written


def export_name(module: str, kernel: str) -> str:
    return f"{module.replace('.', '_')}__{kernel}"


def host_cpu() -> str:
    """The first processor's model and flags from /proc/cpuinfo ("" where there is none).

    The build targets this machine's CPU (as numba's JIT does: 10% faster than the generic
    x86-64 code pycc makes by default), so the key holds what the CPU is: a cache shared with
    another kind of machine builds its own instead of loading instructions that CPU lacks.
    Without /proc/cpuinfo the build stays generic."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = []
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    lines.append(line.strip())
    except OSError:
        return ""
    return "\n".join(lines)


def source_key() -> str:
    """A checksum of everything the compiled kernels depend on, and of the numpy they link against."""
    import numpy

    # Two checksums of different kinds (64 bits) tell an edited source from the built one; a
    # start-up of every command computes this, and hashlib's import (OpenSSL) alone took 6 ms.
    crc, adler = 0, 1

    def update(data: bytes) -> None:
        nonlocal crc, adler
        crc, adler = zlib.crc32(data, crc), zlib.adler32(data, adler)

    update(f"{sys.implementation.cache_tag} numpy {numpy.__version__.rsplit('.', 1)[0]}".encode())
    update(host_cpu().encode())
    for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_ENABLE_AVX"):  # what the build targets
        update(f"{name}={os.environ.get(name)}".encode())
    for compiler in ("numba", "llvmlite"):  # an upgrade (new files) builds again; found, not imported
        spec = importlib.util.find_spec(compiler)
        if spec is not None and spec.origin:
            update(f"{spec.origin} {os.stat(spec.origin).st_mtime_ns}".encode())
    files = [os.path.join(_PIPELINE, *m.split(".")) + ".py" for m in sorted(KERNELS)]
    files += [os.path.join(_KERNELS, "aot.py"), os.path.join(_KERNELS, "jit.py")]
    files += sorted(os.path.join(_CODECS, f) for f in os.listdir(_CODECS) if f.endswith(".py"))
    for path in files:
        with open(path, "rb") as f:
            update(os.path.relpath(path, _PIPELINE).encode() + b"\0" + f.read())
    return f"{crc:08x}{adler:08x}"


def cache_dir() -> str:
    env = os.environ.get("MADPIPE_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # no home directory: never a "~" folder where the command runs
        import tempfile

        base = os.path.join(tempfile.gettempdir(), f"madpipe-cache-{os.getuid()}")
    return os.path.join(base, "madpipe")


def module_name(key: str | None = None) -> str:
    return f"madpipe_kernels_{key or source_key()}"


def module_path(key: str | None = None, directory: str | None = None) -> str:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return os.path.join(directory or cache_dir(), module_name(key) + suffix)


def _failure_file(directory: str) -> str:
    return os.path.join(directory, "build-failed.txt")


class KernelTypeError(TypeError):
    pass


def _guard(module: str, kernel: str, fn, args: str):
    """``fn`` behind a check of what pycc's wrapper takes on trust: each array's dtype, dimensions,
    layout and alignment, and that the arrays the kernel writes are writable; integers are
    integers (not floats that would be truncated) and flags are bools."""
    import operator

    import numpy as np

    specs = [_arg_spec(t) for t in args.split()]
    arrays = [(i, np.dtype(d), nd, w) for i, (d, nd, w) in enumerate(specs) if nd]
    integers = [i for i, (d, nd, _) in enumerate(specs) if not nd and d != "bool"]
    flags = [i for i, (d, nd, _) in enumerate(specs) if not nd and d == "bool"]
    count = len(specs)

    def refuse(i, want, got):
        raise KernelTypeError(f"{module}.{kernel}: argument {i + 1} must be {want} "
                              f"(the ahead-of-time build's type), got {got}")

    def call(*a):
        if len(a) != count:
            raise KernelTypeError(f"{module}.{kernel}: {count} arguments expected, got {len(a)}")
        for i, dtype, nd, written in arrays:
            x = a[i]
            fl = getattr(x, "flags", None)
            if (type(x) is not np.ndarray or x.dtype != dtype or x.ndim != nd or not fl.c_contiguous
                    or not fl.aligned or (written and not fl.writeable)):
                want = f"a C-contiguous{' writable' if written else ''} {dtype}[{nd}-d] array"
                if type(x) is not np.ndarray:
                    got = type(x).__name__
                else:
                    got = f"{x.dtype}[{x.ndim}-d]" + "".join(
                        f", {what}" for what, bad in (("not C-contiguous", not fl.c_contiguous),
                                                      ("not aligned", not fl.aligned),
                                                      ("read-only", written and not fl.writeable)) if bad)
                refuse(i, want, got)
        for i in integers:
            try:
                operator.index(a[i])
            except TypeError:
                refuse(i, "an integer", type(a[i]).__name__)
        for i in flags:
            if not isinstance(a[i], (bool, np.bool_)):
                refuse(i, "a bool", type(a[i]).__name__)
        return fn(*a)

    call.__name__ = kernel
    call.__qualname__ = kernel
    call.__doc__ = f"{module}.{kernel}, compiled ahead of time (arguments: {args})."
    call.aot = fn
    return call


def _import(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load(build: bool = True, quiet: bool = False):
    """The extension for the current sources (built first if missing and ``build``), or None.

    None means the kernels must JIT-compile; :func:`failure` says why. Never raises.
    """
    global _module, _failure
    if _module is not None or _failure is not None:
        return _module
    try:
        key = source_key()
        directory = cache_dir()
        path = module_path(key, directory)
        if not os.path.exists(path):
            if not build:
                _failure = f"not built yet ({path})"
                return None
            failed = _previous_failure(directory, key)
            if failed:
                _failure = failed
                return None
            _build_in_subprocess(directory, key, quiet)
        _module = _import(path, module_name(key))
    except Exception as exc:  # a broken cache or build must not stop the command: JIT instead
        _failure = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
        return None
    return _module


def failure() -> str | None:
    return _failure


def kernel(module: str, name: str):
    """The guarded ahead-of-time ``module.name`` from the loaded extension (after :func:`load`)."""
    result, args = KERNELS[module][name]
    return _guard(module, name, getattr(_module, export_name(module, name)), args)


def _previous_failure(directory: str, key: str) -> str | None:
    try:
        with open(_failure_file(directory)) as f:
            text = f.read()
    except OSError:
        return None
    first, _, rest = text.partition("\n")
    if first.strip() != key:
        return None
    return rest.partition("\n")[0].strip() or "an earlier build failed"


def _build_in_subprocess(directory: str, key: str, quiet: bool) -> None:
    """Build the extension for ``key`` into ``directory`` (once, also with several processes)."""
    import fcntl
    import subprocess

    os.makedirs(directory, exist_ok=True)
    path = module_path(key, directory)
    with open(os.path.join(directory, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel job builds it: wait, then load its build
        if os.path.exists(path):
            return
        failed = _previous_failure(directory, key)  # or failed to, meanwhile
        if failed:
            raise RuntimeError(failed)
        if not quiet:
            print("madpipe: compiling the kernels ahead of time, once for this version "
                  f"(about 20 s; into {directory})", file=sys.stderr, flush=True)
        start = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}  # the build needs numba on
        env.update(MADPIPE_JIT="1", MADPIPE_CACHE_DIR=directory)
        proc = subprocess.run([sys.executable, "-m", "madpipe.pipeline.kernels.aot", "--key", key],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(path):
            why = (f"the build failed ({_last_error(proc.stderr or proc.stdout or '', proc.returncode)}); "
                   f"remove {_failure_file(directory)} to try again")
            with open(_failure_file(directory), "w") as f:
                f.write(f"{key}\n{why}\n{proc.stderr[-4000:]}")
            if not quiet:
                print(f"madpipe: {why}; numba's JIT compiles the kernels instead", file=sys.stderr, flush=True)
            raise RuntimeError(why)
        if not quiet:
            print(f"madpipe: kernels compiled in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def _last_error(text: str, returncode: int) -> str:
    """The exception line of a traceback (or the last line): what went wrong, in one line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        name = line.partition(":")[0]
        if name.endswith(("Error", "Exception")) and " " not in name:
            return line
    return lines[-1] if lines else f"exit status {returncode}"


def _release_the_gil() -> None:
    """Make pycc's wrappers release the GIL around each kernel, as numba's ``nogil=True`` does.

    CC.export takes no compiler flags; pycc builds its wrappers with ``compiler.Flags()``, so
    (in this build process only) that name is given flags with ``release_gil`` set. Without it a
    reader thread could not walk the next chunk while the main thread snoops this one.
    """
    import numba.pycc.compiler as pycc_compiler
    from numba.core.compiler import Flags

    class GilReleasingFlags(Flags):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    pycc_compiler.Flags = GilReleasingFlags


def _with_the_host_features() -> None:
    """Give the build the instruction set features this CPU reports, as numba's JIT does.

    pycc's code generator names the host's CPU model but leaves its features to LLVM's defaults
    for that model, which include instructions a VM may hide (AVX-512 on a guest that masks it):
    such a build would load and then die on an illegal instruction. (In this build process only.)
    """
    from numba.core.codegen import AOTCPUCodegen

    AOTCPUCodegen._customize_tm_features = lambda self: self._get_host_cpu_features()


def build(directory: str, key: str) -> str:
    """Compile every KERNELS entry into ``directory`` (run in a process with numba enabled)."""
    import importlib
    import tempfile
    import warnings

    from numba.core.errors import NumbaPendingDeprecationWarning
    from numba.pycc import CC

    warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
    _release_the_gil()
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        cc = CC(module_name(key))
        cc.output_dir = tmp
        cc.verbose = False
        if host_cpu():
            cc.target_cpu = "host"  # see host_cpu: the key names this CPU
            _with_the_host_features()
        for module, kernels in KERNELS.items():
            mod = importlib.import_module(f"madpipe.pipeline.{module}")
            for name, (result, args) in kernels.items():
                fn = getattr(mod, name)
                cc.export(export_name(module, name), numba_signature(result, args))(getattr(fn, "py_func", fn))
        cc.compile()
        built = [f for f in os.listdir(tmp) if f.startswith(module_name(key)) and f.endswith(".so")]
        if not built:
            raise RuntimeError(f"pycc wrote no module into {tmp}")
        final = module_path(key, directory)
        os.replace(os.path.join(tmp, built[0]), final)  # atomic: a reader sees all of it or nothing
    _prune(directory, keep=KEEP_BUILDS)
    return final


#: Builds kept in the cache (newest first): other installed versions may still load theirs.
KEEP_BUILDS = 8


def _prune(directory: str, keep: int) -> None:
    """Remove all but the ``keep`` newest builds (each edit of a kernel makes one)."""
    builds = [os.path.join(directory, f) for f in os.listdir(directory)
              if f.startswith("madpipe_kernels_") and f.endswith(".so")]
    builds.sort(key=os.path.getmtime, reverse=True)
    for old in builds[keep:]:
        try:
            os.remove(old)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    """``python -m madpipe.pipeline.kernels.aot [--force]``: build the extension unless it exists; print its path."""
    argv = sys.argv[1:] if argv is None else argv
    if "--key" in argv:  # the build subprocess of _build_in_subprocess (numba on)
        key = argv[argv.index("--key") + 1]
        if key != source_key():  # another madpipe on this Python's path: never store it as ours
            raise SystemExit(f"RuntimeError: this process imports {_PIPELINE}, whose sources are not "
                             f"those of key {key}")
        print(build(cache_dir(), key))
        return 0
    path = module_path()
    if "--force" in argv and os.path.exists(path):
        os.remove(path)
    try:
        os.remove(_failure_file(cache_dir()))  # asked by hand: try again whatever failed before
    except OSError:
        pass
    if load() is None:
        print(f"madpipe: {failure()}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
