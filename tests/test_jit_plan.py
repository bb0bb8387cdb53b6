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
