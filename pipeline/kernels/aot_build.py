"""The ahead-of-time build: pycc compiles every kernel :data:`.aot.KERNELS` lists into one extension
module in the cache, in the build process :mod:`.aot` starts (numba on; see there for the contract).

numba's API: pycc, numba's only ahead-of-time compiler, is pending deprecation since 0.57 (its
warning goes to the build's stderr, kept in ``build-failed.txt`` if the build fails); a numba
without it fails the build (ImportError), and the JIT path applies. Public ``CC`` cannot ask for
two things, so in the build process only, around ``CC.compile`` only,
:func:`pycc_private_settings` patches two private names of numba 0.68, then restores them:

1. ``numba.pycc.compiler.Flags``: ``CC.export`` takes no compiler flags and pycc makes its
   wrappers with ``Flags()``; a subclass setting ``release_gil`` stands in, so a reader thread
   walks the next chunk while a kernel runs. Renamed in numba: the build stops with an error
   (JIT path). Kept but unused: the kernels hold the GIL (right, but slower; a test fails).
2. ``numba.core.codegen.AOTCPUCodegen._customize_tm_features``: pycc names the CPU model but
   leaves its features to LLVM's defaults for it, which may hold instructions a VM hides (a
   build that loads, then dies on AVX-512). It returns the host's reported features instead, as
   numba's JIT uses (``NUMBA_CPU_FEATURES``, otherwise JIT-only, included). Renamed in numba:
   the build stops with an error (JIT path); a test checks that both patches take effect.
"""
from __future__ import annotations

import contextlib
import importlib
import os

from madpipe.pipeline.kernels.aot import KERNELS, export_name, host_cpu, import_file, module_name, module_path

_NUMBA_RESULT = {"void": "void", "i8": "i8", "i8x2": "UniTuple(i8, 2)", "i8x3": "UniTuple(i8, 3)", "i8x4": "UniTuple(i8, 4)"}


def numba_signature(result: str, args: str) -> str:
    """The pycc signature string of a KERNELS entry."""
    return f"{_NUMBA_RESULT[result]}({', '.join(t.lstrip('!') for t in args.split())})"


@contextlib.contextmanager
def pycc_private_settings(host_features: bool):
    """Inside the build process: pycc's wrappers release the GIL and, with ``host_features``,
    its code generator targets the features this CPU reports (the module docstring says why and
    what breaks when numba changes). Restored on exit."""
    import numba.pycc.compiler as pycc_compiler
    from numba.core.codegen import AOTCPUCodegen
    from numba.core.compiler import Flags

    if getattr(pycc_compiler, "Flags", None) is not Flags:
        raise RuntimeError("numba.pycc.compiler.Flags is not numba's Flags: the GIL-releasing build "
                           "needs updating for this numba")
    if host_features and "_customize_tm_features" not in vars(AOTCPUCodegen):
        raise RuntimeError("numba's AOTCPUCodegen has no _customize_tm_features: the host-CPU build "
                           "needs updating for this numba")

    class GilReleasingFlags(Flags):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    features = AOTCPUCodegen._customize_tm_features
    pycc_compiler.Flags = GilReleasingFlags
    if host_features:
        AOTCPUCodegen._customize_tm_features = AOTCPUCodegen._get_host_cpu_features
    try:
        yield
    finally:
        pycc_compiler.Flags = Flags
        AOTCPUCodegen._customize_tm_features = features


def build(directory: str, key: str) -> str:
    """Compile every KERNELS entry into ``directory`` (run in a process with numba enabled)."""
    import tempfile

    from numba.pycc import CC

    from madpipe.pipeline.kernels import jit

    jit.resolve()  # numba dispatchers: pycc compiles each entry with the helpers it calls
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        cc = CC(module_name(key))
        cc.output_dir = tmp
        cc.verbose = False
        if host_cpu():
            cc.target_cpu = "host"  # see host_cpu: the key names this CPU
        for module, kernels in KERNELS.items():
            mod = importlib.import_module(f"madpipe.pipeline.{module}")
            for name, (result, args) in kernels.items():
                fn = getattr(mod, name)
                cc.export(export_name(module, name), numba_signature(result, args))(fn.py_func)
        with pycc_private_settings(host_features=bool(host_cpu())):
            cc.compile()
        built = [f for f in os.listdir(tmp) if f.startswith(module_name(key)) and f.endswith(".so")]
        if not built:
            raise RuntimeError(f"pycc wrote no module into {tmp}")
        import_file(os.path.join(tmp, built[0]), module_name(key))  # a build that does not load is not kept
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
