"""Every example in the README and in every ``--help`` runs as written (issue 18).

The examples are read from the text (tests/doc_examples.py says how, and holds the one table of
placeholder files, tools and rewrites); each block runs in a fresh folder holding the bundled
captures under the names the examples use, with ``madpipe`` and ``python`` on PATH being this
checkout's. A command must end with status 0 (or one its table entry allows) and no traceback;
where the README shows output, the output must hold it.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import doc_examples as docs
import pytest
from conftest import require_tool

README_BLOCKS, README_OUTPUTS, README_FILES, UNLABELLED = docs.readme()
BLOCKS = README_BLOCKS + docs.help_blocks()


def _param(block: docs.Block):
    marks = [pytest.mark.slow] if docs.is_slow(block) else []
    broken = docs.known_broken(block)
    if broken:
        marks.append(pytest.mark.xfail(reason="; ".join(broken), strict=True))
    return pytest.param(block, marks=marks, id=block.where.replace(" ", "_"))


def _free_port() -> int:
    """A base port with the next 16 free too (ibsim takes a range from its base)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base < 60000:
            return base
    raise RuntimeError("no free port")


def _place(folder: Path, name: str, source) -> None:
    target = folder / name.strip("/").replace("/", "_") if name.startswith("/") else folder / name
    if source is None:
        return
    if isinstance(source, str):
        shutil.copyfile(docs.ROOT / source, target)
        return
    target.mkdir(parents=True, exist_ok=True)
    items = source.items() if isinstance(source, dict) else ((Path(s).name, s) for s in source)
    for file_name, path in items:
        shutil.copyfile(docs.ROOT / path, target / file_name)


def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder as the examples expect one (the checkout's pcaps/, tests/, fuzz/ and every
    placeholder), and the environment to run them in."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("pcaps", "tests", "fuzz"):
        (work / name).symlink_to(docs.ROOT / name)
    for name, source in docs.PLACEHOLDERS.items():
        _place(work, name, source)
    for name, text in README_FILES.items():
        (work / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "madpipe").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m madpipe.pipeline.cli "$@"\n')
    (bin_dir / "madpipe").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env["PYTHONPATH"], str(docs.ROOT / "tests")) if p)
    for command in docs.MADE_BY.values():
        subprocess.run(["bash", "-c", command], cwd=work, env=env, check=True, capture_output=True)
    return work, env


def _check_tools(block: docs.Block) -> None:
    for tool in sorted(docs.needs(block)):
        if tool == "python-atheris":
            try:
                import atheris  # noqa: F401
            except ImportError:
                require_tool("atheris-python-module")  # skips locally, fails under MADPIPE_REQUIRE_TOOLS=1
        else:
            require_tool(tool)


def run_shell(block: docs.Block, work: Path, env: dict[str, str]) -> dict[str, str]:
    """Run the block's commands in order; return each command's stdout + stderr by its text."""
    port = str(_free_port())
    env.update(block.variables)
    printed: dict[str, str] = {}
    background: list[subprocess.Popen] = []
    try:
        for command in block.commands:
            if any(re.search(p, command) for p in docs.NOT_RUN):
                continue
            line = docs.as_run(command).replace("7070", port)
            assignment = docs.ASSIGNMENT.fullmatch(line)
            if assignment:  # a variable for the next lines, as the shell keeps it
                env[assignment.group(1)] = os.path.expandvars(assignment.group(2))
                continue
            if line.endswith("&"):
                background.append(subprocess.Popen(["bash", "-c", line[:-1]], cwd=work, env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
                _wait_for_udp(int(port))
                continue
            try:
                done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=docs.TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{block.where}: `{command}` still running after {docs.TIMEOUT} s")
            allowed = next(iter(docs.matching(docs.STATUS, command)), (0,))
            said = (done.stderr or done.stdout)[-1500:]
            assert done.returncode in allowed, f"{block.where}: `{command}` exit {done.returncode}:\n{said}"
            assert "Traceback" not in done.stderr, f"{block.where}: `{command}`:\n{said}"
            printed[docs.normal(command)] = done.stdout + done.stderr
    finally:
        for proc in background:  # stopped by its process group, which this test started
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
    return printed


def _wait_for_udp(port: int, seconds: float = 5.0) -> None:
    """Until something holds ``port`` (a simulator started in the background), at most ``seconds``."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)


def shows(output: str, sample: docs.Output) -> str | None:
    """None when ``output`` holds the sample (``...`` for any lines), else what is missing."""
    got = [line.rstrip() for line in output.splitlines()]
    chunks, chunk = [], []
    for line in sample.lines:
        if line.strip() == "...":
            chunks.append(chunk)
            chunk = []
        else:
            chunk.append(line.rstrip())
    chunks.append(chunk)

    def same(want: str, have: str) -> bool:
        if not sample.numbers_vary:
            return want == have
        pattern = re.sub(r"\\\d(\\\d)*(\\\.\\\d+)?|\d+(\.\d+)?", r"\\d+(?:\\.\\d+)?", re.escape(want))
        return re.fullmatch(pattern, have) is not None

    at = 0
    for chunk in (c for c in chunks if c):
        found = next((i for i in range(at, len(got) - len(chunk) + 1)
                      if all(same(w, got[i + k]) for k, w in enumerate(chunk))), None)
        if found is None:
            return "\n".join(chunk)
        at = found + len(chunk)
    return None


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS if b.language == "sh" and b.commands])
def test_shell_example(block, tmp_path):
    _check_tools(block)
    work, env = workspace(tmp_path)
    printed = run_shell(block, work, env)
    for sample in README_OUTPUTS:
        if sample.command in printed:
            missing = shows(printed[sample.command], sample)
            assert missing is None, (f"{sample.where}: `{sample.command}` does not print (in this order):\n"
                                     f"{missing}\n--- it printed:\n{printed[sample.command][:4000]}")


@pytest.mark.parametrize("block", [_param(b) for b in README_BLOCKS if b.language == "python"])
def test_python_example(block, tmp_path):
    _check_tools(block)
    work, env = workspace(tmp_path)
    done = subprocess.run([sys.executable, "-c", block.text], cwd=work, env=env, capture_output=True, text=True,
                          timeout=docs.TIMEOUT)
    assert done.returncode == 0, f"{block.where}:\n{done.stderr[-3000:]}"


def test_every_output_sample_names_a_command_the_readme_runs():
    commands = {docs.normal(c) for b in README_BLOCKS for c in b.commands}
    assert README_OUTPUTS, "the README shows no output sample"
    for sample in README_OUTPUTS:
        assert sample.command in commands, f"{sample.where}: no README command reads `{sample.command}`"


def test_every_plain_block_says_what_it_is():
    # A block without a language is an output sample (checked), a file the examples use, or says
    # why it is not checked: see tests/doc_examples.py.
    assert UNLABELLED == [], ("add <!-- output of: COMMAND -->, <!-- file: NAME --> or "
                              "<!-- not checked: WHY --> before the block at " + ", ".join(UNLABELLED))


def test_every_help_has_examples():
    from madpipe.pipeline.cli.main import COMMANDS

    helps = {b.where: b for b in BLOCKS if b.where.endswith("--help")}
    for name in ["", *COMMANDS]:
        where = f"madpipe {name} --help".replace("  ", " ")
        assert helps[where].commands, f"{where} has no examples"


def test_pip_extras_named_exist_and_install_from_the_checkout():
    extras = tomllib.loads((docs.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = [c for b in BLOCKS for c in b.commands if c.startswith("pip install")]
    assert installs
    for command in installs:
        for spec in re.findall(r"'([^']*)'", command) + [w for w in command.split() if w.startswith(".")]:
            # From a checkout: '.[extra]' (a bare 'madpipe[extra]' asks an index for madpipe).
            assert re.fullmatch(r"\.(\[[\w,]+\])?", spec), f"`{command}`: install {spec!r} from the checkout"
            for extra in re.findall(r"\[([\w,]+)\]", spec):
                assert set(extra.split(",")) <= set(extras), f"`{command}`: no extra {extra}"


def test_help_texts_show_no_format_escapes():
    from madpipe.pipeline.cli.main import COMMANDS, build_parser, command_parser

    for text in [build_parser().format_help()] + [command_parser(name).format_help() for name in COMMANDS]:
        assert "%%" not in text, text[:200]


def test_extractor_reads_continuations_comments_and_quotes():
    text = ("madpipe decode -r x.pcap -Y 'a==1 # not a comment'   # a comment\n"
            "madpipe capture --sim $T \\\n    --then b.conf -w ab.pcap\n\n# only a comment\n")
    assert docs.shell_commands(text) == ["madpipe decode -r x.pcap -Y 'a==1 # not a comment'",
                                         "madpipe capture --sim $T --then b.conf -w ab.pcap"]
    assert docs.epilog_examples("intro\n\nexamples:\n  madpipe a   # x\n  madpipe b\n\nenvironment:\n  X=1\n") == [
        "madpipe a", "madpipe b"]
    sample = docs.Output("c", ["one", "two", "...", "four"], False, "here")
    assert shows("zero\none\ntwo\nthree\nfour\n", sample) is None
    assert shows("one\nthree\ntwo\nfour\n", sample) == "one\ntwo"  # consecutive unless "..."
    varying = docs.Output("c", ["  1     0.000    0.037    248  opensm"], True, "here")
    assert shows("  1     0.001    0.041    251  opensm\n", varying) is None
    assert shows("  1     0.001    0.041    251  smpquery\n", varying) is not None
