"""The ahead-of-time kernels: complete, type-checked, equal to numba's JIT, rebuilt when stale.

The suite's kernel-vs-reference tests run on whichever backend this process uses (the header of
the pytest run says which; tests/run_all.sh runs them once ahead of time, once with numba's JIT,
once as Python). These tests cover what is particular to the ahead-of-time build.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from madpipe.pipeline.kernels import aot, aot_build, guard

ROOT = Path(__file__).parent.parent
PCAPS = ROOT / "pcaps"

# Every way the CLI and the Python API call the kernels, in one process with numba's JIT; then
# each compiled signature in aot.KERNELS' notation.
WORKLOADS = r"""
import contextlib, io, os, sys, tempfile
import numpy as np
from numba.core import types
from numba.core.registry import CPUDispatcher
from madpipe.pipeline.bench import workload
from madpipe.pipeline.mlx4 import paravirt
from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.bench import kernels as kernels_bench
from madpipe.pipeline.cli.main import main

tmp = tempfile.mkdtemp()
mads, _, _ = workload.sm_mads(3000, 5)
big = os.path.join(tmp, "big.pcap")
workload.write_capture(big, workload.mad_frames(mads))
pcaps = sys.argv[1]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for argv in (["snoop", "-r", big], ["snoop", "-r", big, "-T", "json"],
                 ["snoop", "-r", os.path.join(pcaps, "opensm_partitions_changed.pcap"), "--host", "1"],
                 ["decode", "-r", big, "-T", "json"], ["decode", "-r", big, "-c", "50"],
                 ["decode", "-r", os.path.join(pcaps, "infiniband_endace_erf_2008.pcap"), "-T", "json"]):
        main(argv)
many_ports = os.path.join(tmp, "ports.pcap")  # more ports than the key table starts with
workload.write_capture(many_ports, workload.mad_frames(workload.sm_mads(20000, 6)[0], ports=8000))
with contextlib.redirect_stdout(io.StringIO()):
    main(["snoop", "-r", many_ports])
from madpipe.pipeline.ingest.reader import Ingest
for batch in Ingest(big):
    rows, _ = batch.mads()
cache, v2p = snoop.init_pkeys(num_vfs=4)
snoop.smp_snoop(cache, v2p, rows, np.ones(len(rows), np.uint8), np.zeros(len(rows), np.uint16))
mbox, transition, slave, qpn = workload.qp_commands(2000, 3)
for profile in ("3.7", "new"):
    _, v2p = snoop.init_pkeys(num_vfs=8, profile=profile)
    paravirt.rewrite(mbox, transition, slave, qpn, v2p, base_proxy_sqpn=0x48, profile=profile)
    paravirt.rewrite_inplace(mbox.copy(), transition, slave, qpn, v2p, base_proxy_sqpn=0x48, profile=profile)
paravirt.rewrite(mbox, transition, slave, qpn, v2p, base_proxy_sqpn=0x48, profile="mainline",
                 port_types=np.array([2, 2], np.uint8), num_vfs=8)   # the Ethernet path: same signature
kernels_bench.touch_lines(mads)
kernels_bench.touch_snooped(mads)

CODES = {"uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8", "int8": "i1", "int16": "i2",
         "int32": "i4", "int64": "i8", "bool": "b1", "float64": "f8"}
def notation(t):
    t = types.unliteral(t)  # a helper typed inside a kernel may carry a literal (k = 0)
    if isinstance(t, types.Array):
        assert t.layout == "C", t
        return CODES[str(t.dtype)] + "[" + ":," * (t.ndim - 1) + "::1]"
    return CODES[str(t)]
for name, mod in sorted(sys.modules.items()):
    if name.startswith("madpipe.pipeline.") and name.endswith("kernels"):
        for fn, d in vars(mod).items():
            if isinstance(d, CPUDispatcher) and not fn.startswith("_"):
                for sig in d.signatures:
                    print(name.removeprefix("madpipe.pipeline."), fn, " ".join(notation(t) for t in sig))
"""


def _env(**extra):
    """This environment without the pass's own switches (tests/run_all.sh sets them), plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_DISABLE_JIT", "MADPIPE_JIT")}
    return dict(env, **extra)


@pytest.fixture(scope="module")
def built():
    """The extension of the current sources, built (or found) in the user's cache."""
    module = aot.load(quiet=True)
    assert module is not None, aot.failure()
    return module


def test_every_kernel_module_is_listed_and_every_listed_kernel_exists():
    modules = sorted(".".join(p.relative_to(ROOT / "pipeline").with_suffix("").parts)
                     for p in (ROOT / "pipeline").rglob("*.py")
                     if re.search(r"^from madpipe\.pipeline\.kernels\.jit import njit$", p.read_text(), re.M))
    assert sorted([*aot.KERNELS, *aot.HELPER_MODULES]) == modules   # helpers: inlined into a listed kernel
    for module, kernels in aot.KERNELS.items():
        source = (ROOT / "pipeline" / (module.replace(".", "/") + ".py")).read_text()
        for name, (result, args) in kernels.items():
            assert f"\ndef {name}(" in source, f"{module}.{name}"
            assert result in ("void", "i8", "i8x2", "i8x3", "i8x4")
            for token in args.split():
                dtype, ndim, written = guard.arg_spec(token)
                assert np.dtype(dtype) and (ndim == 0) == ("[" not in token), token
                assert not written or ndim, token  # only arrays are written


# Then each kernel compiled with the table's arrays read-only where it marks no "!" (after the
# workloads' signatures are printed: these add their own).
READ_ONLY_MARK = "--- read-only signatures ---\n"
READ_ONLY = "\nprint(" + repr(READ_ONLY_MARK.strip()) + ")\n" + r"""
import importlib, sys
from numba.core import types
from madpipe.pipeline.kernels import aot, guard
for module, kernels in aot.KERNELS.items():
    mod = importlib.import_module("madpipe.pipeline." + module)
    for name, (result, args) in kernels.items():
        sig = []
        for token in args.split():
            dtype, ndim, written = guard.arg_spec(token)
            t = getattr(types, "boolean" if dtype == "bool" else dtype)
            sig.append(types.Array(t, ndim, "C", readonly=not written) if ndim else t)
        getattr(mod, name).compile(tuple(sig))
        print(module, name)
"""


@pytest.fixture(scope="module")
def cold_jit():
    """Every command's workload, then the read-only compile, in one process with numba's JIT
    and no numba cache, as on a fresh machine (cached runs record fewer signatures); one
    process, since most of either part's time is numba compiling the same kernels."""
    return subprocess.run([sys.executable, "-c", WORKLOADS + READ_ONLY, str(PCAPS)], capture_output=True,
                          text=True, env=_env(MADPIPE_JIT="1", MADPIPE_NO_CACHE="1"))


@pytest.mark.slow
def test_the_jit_compiles_no_signature_the_table_lacks(cold_jit):
    # Were a call path to pass another dtype, the ahead-of-time guard would refuse it: the JIT
    # compiled signatures of every command's workload must be exactly the table's.
    out, mark, _ = cold_jit.stdout.partition(READ_ONLY_MARK)
    assert mark, cold_jit.stderr[-3000:]  # the workloads ran to the end
    seen = {}
    for line in out.splitlines():
        module, name, args = line.split(" ", 2)
        seen.setdefault((module, name), set()).add(args)
    sources = {m: (ROOT / "pipeline" / (m.replace(".", "/") + ".py")).read_text() for m in aot.KERNELS}
    for (module, name), sigs in seen.items():
        if name not in aot.KERNELS.get(module, {}):
            # Not built as an entry point: it must be a helper that kernels call (compiled into
            # them), not a kernel the Python code calls.
            calls = sum(src.count(f"{name}(") - src.count(f"def {name}(") for src in sources.values())
            assert calls > 0, f"{module}.{name} is called from Python but not built ahead of time"
            continue
        assert sigs == {aot.KERNELS[module][name][1].replace("!", "")}, f"{module}.{name}"
    # and every entry of the table is exercised by some command
    assert {(m, n) for m, ks in aot.KERNELS.items() for n in ks} <= set(seen)


@pytest.mark.slow
def test_what_a_kernel_does_not_write_numba_checks_it_only_reads(cold_jit):
    # Every array KERNELS does not mark "!" is compiled read-only: numba refuses a kernel that
    # writes one, so the guard can let read-only inputs through and refuse read-only outputs.
    assert cold_jit.returncode == 0, cold_jit.stderr[-3000:]
    assert len(cold_jit.stdout.partition(READ_ONLY_MARK)[2].splitlines()) == sum(map(len, aot.KERNELS.values()))


def test_wrong_dtype_is_refused_with_the_kernel_and_argument_named(built):
    rehash = aot.kernel("fabric.kernels", "rehash")
    uniq = np.zeros((4, 72), np.uint8)
    with pytest.raises(guard.KernelTypeError, match=r"fabric.kernels.rehash: argument 3 must be a C-contiguous writable int32\[1-d\] array .* got int64\[1-d\]"):
        rehash(uniq, 2, np.full(8, -1, np.int64))
    with pytest.raises(guard.KernelTypeError, match="argument 1 .* not C-contiguous"):
        rehash(np.zeros((4, 144), np.uint8)[:, ::2], 2, np.full(8, -1, np.int32))
    with pytest.raises(guard.KernelTypeError, match="3 arguments expected, got 2"):
        rehash(uniq, 2)
    table = np.full(8, -1, np.int32)
    readonly = np.frombuffer(bytes(table.tobytes()), np.int32)
    with pytest.raises(guard.KernelTypeError, match="argument 3 must be a C-contiguous writable int32.*read-only"):
        rehash(uniq, 2, readonly)  # would write into an immutable bytes object
    assert (readonly == -1).all()
    unaligned = np.zeros(8 * 4 + 1, np.uint8)[1:].view(np.int32)
    with pytest.raises(guard.KernelTypeError, match="not aligned"):
        rehash(uniq, 2, unaligned)
    with pytest.raises(guard.KernelTypeError, match="argument 2 must be an integer"):
        rehash(uniq, 2.9, table)
    frozen = uniq.copy()
    frozen.flags.writeable = False  # an input may be read-only
    rehash(frozen, np.int64(2), table)
    assert sorted(table[table >= 0].tolist()) == [0, 1]
    scan = aot.kernel("ingest.kernels", "scan_pcap")
    outs = [np.zeros(4, np.int64) for _ in range(5)] + [np.zeros(4, np.uint8)]
    with pytest.raises(guard.KernelTypeError, match="argument 3 must be a bool"):
        scan(np.zeros(64, np.uint8), 0, 1, 1, False, 100, *outs)


def test_the_build_runs_with_numba_on_whatever_the_caller_has(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, env, **kw):
        seen.update(env)
        return subprocess.CompletedProcess(cmd, 1, "", "RuntimeError: stop here\n")

    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    monkeypatch.setenv("MADPIPE_JIT", "0")
    monkeypatch.setattr(subprocess, "run", fake_run)  # the module aot imports when it builds
    with pytest.raises(RuntimeError, match=r"the build failed \(RuntimeError: stop here\)"):
        aot._build_in_subprocess(str(tmp_path), "k" * 16, quiet=True)
    assert "NUMBA_DISABLE_JIT" not in seen and seen["MADPIPE_JIT"] == "1"
    assert aot._previous_failure(str(tmp_path), "k" * 16).startswith("the build failed (RuntimeError: stop here)")
    assert aot._previous_failure(str(tmp_path), "j" * 16) is None  # another version tries again


def test_no_home_directory_means_a_private_temporary_cache(monkeypatch):
    monkeypatch.delenv("MADPIPE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(aot.os.path, "expanduser", lambda p: p)  # as with no HOME and no passwd entry
    path = aot.cache_dir()
    assert os.path.isabs(path) and f"madpipe-cache-{os.getuid()}" in path


def _outputs(env, *argv):
    return subprocess.run([sys.executable, "-m", "madpipe.pipeline.cli.main", *argv], capture_output=True,
                          env=env, check=True).stdout


@pytest.mark.slow
def test_commands_print_the_same_bytes_ahead_of_time_with_the_jit_and_as_python(built, tmp_path):
    from madpipe.pipeline.bench import workload

    mads, _, _ = workload.sm_mads(5000, 11)
    big = tmp_path / "big.pcap"
    workload.write_capture(big, workload.mad_frames(mads))
    for argv in (["snoop", "-r", str(big), "-T", "json"], ["decode", "-r", str(big), "-T", "json", "-c", "2000"],
                 ["snoop", "-r", str(PCAPS / "opensm_partitions_changed.pcap"), "--host", "1", "--vfs", "3"]):
        outs = {mode: _outputs(_env(MADPIPE_JIT=mode), *argv) for mode in ("aot", "1", "0")}
        assert outs["aot"] == outs["1"] == outs["0"], argv
        assert outs["aot"]


def test_the_key_changes_with_any_kernel_source(tmp_path, monkeypatch):
    tree = tmp_path / "madpipe"
    shutil.copytree(ROOT / "pipeline", tree / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "codecs", tree / "codecs", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(aot, "_PIPELINE", str(tree / "pipeline"))
    monkeypatch.setattr(aot, "_KERNELS", str(tree / "pipeline" / "kernels"))
    monkeypatch.setattr(aot, "_CODECS", str(tree / "codecs"))
    key = aot.source_key()
    assert key == aot.source_key()
    path = tree / "pipeline" / "fabric" / "kernels.py"
    path.write_text(path.read_text() + "\n# edited\n")
    assert aot.source_key() != key


def test_the_key_names_the_cpu_the_build_targets(monkeypatch):
    """Kernels built for this CPU's instructions are never loaded on another kind of CPU."""
    here = aot.source_key()
    monkeypatch.setattr(aot, "host_cpu", lambda: "model name\t: Other\nflags\t\t: fpu sse2")
    assert aot.source_key() != here
    if os.path.exists("/proc/cpuinfo"):
        monkeypatch.undo()
        assert aot.host_cpu().startswith(("model name", "flags", "Features", "CPU part"))
    monkeypatch.setenv("NUMBA_CPU_NAME", "generic")  # numba's own say in what the build targets
    assert aot.source_key() != here


PATCHES = r"""
from numba.core.codegen import AOTCPUCodegen, get_host_cpu_features
import numba.pycc.compiler as pycc_compiler
from madpipe.pipeline.kernels import aot_build

def state():
    return (AOTCPUCodegen("probe", "host")._tm_features == get_host_cpu_features() != "",
            pycc_compiler.Flags().release_gil)

before = state()
with aot_build.pycc_private_settings(host_features=True):
    inside = state()
print(before, inside, state())
"""


def test_the_build_asks_for_the_host_features_and_a_gil_free_wrapper_and_only_while_it_builds():
    """Not LLVM's defaults for the CPU model, which may hold instructions a VM hides; wrappers
    that release the GIL; numba's own settings back once the build is done."""
    done = subprocess.run([sys.executable, "-c", PATCHES], capture_output=True, text=True, env=_env())
    assert done.stdout.strip() == "(False, False) (True, True) (False, False)", done.stderr[-2000:]


def test_the_build_leaves_numba_untouched_in_the_process_that_asks():
    """The build runs in a subprocess; loading (and every kernel call) imports no numba."""
    probe = ("import sys; from madpipe.pipeline.kernels import aot; assert aot.load(quiet=True) is not None; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env())
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


@pytest.mark.slow
def test_a_failed_build_falls_back_to_the_jit_once_and_says_why(tmp_path):
    # A C compiler that fails: the command still works (numba's JIT), the reason is kept, and the
    # next run does not try to build again.
    probe = ("import sys; from madpipe.pipeline.kernels import jit, aot; jit.plan_for_inputs(['x'], 0); "
             "jit.backend(); print(jit.backend(), aot.failure())")
    env = _env(MADPIPE_CACHE_DIR=str(tmp_path), CC="/bin/false", LDSHARED="/bin/false")
    first = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert first.stdout.startswith("numba the build failed (RuntimeError: "), first.stdout + first.stderr
    assert "remove " + str(tmp_path / "build-failed.txt") + " to try again" in first.stdout
    assert "compiling the kernels ahead of time" in first.stderr
    assert "numba's JIT compiles the kernels instead" in first.stderr
    assert (tmp_path / "build-failed.txt").exists()
    second = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert second.stdout.startswith("numba the build failed")
    assert "compiling" not in second.stderr  # remembered, not retried
    insist = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=dict(env, MADPIPE_JIT="aot"))
    assert insist.returncode == 1 and "MADPIPE_JIT=aot, but the ahead-of-time kernels are unavailable" in insist.stderr


def test_old_builds_are_pruned_newest_kept(tmp_path):
    for n in range(aot_build.KEEP_BUILDS + 3):
        path = tmp_path / f"madpipe_kernels_{n:016x}.cpython-311-x86_64-linux-gnu.so"
        path.write_bytes(b"")
        os.utime(path, (1000 + n, 1000 + n))
    (tmp_path / "build-failed.txt").write_text("x")
    aot_build._prune(str(tmp_path), keep=aot_build.KEEP_BUILDS)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "build-failed.txt" in left
    assert [int(n[16:32], 16) for n in left if n.endswith(".so")] == list(range(3, aot_build.KEEP_BUILDS + 3))


def test_build_kernels_prints_the_build_it_finds(built):
    done = subprocess.run([sys.executable, "-m", "madpipe.pipeline.cli", "build-kernels"], capture_output=True,
                          text=True, env=_env())
    assert done.returncode == 0 and done.stdout.strip() == aot.module_path(), done.stderr
    assert done.stderr == ""  # nothing to build
    assert "examples:\n  madpipe build-kernels" in subprocess.run(
        [sys.executable, "-m", "madpipe.pipeline.cli", "build-kernels", "--help"], capture_output=True, text=True,
        env=_env(), check=True).stdout


def test_build_kernels_builds_when_missing_or_forced_and_tries_again_after_a_failure(tmp_path, monkeypatch, capsys):
    from madpipe.pipeline.cli.main import main

    builds = []

    def fake_run(cmd, env, **kw):  # the build subprocess: writes the extension where asked
        builds.append(cmd)
        key = cmd[cmd.index("--key") + 1]
        if fail:
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback ...\nCompileError: gcc not found\n")
        open(aot.module_path(key, env["MADPIPE_CACHE_DIR"]), "w").close()
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("MADPIPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", fake_run)
    fail = True
    assert main(["build-kernels"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("madpipe build-kernels: the build failed (CompileError: gcc not found); remove "
                        f"{tmp_path / 'build-failed.txt'} to try again\n")
    assert "compiling the kernels ahead of time" in err and len(builds) == 1
    fail = False
    assert main(["build-kernels"]) == 0  # the failure noted does not stop a build asked for by hand
    assert capsys.readouterr().out == aot.module_path(aot.source_key(), str(tmp_path)) + "\n"
    assert len(builds) == 2 and not (tmp_path / "build-failed.txt").exists()
    assert main(["build-kernels"]) == 0 and len(builds) == 2  # built: nothing to do
    assert main(["build-kernels", "--force"]) == 0 and len(builds) == 3


def test_the_kernels_release_the_gil(built):
    """What the build's GIL-releasing wrappers are for: Python runs while a kernel works. (Numba's
    JIT with nogil=False on the same kernel: the loop below pauses 0.128 s of a 0.13 s call.)"""
    import threading
    import time

    from madpipe.pipeline.decode import crc_kernels as kc

    icrc_rows = aot.kernel("decode.crc_kernels", "icrc_rows")
    rows = np.zeros((200_000, 256), np.uint8)
    args = rows, np.full(len(rows), 256, np.int64), kc.CRC32_TABLE, np.zeros(len(rows), np.uint32)
    start = time.perf_counter()
    icrc_rows(*args)
    alone = time.perf_counter() - start
    worker = threading.Thread(target=icrc_rows, args=args)
    pause, last = 0.0, time.perf_counter()
    worker.start()
    while worker.is_alive():  # with the GIL held by the kernel, this loop stops until it ends
        now = time.perf_counter()
        pause, last = max(pause, now - last), now
    worker.join()
    pause = max(pause, time.perf_counter() - last)
    assert args[3][0] != 0 and pause < alone / 2, (pause, alone)
