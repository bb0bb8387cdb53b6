"""Shared fixtures: caches kept out of the user's home, and external tools.

Caches. No test session may write the user's ``~/.cache/madpipe``. When pytest configures the
session, before collection imports any madpipe module or numba, this file points every cache at
one folder, through the environment, so that subprocesses the tests start inherit it too:
``MADPIPE_CACHE_DIR`` (the ahead-of-time kernels) is ``<folder>/madpipe``, ``NUMBA_CACHE_DIR``
(numba's JIT cache) is ``<folder>/numba``, and ``XDG_CACHE_HOME`` (the default of both, and of
matplotlib and scapy) is ``<folder>``. By default the folder is a new temporary one, removed
at the end, so each session builds the ahead-of-time kernels again (~25 s here). To skip that,
set ``MADPIPE_TEST_CACHE_DIR=/some/folder``: sessions reuse it (it is created if missing, and
kept); it may not be, hold or lie inside the user's own madpipe cache. Nested pytest sessions
that tests start reuse the outer session's folder. The session fixture ``isolated_caches`` checks
this is in force and fails the session at its end if the user's madpipe cache changed during it
(compared entry by entry: names, sizes, modification times; it may not exist).

External tools (tshark now; opensm, ibsim, infiniband-diags later). A test that needs a tool
says so with the ``tools`` marker (declared in pyproject.toml)::

    pytestmark = pytest.mark.tools("tshark")

or asks for it through a fixture (``tshark`` below) or ``require_tool(name)``. A missing tool
skips the test locally, with the reason, but fails it when ``MADPIPE_REQUIRE_TOOLS=1``: CI
(tests/run_all.sh) installs every tool first and sets that, so a tool test is never a silent
skip there.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

TEST_CACHE_ENV = "MADPIPE_TEST_CACHE_DIR"
GUARDED_ENV = "MADPIPE_TEST_GUARDED_CACHES"  # set for nested sessions: XDG_CACHE_HOME is ours by then


def user_caches(environ=os.environ) -> list[str]:
    """The user's own madpipe caches (real paths), which no test may write: ~/.cache/madpipe and
    $XDG_CACHE_HOME/madpipe (in a nested session, the outer session's, which it passes on)."""
    if environ.get(GUARDED_ENV):
        return environ[GUARDED_ENV].split(os.pathsep)
    homes = [os.path.join(os.path.expanduser("~"), ".cache")]
    if environ.get("XDG_CACHE_HOME"):
        homes.append(environ["XDG_CACHE_HOME"])
    return sorted({os.path.realpath(os.path.join(home, "madpipe")) for home in homes})


def chosen_cache_root(environ, guarded: list[str]) -> str | None:
    """The folder ``MADPIPE_TEST_CACHE_DIR`` names (absolute), None when unset; a UsageError when
    the session's caches would be, hold or lie inside one of the ``guarded`` folders."""
    chosen = environ.get(TEST_CACHE_ENV)
    if not chosen:
        return None
    root = os.path.realpath(os.path.expanduser(chosen))
    for folder in guarded:
        if os.path.commonpath([folder, root]) in (folder, root):  # either one holds the other
            raise pytest.UsageError(f"{TEST_CACHE_ENV}={chosen} would put the test caches in or around "
                                    f"the user's cache {folder}: name a folder of its own")
    return root


def cache_environment(root: str) -> dict[str, str]:
    """The variables that point every cache under ``root`` (and pass it on to nested sessions)."""
    return {"XDG_CACHE_HOME": root, "MADPIPE_CACHE_DIR": os.path.join(root, "madpipe"),
            "NUMBA_CACHE_DIR": os.path.join(root, "numba"), TEST_CACHE_ENV: root}


def snapshot(folder: str) -> dict[str, tuple[int, int, int]] | None:
    """Every entry under ``folder`` (the folder too) -> (mode, size, mtime in ns); None if absent.

    A folder's mtime changes when an entry is added or removed, so a file written and deleted
    again between two snapshots still shows (within the file system's clock resolution).
    """
    try:
        top = os.lstat(folder)
    except FileNotFoundError:
        return None
    entries = {".": (top.st_mode, top.st_size, top.st_mtime_ns)}
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(parent, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # removed while we walk: a change the next look sees
                continue
            entries[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return entries


def changes(before, after) -> list[str]:
    """What differs between two snapshots, one line an entry."""
    if before is None or after is None:
        return [] if before == after else ["created" if before is None else "removed"]
    out = [f"new {name}" for name in sorted(set(after) - set(before))]
    out += [f"gone {name}" for name in sorted(set(before) - set(after))]
    out += [f"changed {name}" for name in sorted(set(before) & set(after)) if before[name] != after[name]]
    return out


@dataclass
class SessionCaches:
    root: str  # the folder every cache is under
    temporary: bool  # made for this session, removed at its end
    environment: dict[str, str]  # what this file set
    previous: dict[str, str | None]  # what the environment held before
    guarded: dict[str, dict | None]  # the user's caches -> snapshot at the start


_CACHES = pytest.StashKey[SessionCaches]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Point every cache at the session's folder before collection imports anything."""
    guarded = user_caches()
    root = chosen_cache_root(os.environ, guarded)
    temporary = root is None
    if root is None:
        root = tempfile.mkdtemp(prefix="madpipe-tests-")
    env = cache_environment(root)
    for path in env.values():
        os.makedirs(path, exist_ok=True)
    env[GUARDED_ENV] = os.pathsep.join(guarded)
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    config.stash[_CACHES] = SessionCaches(root, temporary, env, previous,
                                          {folder: snapshot(folder) for folder in guarded})


def pytest_unconfigure(config):
    caches = config.stash.get(_CACHES, None)
    if caches is None:
        return
    for name, value in caches.previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if caches.temporary:
        shutil.rmtree(caches.root, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(pytestconfig) -> Iterator[SessionCaches]:
    """The session's cache folders; fails the session at its end if the user's cache changed."""
    caches = pytestconfig.stash[_CACHES]
    for name, value in caches.environment.items():
        assert os.environ.get(name) == value, f"{name} no longer points at the session's caches"
    yield caches
    written = {folder: changes(before, snapshot(folder)) for folder, before in caches.guarded.items()}
    written = {folder: lines for folder, lines in written.items() if lines}
    if written:
        pytest.fail("the session wrote the user's cache: " + "; ".join(
            f"{folder}: {', '.join(lines[:10])}" for folder, lines in written.items()), pytrace=False)


REQUIRE_TOOLS_ENV = "MADPIPE_REQUIRE_TOOLS"


def require_tool(name: str) -> str:
    """Path of the external tool ``name``; skip when it is missing, or fail under MADPIPE_REQUIRE_TOOLS=1."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (tests/run_all.sh installs it)"
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_TOOLS_ENV}=1 forbids skipping tool tests", pytrace=False)
    pytest.skip(reason)


def pytest_report_header(config):
    """Which way the kernels run in this session: every kernel-vs-reference test checks that one."""
    from madpipe.pipeline.kernels import aot, jit

    how = jit.backend()
    why = f" ({aot.failure()})" if how == "numba" and aot.failure() else ""
    return f"madpipe kernels: {how}{why}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Apply ``@pytest.mark.tools("name", ...)`` before any fixture of the test is set up."""
    for mark in item.iter_markers(name="tools"):
        for name in mark.args:
            require_tool(name)


def stop_leftover_processes() -> list[int]:
    """The pids of the processes madpipe's sim started (ibsim, opensm, diags) that were still
    running, after stopping them."""
    from madpipe.pipeline.sim.processes import _stop_all, leftover_processes

    left = leftover_processes()
    _stop_all()
    return left


@pytest.fixture
def no_process_left():
    """Fail a test that leaves an ibsim, opensm or diag of ours running (after stopping it); a module
    that starts them asks for it with ``pytestmark = pytest.mark.usefixtures("no_process_left")``."""
    yield
    left = stop_leftover_processes()
    assert not left, f"processes left running: {left}"


@pytest.fixture(scope="session")
def tshark() -> str:
    """Path of tshark (skip or fail as require_tool says)."""
    return require_tool("tshark")
