"""Importing any madpipe module starts no compiler and is quick, with an empty cache.

Each module is imported alone in a fresh process, forked from a bare interpreter that has
imported only the standard library (so no module sees another's imports, and none pays for an
interpreter start-up, 0.2 s in this sandbox). The process has its own new, empty
MADPIPE_CACHE_DIR and NUMBA_CACHE_DIR, and starting a process from it is refused and recorded.
An import fails the test if it started a process (the ahead-of-time build runs gcc in one), left
numba or llvmlite in sys.modules, wrote anything into a cache folder, raised, or took over
IMPORT_SECONDS (the import statement alone, timed in that process; a module over it is timed
again twice, alone, and keeps its best time: the machine may be busy).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
IMPORT_SECONDS = 1.0

# `python -c FORKER CACHES MODULE...`: for each module, fork; the child gets empty caches under
# CACHES/<i>, refuses and records every way to start a process, imports the module and writes
# what happened as one JSON line into a pipe; the parent prints it.
FORKER = r"""
import json, os, sys

def probe(module, caches):
    import _posixsubprocess, importlib, signal, subprocess, time

    signal.alarm(60)  # a hung import ends as a killed child, not a hung test
    for name, folder in (("MADPIPE_CACHE_DIR", "madpipe"), ("NUMBA_CACHE_DIR", "numba")):
        os.environ[name] = os.path.join(caches, folder)
        os.makedirs(os.environ[name])
    started = []

    def refuse(what):
        def refused(*args, **kwargs):
            started.append(what)
            raise PermissionError(f"{what}: starting a process while importing (refused by the probe)")
        return refused

    for name in dir(os):
        if name in ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp") or \
                name.startswith(("exec", "spawn")):
            setattr(os, name, refuse(f"os.{name}"))
    _posixsubprocess.fork_exec = refuse("subprocess")
    subprocess.Popen._execute_child = refuse("subprocess")
    error = None
    start = time.perf_counter()
    try:
        importlib.import_module(module)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    compilers = sorted({m.split(".")[0] for m in sys.modules} & {"numba", "llvmlite"})
    return {"seconds": seconds, "started": started, "compilers": compilers, "error": error}

for i, module in enumerate(sys.argv[2:]):
    caches = os.path.join(sys.argv[1], str(i))
    read, write = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = probe(module, caches)
        except BaseException as exc:
            result = {"error": f"the probe failed: {type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(out) if out else {"error": f"the probe died (wait status {status})"}
    result["cache_files"] = sorted(os.path.relpath(os.path.join(d, f), caches)
                                   for d, _, files in os.walk(caches) for f in files)
    print(json.dumps(dict(result, module=module)), flush=True)
"""


def madpipe_modules() -> list[str]:
    """Every module under codecs/ and pipeline/ by its import name (packages too, no __main__)."""
    names = []
    for folder, package in (("codecs", "madpipe.codecs"), ("pipeline", "madpipe.pipeline")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return names


def probe(modules: list[str], env: dict | None = None) -> dict:
    """Import each of ``modules`` in a process of its own with empty caches: what happened."""
    with tempfile.TemporaryDirectory(prefix="madpipe-import-") as tmp:
        done = subprocess.run([sys.executable, "-c", FORKER, tmp, *modules], capture_output=True, text=True,
                              env=os.environ if env is None else env, timeout=600)
    results = {}
    for line in done.stdout.splitlines():
        result = json.loads(line)
        results[result.pop("module")] = result
    for module in modules:
        results.setdefault(module, {"error": f"not probed: {done.stderr.strip()[-2000:]}", "cache_files": []})
    return results


MODULES = madpipe_modules()


@pytest.fixture(scope="module")
def imported() -> dict:
    """Every module's probe, from as many forking interpreters as there are CPUs."""
    workers = max(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = {}
        for part in pool.map(probe, [MODULES[i::workers] for i in range(workers)]):
            results.update(part)
    for module, result in results.items():
        for _ in range(2):  # over the time limit: again, alone (other checks must hold every time)
            if result.get("seconds", 0) < IMPORT_SECONDS:
                break
            again = probe([module])[module]
            result = dict(again, seconds=min(result["seconds"], again.get("seconds", IMPORT_SECONDS)))
        results[module] = result
    return results


def check(module: str, result: dict) -> None:
    assert not result.get("started"), f"import {module} started a process: {result['started']}"
    assert not result.get("compilers"), f"import {module} imported {' and '.join(result['compilers'])}"
    assert result["cache_files"] == [], f"import {module} wrote into a cache: {result['cache_files']}"
    assert result["error"] is None, f"import {module}: {result['error']}"
    assert result["seconds"] < IMPORT_SECONDS, f"import {module} took {result['seconds']:.2f} s"


@pytest.mark.slow  # ~100 processes: `-m "not slow"` keeps the probe's own tests below
@pytest.mark.parametrize("module", MODULES)
def test_import_starts_no_compiler_and_is_quick(module, imported):
    check(module, imported[module])


def test_every_module_is_probed():
    assert len(MODULES) > 60
    for name in ("madpipe.codecs", "madpipe.pipeline.mlx4.snoop", "madpipe.pipeline.decode.kernels",
                 "madpipe.pipeline.kernels.aot", "madpipe.pipeline.cli.main", "madpipe.pipeline.fuzz.mutate.cases"):
        assert name in MODULES
    assert not [m for m in MODULES if m.endswith("__main__")]


@pytest.mark.parametrize("body, fails_with", [
    ("import subprocess; subprocess.run(['true'])", "started a process"),
    ("import os; os.system('true')", "started a process"),
    ("import numba", "imported .*numba"),
    ("import os; open(os.path.join(os.environ['MADPIPE_CACHE_DIR'], 'x.so'), 'w').close()", "wrote into a cache"),
    ("import time; time.sleep(1.1)", "took"),
    ("raise ImportError('no')", "ImportError: no"),
    # A kernel called at import: the first call decides how kernels run, and with an empty cache
    # a large job's decision starts the ahead-of-time build.
    ("import numpy as np\nfrom madpipe.pipeline.bench.kernels import touch_lines\n"
     "touch_lines(np.zeros((1, 72), np.uint8))", "started a process"),
])
def test_the_probe_sees_what_it_looks_for(tmp_path, body, fails_with):
    (tmp_path / "probe_target.py").write_text(body + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MADPIPE_JIT", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    with pytest.raises(AssertionError, match=fails_with):
        check("probe_target", probe(["probe_target"], env)["probe_target"])


def test_a_kernel_called_at_import_with_the_jit_loads_numba(tmp_path):
    (tmp_path / "probe_target.py").write_text(
        "import numpy as np\nfrom madpipe.pipeline.bench.kernels import touch_lines\n"
        "touch_lines(np.zeros((1, 72), np.uint8))\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    env.update(MADPIPE_JIT="1", PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")])))
    result = probe(["probe_target"], env)["probe_target"]
    assert "numba" in result["compilers"] and result["started"] == []
