"""Small jobs never load numba; large ones load the ahead-of-time kernels (no numba either)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REAL = Path(__file__).parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap"

PROBE = """
import sys
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.kernels import jit
code = main(sys.argv[1:])
print("numba" in sys.modules, jit.backend(), code)
"""


def user_env(**extra):
    """The environment as a user runs madpipe in, whatever switches this test pass has set."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_DISABLE_JIT", "MADPIPE_JIT")}
    return dict(env, **extra)


def probe(*argv, env=None):
    env = user_env() if env is None else env
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env)
    return out.stdout.splitlines()[-1].split()


@pytest.mark.slow
def test_small_capture_does_not_load_numba(tmp_path):
    # The ahead-of-time kernels when they are built ...
    subprocess.run([sys.executable, "-m", "madpipe.pipeline.kernels.aot"], env=user_env(), check=True,
                   capture_output=True)
    assert probe("snoop", "-r", str(REAL)) == ["False", "aot", "0"]
    assert probe("decode", "-r", str(REAL)) == ["False", "aot", "0"]
    # ... and plain Python when they are not: a small job never builds them or loads numba.
    empty = user_env(MADPIPE_CACHE_DIR=str(tmp_path))
    assert probe("snoop", "-r", str(REAL), env=empty) == ["False", "python", "0"]
    assert probe("decode", "-r", str(REAL), env=empty) == ["False", "python", "0"]
    assert list(tmp_path.iterdir()) == []


def test_large_capture_runs_compiled_kernels_without_numba(tmp_path):
    big = tmp_path / "big.pcap"
    data = REAL.read_bytes()
    big.write_bytes(data + data[24:] * 200)  # 200 more copies of the records: past the threshold
    assert big.stat().st_size > 256 * 1024
    assert probe("snoop", "-r", str(big)) == ["False", "aot", "0"]


@pytest.mark.slow
def test_environment_overrides(tmp_path):
    env = user_env(MADPIPE_JIT="1")
    assert probe("snoop", "-r", str(REAL), env=env) == ["True", "numba", "0"]
    env = user_env(MADPIPE_JIT="aot")
    assert probe("snoop", "-r", str(REAL), env=env) == ["False", "aot", "0"]
    env = user_env(MADPIPE_JIT="0")
    assert probe("decode", "-r", str(REAL), "-T", "json", env=env) == ["False", "python", "0"]


@pytest.mark.slow
def test_positional_captures_are_planned_too(tmp_path):
    a = str(Path(__file__).parent.parent / "pcaps" / "opensm_partitions.pcap")
    b = str(Path(__file__).parent.parent / "pcaps" / "opensm_partitions_changed.pcap")
    empty = user_env(MADPIPE_CACHE_DIR=str(tmp_path / "cache"))
    assert probe("diff", a, b, env=empty)[:2] == ["False", "python"]
    assert probe("report", a, "-w", str(tmp_path / "r.html"), env=empty)[:2] == ["False", "python"]


@pytest.mark.slow
def test_snoop_runs_as_python_up_to_a_megabyte(tmp_path):
    # snoop's kernels touch a few bytes a frame: as Python they beat numba's load up to ~1 MiB;
    # decode's CRC check reads every byte, so it compiles from 256 KiB.
    mid = tmp_path / "mid.pcap"
    data = REAL.read_bytes()
    mid.write_bytes(data + data[24:] * 60)  # ~0.5 MiB
    assert 256 * 1024 < mid.stat().st_size < 1 << 20
    empty = user_env(MADPIPE_CACHE_DIR=str(tmp_path / "cache"))
    assert probe("snoop", "-r", str(mid), env=empty)[:2] == ["False", "python"]
    assert probe("decode", "-r", str(mid), "-T", "json")[1] == "aot"


# -- the decision on the first call ------------------------------------------------------------

BIND = r"""
import sys
import numpy as np
from madpipe.pipeline.decode import crc_kernels as kc
from madpipe.pipeline.decode import kernels as kd
from madpipe.pipeline.decode.crc_kernels import icrc_rows  # a name taken before the decision
from madpipe.pipeline.kernels import jit

def kinds(*fns):
    return [("aot" if type(f).__name__ == "function" and hasattr(f, "aot") else type(f).__name__) for f in fns]

print(kinds(kd.check_crcs, kd.icrc_masked_byte, icrc_rows), "numba" in sys.modules)
rows, out = np.zeros((2, 64), np.uint8), np.zeros(2, np.uint32)
icrc_rows(rows, np.full(2, 30, np.int64), kc.CRC32_TABLE, out)  # the first call: every kernel bound
code = np.zeros(1, np.int8), np.zeros(1, np.int8)
kd.check_crcs(rows.reshape(-1), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.uint8),
              kc.CRC32_TABLE, kc.VCRC_TABLE_NP, *code)  # numba compiles it with kc's helper
from madpipe.pipeline.bench import kernels as kb  # imported after the decision: bound by njit
print(kinds(kd.check_crcs, kd.icrc_masked_byte, kc.icrc_masked_byte, kb.touch_lines, icrc_rows),
      "numba" in sys.modules, jit.backend(), out.tolist() == [out[0]] * 2, code[0].tolist())
"""


def bind_probe(env):
    done = subprocess.run([sys.executable, "-c", BIND], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.mark.slow  # each backend in a fresh process, numba compiling
def test_importing_decides_nothing_and_the_first_call_binds_every_kernel(tmp_path):
    fresh = dict(NUMBA_CACHE_DIR=str(tmp_path / "numba"), MADPIPE_CACHE_DIR=str(tmp_path / "madpipe"))
    before, after = bind_probe(user_env(MADPIPE_JIT="1", **fresh))
    assert before == "['Kernel', 'Kernel', 'Kernel'] False"
    # Module globals hold numba's dispatchers (a helper imported from another kernel module
    # too); the name taken before the decision stays a Kernel that forwards.
    assert after == "['CPUDispatcher', 'CPUDispatcher', 'CPUDispatcher', 'CPUDispatcher', 'Kernel'] True numba True [-1]"
    before, after = bind_probe(user_env(MADPIPE_JIT="0", **fresh))
    assert after == "['function', 'function', 'function', 'function', 'Kernel'] False python True [-1]"
    assert not (tmp_path / "madpipe").exists()


def test_ahead_of_time_entry_points_are_guarded_and_helpers_plain():
    subprocess.run([sys.executable, "-m", "madpipe.pipeline.kernels.aot"], env=user_env(), check=True,
                   capture_output=True)
    before, after = bind_probe(user_env(MADPIPE_JIT="aot"))
    assert after == "['aot', 'function', 'function', 'aot', 'Kernel'] False aot True [-1]"


THREADS = r"""
import threading
import numpy as np
from madpipe.pipeline.decode import crc_kernels as kc
from madpipe.pipeline.decode import kernels as kd
from madpipe.pipeline.kernels import jit

rows = np.zeros((2, 64), np.uint8)
start = threading.Barrier(2)
done = []

def first_call(kernel, *args):
    start.wait()
    kernel(*args)
    done.append(kernel.__name__)

calls = [(kd.check_crcs, rows.reshape(-1), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.uint8),
          kc.CRC32_TABLE, kc.VCRC_TABLE_NP, np.zeros(1, np.int8), np.zeros(1, np.int8)),
         (kc.icrc_rows, rows, np.full(2, 30, np.int64), kc.CRC32_TABLE, np.zeros(2, np.uint32))]
threads = [threading.Thread(target=first_call, args=c) for c in calls]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(done), jit.backend())
"""


@pytest.mark.slow  # each backend in a fresh process, numba compiling
def test_two_threads_calling_their_first_kernels_at_once(tmp_path):
    env = user_env(MADPIPE_JIT="1", NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "['check_crcs', 'icrc_rows'] numba", done.stderr[-3000:]


def test_a_kernel_before_the_decision_is_its_function_by_name():
    import inspect
    import pickle

    from madpipe.pipeline.bench import kernels as kb
    from madpipe.pipeline.kernels import jit

    plain = getattr(kb.touch_lines, "py_func", kb.touch_lines)
    kernel = jit.Kernel(plain, (), {})
    assert kernel.py_func is plain and kernel.__name__ == "touch_lines" and kernel.__doc__ == plain.__doc__
    assert str(inspect.signature(kernel)) == "(mads)"
    # Tools probe private and special names (pytest, copy, IPython): those never decide anything.
    assert not hasattr(kernel, "_pytestfixturefunction") and not hasattr(kernel, "__array_interface__")
    assert kernel.target is None and "unbound" in repr(kernel)
    assert pickle.loads(pickle.dumps(kernel)) is kb.touch_lines  # what the module holds by that name


def test_ahead_of_time_only_entry_points_are_compiled_ones():
    """Helpers, and codecs rules a kernel module wraps with njit, stay Python: no numba for them."""
    from madpipe.codecs import crc
    from madpipe.pipeline.decode import crc_kernels as kc
    from madpipe.pipeline.kernels import jit

    helper = getattr(kc.icrc_masked_byte, "py_func", kc.icrc_masked_byte)
    assert jit._bind(helper, (), {}, "aot") is helper
    assert jit._bind(crc.has_icrc, (), {}, "aot") is crc.has_icrc


@pytest.mark.parametrize("env, want", [({}, "True"), ({"MADPIPE_JIT": "0"}, "False"),
                                       ({"NUMBA_DISABLE_JIT": "1"}, "False")])
def test_enabled_says_whether_kernels_will_be_compiled(env, want):
    # madpipe bench warns on stderr when it is False: NUMBA_DISABLE_JIT=1 runs kernels as Python too.
    clean = {k: v for k, v in os.environ.items() if k not in ("MADPIPE_JIT", "NUMBA_DISABLE_JIT")}
    done = subprocess.run([sys.executable, "-c", "from madpipe.pipeline.kernels import jit; print(jit.enabled())"],
                          env={**clean, **env}, capture_output=True, text=True)
    assert done.stdout.strip() == want, done.stderr
