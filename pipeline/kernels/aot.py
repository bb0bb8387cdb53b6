"""Ahead-of-time kernels: the numba kernels compiled once into a C extension, loaded without numba.

Even from numba's warm cache, a JIT process imports numba (0.3 s) and sets up its code generator
(0.5 s): longer, on 2 cores, than snooping a million MADs. Hence this build. Its contract:

- What: one extension module ``madpipe_kernels_<key>``, every kernel :data:`KERNELS` lists with
  the one signature listed, compiled by ``numba.pycc`` from the functions the tests compare with
  the references, for this CPU's model and the features it reports (generic x86-64 without
  ``/proc/cpuinfo``). Loading it takes a millisecond and imports no numba.
- Where: :func:`cache_dir` (``$MADPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/madpipe`` or
  ``~/.cache/madpipe``; no home: a private folder in the temporary one); the newest
  :data:`.aot_build.KEEP_BUILDS` builds stay (other installed versions load theirs).
- When: never at import. ``madpipe build-kernels`` (or ``python -m madpipe.pipeline.kernels.aot``)
  builds it, else the first kernel call of a large job (:mod:`.jit` decides), with a line on
  stderr before and after (20-25 s); small jobs only load an existing build. Always in a
  subprocess (numba is imported there, never in the process that asked), under a file lock
  (parallel jobs build once), renamed into place when whole (a process loads all or nothing).
- Key (:func:`source_key`): every kernel module, ``codecs/``, this file, ``aot_build.py`` and ``jit.py``, the
  numpy, Python, numba and llvmlite installed, the CPU and numba's CPU overrides: an edited
  kernel never runs stale, another kind of CPU never loads it.
- Guarantees: each kernel computes what numba's JIT computes for its signature (tests: every
  command prints the same bytes in all three backends; the JIT compiles no signature the table
  lacks), behind :func:`.guard.guard`, which refuses any other argument type in one line naming
  kernel and argument; the kernels release the GIL, as with ``nogil=True``.
- Without a C compiler (or Python's headers, or a writable cache) the build fails: the reason is
  printed once on stderr and kept in ``build-failed.txt`` there, no process retries until the
  next version or ``madpipe build-kernels``, and the kernels run under numba's JIT
  (``MADPIPE_JIT=aot`` makes that an error).

The compile itself, in the build process, is :mod:`.aot_build`'s (with the two private settings of
numba it needs, and why).
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

#: module -> kernel -> (result, arguments). Argument types as in :mod:`.guard` (``!``: written; a
#: test has numba check that the others are only read); ``i8x4`` a tuple of four int64.
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
    "fabric.record_kernels": {
        "event_records": ("void", "i8[::1] i8[::1] i8[::1] i4[::1] u2[::1] u4[::1] b1[::1] i8[:,::1] i8[:,::1] "
                                  "!i8[:,::1]"),
    },
    "fabric.text_kernels": {
        "pkey_lines": ("i8", "u2[:,::1] i8[::1] !u1[:,::1]"),
        "relative_times": ("i8", "i8[::1] i8 !u1[::1] !i8[::1]"),
        "event_lines": ("i8", "i8[:,::1] u1[::1] i8[::1] u1[::1] i8[::1] !u1[::1]"),
    },
    "fabric.json_kernels": {
        "event_json_lines": ("i8", "i8[:,::1] u1[::1] i8[::1] u1[::1] i8[::1] !u1[::1]"),
    },
    "mlx4.snoop_kernels": {
        "smp_snoop_kernel": ("i8", "u1[:,::1] u1[::1] u2[::1] !u2[:,::1] u1[:,:,::1] !u2[::1] !u2[::1] "
                                   "!u1[::1] i8 i8 i8 i8 i8 i8 b1 b1 b1 !u4[::1] !b1[::1] !i8[::1] "
                                   "!u8[:,::1] !i1[::1] !b1[::1] !b1[::1] !b1[::1] !b1[::1]"),
    },
    "mlx4.paravirt_kernels": {
        "rewrite_kernel": ("i8", "u1[:,::1] !u1[:,::1] u1[::1] i4[::1] u4[::1] u1[:,:,::1] i8 i8 i8 i8 "
                                 "u1[::1] u1[:,::1] i8 u1[::1] i8 u2[:,:,::1] u1[:,:,::1] !i4[::1] !i1[::1]"),
        "rewrite_inplace_kernel": ("i8", "!u1[:,::1] u1[::1] i4[::1] u4[::1] u1[:,:,::1] i8 i8 i8 i8 "
                                         "u1[::1] u1[:,::1] i8 u1[::1] i8 u2[:,:,::1] u1[:,:,::1] !i4[::1] "
                                         "!i1[::1]"),
    },
    "decode.float_kernels": {
        "seconds_reprs": ("i8", "i8[::1] f8[::1] !u1[::1] !i8[::1] !u1[::1]"),
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
        "touch_snooped": ("i8", "u1[:,::1]"),
    },
}

#: Modules of helpers (``@njit``, inlined or not) the KERNELS' modules import: in the build's key too.
HELPER_MODULES = ("fabric.word_text", "kernels.unaligned", "mlx4.eth_kernels", "mlx4.paravirt_rows")

_module = None  # the loaded extension, once
_failure: str | None = None  # why it could not be loaded or built, once


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
    files = [os.path.join(_PIPELINE, *m.split(".")) + ".py" for m in sorted(KERNELS) + sorted(HELPER_MODULES)]
    files += [os.path.join(_KERNELS, f) for f in ("aot.py", "aot_build.py", "jit.py")]
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


def import_file(path: str, name: str):
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
                return None  # not built yet: not a failure to remember (a large job may build)
            failed = _previous_failure(directory, key)
            if failed:
                _failure = failed
                return None
            try:
                _build_in_subprocess(directory, key, quiet)
            except BuildFailed as exc:
                if not quiet:
                    print(f"madpipe: {exc}; numba's JIT compiles the kernels instead", file=sys.stderr, flush=True)
                raise
        _module = import_file(path, module_name(key))
    except Exception as exc:  # a broken cache or build must not stop the command: JIT instead
        _failure = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
        return None
    return _module


def failure() -> str | None:
    return _failure


def kernel(module: str, name: str):
    """The guarded ahead-of-time ``module.name`` from the loaded extension (after :func:`load`)."""
    from madpipe.pipeline.kernels.guard import guard

    result, args = KERNELS[module][name]
    return guard(module, name, getattr(_module, export_name(module, name)), args)


def build_by_hand(force: bool = False) -> str:
    """Build the extension unless it exists (``force``: again, replacing it whole); its path.

    What ``madpipe build-kernels`` runs: whatever failed before is tried again. Raises
    RuntimeError with the reason when it cannot be built."""
    key, directory = source_key(), cache_dir()
    try:
        os.remove(_failure_file(directory))
    except OSError:
        pass
    _build_in_subprocess(directory, key, quiet=False, again=force)
    return module_path(key, directory)


class BuildFailed(RuntimeError):
    """The build subprocess failed (the reason is in the message and in build-failed.txt)."""


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


def _build_in_subprocess(directory: str, key: str, quiet: bool, again: bool = False) -> None:
    """Build the extension for ``key`` into ``directory`` (once, also with several processes;
    ``again``: even if it exists)."""
    import fcntl
    import subprocess

    os.makedirs(directory, exist_ok=True)
    path = module_path(key, directory)
    with open(os.path.join(directory, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel job builds it: wait, then load its build
        if os.path.exists(path) and not again:
            return
        failed = _previous_failure(directory, key)  # or failed to, meanwhile
        if failed:
            raise RuntimeError(failed)
        if not quiet:
            print("madpipe: compiling the kernels ahead of time, once for this version "
                  f"(20-25 s; into {directory})", file=sys.stderr, flush=True)
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
            raise BuildFailed(why)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m madpipe.pipeline.kernels.aot [--force]``: ``madpipe build-kernels``."""
    argv = sys.argv[1:] if argv is None else argv
    if "--key" in argv:  # the build subprocess of _build_in_subprocess (numba on)
        key = argv[argv.index("--key") + 1]
        if key != source_key():  # another madpipe on this Python's path: never store it as ours
            raise SystemExit(f"RuntimeError: this process imports {_PIPELINE}, whose sources are not "
                             f"those of key {key}")
        from madpipe.pipeline.kernels.aot_build import build

        print(build(cache_dir(), key))
        return 0
    try:
        print(build_by_hand(force="--force" in argv))
    except RuntimeError as exc:
        print(f"madpipe: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
