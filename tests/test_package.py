import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import GUARDED_ENV, TEST_CACHE_ENV, changes, chosen_cache_root, snapshot, user_caches

ROOT = Path(__file__).resolve().parent.parent

# Where `import codecs` came from, as JSON. The top-level folder is named codecs/ (madpipe.codecs
# through setuptools' mapping) but must never hide the standard library's codecs.
CODECS_PROBE = """
import codecs, json, os, sys, sysconfig
report = {"file": os.path.realpath(getattr(codecs, "__file__", None) or "?"),
          "stdlib": os.path.realpath(sysconfig.get_paths()["stdlib"]),
          "lookup": callable(getattr(codecs, "lookup", None)),
          "path": [os.path.realpath(p or ".") for p in sys.path]}
"""


def _probe(*argv, cwd=ROOT, env=None):
    """Run a probe that prints ``CODECS <json>``: the report, or the stderr of a process that failed."""
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("CODECS ")]
    if done.returncode or not lines:
        return done.stdout[-1000:] + done.stderr[-2000:]
    return json.loads(lines[-1].removeprefix("CODECS "))


def _is_stdlib(report) -> bool:
    return isinstance(report, dict) and report["lookup"] and os.path.dirname(report["file"]) == report["stdlib"]


def test_stdlib_codecs_in_this_process():
    """Run in-process by this session, and in fresh pytest sessions by the test below."""
    scope: dict = {}
    exec(CODECS_PROBE, scope)
    print("CODECS " + json.dumps(scope["report"]))
    assert _is_stdlib(scope["report"]), scope["report"]


def test_stdlib_codecs_not_shadowed_in_a_fresh_interpreter():
    print_it = CODECS_PROBE + "print('CODECS ' + json.dumps(report))"
    from_root = _probe("-c", print_it)  # sys.path[0] is the root, beside its codecs/ folder
    assert _is_stdlib(from_root) and str(ROOT) in from_root["path"], from_root
    from_tests = _probe("-c", print_it, cwd=ROOT / "tests")
    assert _is_stdlib(from_tests), from_tests


@pytest.mark.slow
def test_stdlib_codecs_not_shadowed_in_a_fresh_pytest_session():
    # python -m pytest puts the working directory on sys.path, and its rootdir insertion tests/.
    here = "test_package.py::test_stdlib_codecs_in_this_process"
    inner = ["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
    from_root = _probe(*inner, f"tests/{here}")
    assert _is_stdlib(from_root) and str(ROOT) in from_root["path"], from_root
    from_tests = _probe(*inner, here, cwd=ROOT / "tests")
    assert _is_stdlib(from_tests) and str(ROOT / "tests") in from_tests["path"], from_tests


def test_the_codecs_probe_sees_a_shadowed_codecs():
    # The check above can fail. CPython (3.11+) has codecs frozen in and imports it at startup, so
    # a default build finds it before any sys.path entry; without frozen modules (a debug build,
    # -X frozen_modules=off) it is looked up on sys.path. Then a process that imports codecs after
    # the repository root went on sys.path gets the codecs/ folder ...
    shadow = f"import sys; sys.path.insert(0, {str(ROOT)!r}); del sys.modules['codecs']\n"
    print_it = CODECS_PROBE + "print('CODECS ' + json.dumps(report))"
    report = _probe("-X", "frozen_modules=off", "-c", shadow + print_it)
    assert not _is_stdlib(report) and report["file"] == str(ROOT / "codecs" / "__init__.py"), report
    # ... and with the root on PYTHONPATH the interpreter itself cannot start.
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    report = _probe("-X", "frozen_modules=off", "-c", print_it, env=env)
    assert not _is_stdlib(report) and "module 'codecs' has no attribute" in report, report


def test_every_cache_points_at_the_session_folder(isolated_caches):
    from madpipe.pipeline.kernels import aot

    root = isolated_caches.root
    assert {name: os.environ[name] for name in isolated_caches.environment} == {
        "XDG_CACHE_HOME": root, "MADPIPE_CACHE_DIR": os.path.join(root, "madpipe"),
        "NUMBA_CACHE_DIR": os.path.join(root, "numba"), TEST_CACHE_ENV: root,
        GUARDED_ENV: os.pathsep.join(user_caches())}
    assert aot.cache_dir() == os.path.join(root, "madpipe")
    assert os.path.realpath(os.path.expanduser("~/.cache/madpipe")) in user_caches()
    for folder in user_caches():
        assert os.path.commonpath([folder, root]) not in (folder, root)
    # A subprocess inherits them: madpipe's cache, and numba's as numba read it at its import.
    probe = ("from madpipe.pipeline.kernels import aot; import numba.core.config as c; "
             "print(aot.cache_dir()); print(c.CACHE_DIR)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [os.path.join(root, "madpipe"), os.path.join(root, "numba")]


def test_a_snapshot_shows_what_was_written(tmp_path):
    cache = tmp_path / "madpipe"
    before = snapshot(str(cache))
    assert before is None and changes(before, snapshot(str(cache))) == []
    cache.mkdir()
    assert changes(before, snapshot(str(cache))) == ["created"]
    before = snapshot(str(cache))
    (cache / "kernels.so").write_bytes(b"x")
    assert changes(before, snapshot(str(cache)))[0] == "new kernels.so"
    before = snapshot(str(cache))
    (cache / "kernels.so").write_bytes(b"xy")
    assert changes(before, snapshot(str(cache))) == ["changed kernels.so"]


def test_the_test_cache_may_not_be_the_users(tmp_path):
    guarded = [str(tmp_path / "home" / ".cache" / "madpipe")]
    assert chosen_cache_root({}, guarded) is None
    for bad in ("home/.cache", "home/.cache/madpipe", "home/.cache/madpipe/tests", "home"):
        with pytest.raises(pytest.UsageError, match="the user's cache"):
            chosen_cache_root({TEST_CACHE_ENV: str(tmp_path / bad)}, guarded)
    assert chosen_cache_root({TEST_CACHE_ENV: str(tmp_path / "home" / "madpipe-tests")}, guarded) == str(
        tmp_path / "home" / "madpipe-tests")


@pytest.mark.slow
def test_a_session_that_writes_the_users_cache_fails(tmp_path):
    # A session of one test that writes into the user's cache, with HOME in tmp_path: it fails,
    # and says where; the same session without the write passes.
    home = tmp_path / "home"
    (home / ".cache" / "madpipe").mkdir(parents=True)
    test = tmp_path / "test_writes.py"
    test.write_text(textwrap.dedent("""
        import os
        def test_write():
            if os.environ.get("WRITE") == "1":
                open(os.path.join(os.environ["HOME"], ".cache", "madpipe", "stray"), "w").close()
    """))
    tests = str(Path(__file__).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", GUARDED_ENV)}  # as a user's
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([tests, env.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", "--rootdir",
            str(tmp_path), str(test)]
    clean = subprocess.run(argv, cwd=tmp_path, env=dict(env, WRITE="0"), capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout[-2000:]
    dirty = subprocess.run(argv, cwd=tmp_path, env=dict(env, WRITE="1"), capture_output=True, text=True)
    assert dirty.returncode == 1 and "1 passed, 1 error" in dirty.stdout, dirty.stdout[-2000:]
    assert f"the session wrote the user's cache: {home / '.cache' / 'madpipe'}: new stray" in dirty.stdout


def test_namespace_packages_import():
    for name in ("madpipe.codecs", "madpipe.pipeline"):
        assert importlib.import_module(name).__name__ == name


def test_top_level_help_lists_every_command_with_examples(capsys):
    import pytest

    from madpipe.pipeline.cli.main import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in COMMANDS)
    assert "examples:" in out and "madpipe snoop -r pcaps/" in out


@pytest.mark.slow
def test_unwritable_output_is_one_line_for_every_command(tmp_path, capsys):
    from pathlib import Path

    from madpipe.pipeline.cli.main import main

    cap = str(Path(__file__).parent.parent / "pcaps" / "opensm_partitions.pcap")
    missing = tmp_path / "no" / "such" / "folder"
    for argv in (["report", cap, "-w", str(missing / "r.html")],
                 ["decode", "-r", cap, "-T", "csv", "-w", str(missing / "x.csv")],
                 ["craft", "--method", "get", "--attr", "node-info", "-L", "4", "-w", str(missing / "x.pcap")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "No such file or directory" in err, argv
        assert "Traceback" not in err


def _cli(*argv):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "madpipe.pipeline.cli.main", *argv], capture_output=True)


def test_the_console_entry_exits_with_the_status_and_all_output(tmp_path):
    # decode/snoop/diff/report leave without the interpreter's teardown: nothing may be lost.
    import subprocess
    import sys
    from pathlib import Path

    real = str(Path(__file__).parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap")
    done = _cli("decode", "-r", real, "-T", "json")
    assert done.returncode == 0 and done.stderr.endswith(b"VCRC 43 ok 0 bad\n")  # the summary line
    assert len(done.stdout.splitlines()) == 43 and done.stdout.endswith(b"\n")
    assert _cli("snoop", "-r", str(tmp_path / "missing.pcap")).returncode == 2
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(Path(real).read_bytes()[:-7])  # a truncated last record: exit 1, said on stderr
    trunc = _cli("decode", "-r", str(bad))
    assert trunc.returncode == 1 and b"truncated record" in trunc.stderr
    # A reader that goes away (| head) is not an error and prints nothing on stderr.
    pipe = subprocess.Popen([sys.executable, "-m", "madpipe.pipeline.cli.main", "decode", "-r", real, "-V"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pipe.stdout.readline()
    pipe.stdout.close()
    assert pipe.wait() == 0 and pipe.stderr.read() == b""


def test_the_console_entry_gives_blas_one_thread_before_numpy_unless_told():
    # numpy's OpenBLAS threads spun on the core the snoop's reader thread needs. The probe notes
    # the variable when numpy is first imported (the entry imports it for small_pages), and
    # numpy's huge-page switch after the entry.
    import os
    import subprocess
    import sys

    probe = ("import os, sys, importlib.abc\n"
             "seen = []\n"
             "class Spy(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path, target=None):\n"
             "        if name == 'numpy' and not seen: seen.append(os.environ.get('OPENBLAS_NUM_THREADS'))\n"
             "sys.meta_path.insert(0, Spy())\n"
             "from madpipe.pipeline.cli import main as cli\n"
             "def fake(argv):\n"
             "    from numpy._core import multiarray\n"
             "    print(seen[0] if seen else 'none', multiarray._get_madvise_hugepage())\n"
             "    return 0\n"
             "cli.main = fake\n"
             "sys.argv = ['madpipe', sys.argv[1]]; cli.entry()\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", probe, "snoop"], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["1", "False"], done.stderr
    done = subprocess.run([sys.executable, "-c", probe, "snoop"], env=dict(env, OPENBLAS_NUM_THREADS="3"),
                          capture_output=True, text=True)
    assert done.stdout.split() == ["3", "False"], done.stderr
    # A command that reads no capture keeps numpy's default (and imports it only when it needs it).
    done = subprocess.run([sys.executable, "-c", probe, "craft"], env=env, capture_output=True, text=True)
    assert done.stdout.split()[1] == "True", done.stderr
