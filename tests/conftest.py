"""Shared fixtures. External tools (tshark now; opensm, ibsim, infiniband-diags later).

A test that needs a tool says so with the ``tools`` marker (declared in pyproject.toml)::

    pytestmark = pytest.mark.tools("tshark")

or asks for it through a fixture (``tshark`` below) or ``require_tool(name)``. A missing tool
skips the test locally, with the reason, but fails it when ``MADPIPE_REQUIRE_TOOLS=1``: CI
(tests/run_all.sh) installs every tool first and sets that, so a tool test is never a silent
skip there.
"""
from __future__ import annotations

import os
import shutil

import pytest

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
    from madpipe.pipeline.kernels import aot
    from madpipe.pipeline.kernels import jit

    how = jit.backend()
    why = f" ({aot.failure()})" if how == "numba" and aot.failure() else ""
    return f"madpipe kernels: {how}{why}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Apply ``@pytest.mark.tools("name", ...)`` before any fixture of the test is set up."""
    for mark in item.iter_markers(name="tools"):
        for name in mark.args:
            require_tool(name)


@pytest.fixture(scope="session")
def tshark() -> str:
    """Path of tshark (skip or fail as require_tool says)."""
    return require_tool("tshark")
