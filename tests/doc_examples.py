"""The examples of madpipe's documentation, as text, and what running them needs.

Read from the text every time, never copied: the README's ```sh and ```python blocks and each
``--help`` epilog's ``examples:`` lines (tests/test_doc_examples.py runs them). A README block
without a language is one of:

- ``<!-- output of: COMMAND -->`` on the line before it: what COMMAND (a README command, written
  the same way) prints. Lines must appear in the output in order and consecutively; a line
  ``...`` stands for any lines. ``<!-- output of: COMMAND; numbers vary -->``: any number
  matches any number (times, byte counts of a live run).
- ``<!-- file: NAME -->``: the contents of a file the examples name (written into their folder).
- ``<!-- not checked: WHY -->``: anything else (a format sketch).

Everything an example needs that the text cannot say is in the tables below: edit them, not the
tests, when a new example names a new placeholder file, needs a tool or takes long.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIM_NET = "/usr/share/doc/ibsim-utils/net-examples/net.2sw2path4hca"

#: Placeholder names in the examples -> the bundled file or folder that stands for them (relative
#: to the checkout). Each is made in the folder an example runs in; a name with a "/" at its end
#: is a folder. A placeholder that is an absolute path is rewritten to the relative one in the
#: command line (the examples cannot write /shared or /opt).
PLACEHOLDERS: dict[str, str | list[str] | dict[str, str] | None] = {
    "capture.pcap": "pcaps/opensm_partitions_changed.pcap",
    "in.pcap": "pcaps/opensm_partitions.pcap",
    "cap.pcap": "pcaps/opensm_partitions.pcap",
    "monday.pcap": "pcaps/opensm_partitions.pcap",
    "today.pcap": "pcaps/opensm_partitions_changed.pcap",
    "big.pcap": "pcaps/opensm_partitions_queries.pcap",
    "a.conf": "pcaps/partitions-a.conf",
    "b.conf": "pcaps/partitions-b.conf",
    "/etc/opensm/partitions.conf": "pcaps/partitions-a.conf",  # opensm's default -P file
    "trace.jsonl": "tests/data/paravirt_example.jsonl",
    "qp.txt": "tests/data/paravirt_example_ftrace.txt",  # what record-qp.sh writes on a real master
    "vfs.map": "tests/data/paravirt_vfs.map",
    "monday/": ["pcaps/opensm_partitions.pcap"],
    "captures/": ["pcaps/opensm_partitions.pcap", "pcaps/opensm_partitions_changed.pcap"],
    # ibdump's default file name in two folders: the common case of several nodes' captures.
    "node1/": {"sniffer.pcap": "pcaps/opensm_partitions.pcap"},
    "node2/": {"sniffer.pcap": "pcaps/opensm_partitions_changed.pcap"},
    "/var/log/ibdump/": ["pcaps/opensm_partitions.pcap", "pcaps/opensm_partitions_changed.pcap"],
    "/shared/captures/": ["pcaps/opensm_partitions.pcap", "pcaps/opensm_partitions_changed.pcap"],
    "/shared/frames/": None,  # an output folder: only the path is rewritten
    "/opt/madpipe/cache": None,
}

#: Files made by a command before the examples run (placeholders no bundled file stands for).
MADE_BY = {
    "trace.bin": "madpipe paravirt -r tests/data/paravirt_example.jsonl -w trace.bin --binary -q",
}

#: Text replaced in a command line before it runs, and why. Keep this short: each is a way the
#: test runs something other than what the reader types.
REWRITES = {
    "tcp://scheduler:8786": "local",  # no scheduler to hand; the same code path with a local cluster
    ".../libumad2sim.so": "/usr/lib/x86_64-linux-gnu/umad2sim/libumad2sim.so",
}

#: Examples that run for minutes as written, shortened (the same code paths, fewer cases).
SHORTER = {
    "--count 1000000": "--count 4096",
    "--count 100000": "--count 512",  # whole files: ~0.07 s of CPU a case
    "--seconds 60": "--seconds 5",
    "-max_total_time=600": "-max_total_time=5",
    "--count 200 -w diag-findings/": "--count 40 -w diag-findings/",
    "--target opensm --seed 1 --count 100": "--target opensm --seed 1 --count 1",
    # Its JSON records: every group already ran in `madpipe bench`; the startup group alone takes
    # a minute here (a cold JIT compile and an ahead-of-time build, timed).
    "madpipe bench -T json": "madpipe bench --what snoop,api -T json",
}
#: madpipe bench's examples get this appended (its --n defaults to 1M; the last --n wins; the
#: slow ways, scapy and the references, run on --subset items).
BENCH_SHORTER = " --n 10000 --repeat 1 --subset 1000"

#: Command patterns (regular expressions, searched) -> what they need.
TOOLS = {
    r"madpipe capture --sim|SimCapture": ("ibsim", "opensm"),
    r"--queries": ("ibnetdiscover", "smpquery"),
    r"madpipe replay .*--(sim|umad)|^ibsim ": ("ibsim",),
    r"--target all": ("tshark", "ibsim", "opensm"),
    r"\| *jq ": ("jq",),
    r"--target (opensm|diags)": ("ibsim", "opensm", "ibnetdiscover", "smpquery", "perfquery"),
    r"^python fuzz/atheris": ("python-atheris",),
}
#: Command patterns whose block is marked slow (seconds or more each).
SLOW = [r"madpipe fuzz", r"madpipe bench", r"madpipe build-kernels", r"madpipe capture", r"SimCapture",
        r"madpipe replay", r"--dask", r"madpipe report", r"atheris", r"hypothesis"]
#: Exit statuses other than 0 that an example may end with, by pattern.
STATUS = {r"(^|\| *)madpipe diff ": (0, 1),  # diff(1)'s: 1 when the captures differ
          r"^madpipe check ": (0, 1)}  # 1 when a capture breaks the policy
#: Commands that are not run, by pattern, and why.
NOT_RUN = {
    r"^bash tests/run_all\.sh": "the whole test suite (CI runs it)",
    r"python -m pytest": "the test suite itself",
    r"^pip install": "an install: tests/test_doc_examples.py checks the extra it names exists",
    r"^sudo sh record-qp\.sh": "kprobes on mlx4_core, as root, on a master with mlx4 hardware",
}
#: Examples known to fail as written (a command line, or text a Python block holds) -> why: a
#: strict xfail, so the change that fixes one fails here until its line is removed.
KNOWN_BROKEN: dict[str, str] = {}  # command (or text) -> why it is expected to fail: none now
#: A command running longer than this fails (a hang is a failure, not a stuck suite).
TIMEOUT = 120


@dataclass
class Output:
    command: str
    lines: list[str]
    numbers_vary: bool
    where: str


@dataclass
class Block:
    """Examples run together, in order, in one folder: a README code block or a help's examples."""
    where: str  # "README.md:123" or "madpipe snoop --help"
    language: str  # "sh" or "python"
    text: str
    commands: list[str] = field(default_factory=list)  # sh: one shell command line each
    # Shell variables set by earlier README blocks (a reader's shell keeps them: T=... once).
    variables: dict[str, str] = field(default_factory=dict)


ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)=(\S+)")


def strip_comment(line: str) -> str:
    """``line`` without its shell comment (a ``#`` after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(text: str) -> list[str]:
    """The command lines of shell text: continuations joined, comments and blank lines dropped."""
    commands, pending = [], ""
    for raw in text.splitlines():
        line = strip_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        if line:
            commands.append(line)
    return commands


def normal(command: str) -> str:
    return " ".join(command.split())


_ANNOTATION = re.compile(r"<!--\s*(output of|file|not checked):\s*(.*?)\s*-->")


def readme(path: Path = ROOT / "README.md") -> tuple[list[Block], list[Output], dict[str, str], list[str]]:
    """The README's sh and python blocks, its output samples, its example files, and the places of
    blocks without a language that say nothing of what they are."""
    blocks: list[Block] = []
    outputs: list[Output] = []
    files: dict[str, str] = {}
    unlabelled: list[str] = []
    variables: dict[str, str] = {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = lines[start + 1:end]
        where = f"{path.name}:{start + 1}"
        language = fence.group(1)
        if language in ("sh", "bash", "console", "shell"):
            text = "\n".join(body)
            blocks.append(Block(where, "sh", text, shell_commands(text), dict(variables)))
            for command in blocks[-1].commands:
                if ASSIGNMENT.fullmatch(command):
                    name, value = command.split("=", 1)
                    variables[name] = value
        elif language == "python":
            blocks.append(Block(where, "python", "\n".join(body)))
        elif not language:
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            note = _ANNOTATION.search(before)
            if not note:
                unlabelled.append(where)
            elif note.group(1) == "output of":
                command, _, flags = note.group(2).partition(";")
                outputs.append(Output(normal(command), body, "numbers vary" in flags, where))
            elif note.group(1) == "file":
                files[note.group(2)] = "\n".join(body) + "\n"
        i = end + 1
    return blocks, outputs, files, unlabelled


def epilog_examples(epilog: str) -> list[str]:
    """The command lines under ``examples:`` in a help epilog (indented lines up to a blank one)."""
    lines = epilog.splitlines()
    try:
        at = next(i for i, line in enumerate(lines) if line.strip() == "examples:")
    except StopIteration:
        return []
    section = []
    for line in lines[at + 1:]:
        if not line.strip() or not line[0].isspace():
            break
        section.append(line)
    return shell_commands("\n".join(section))


def help_blocks() -> list[Block]:
    """Each command's ``examples:`` (and the top-level help's), as the parser prints them."""
    from madpipe.pipeline.cli.main import COMMANDS, build_parser, command_parser

    blocks = [Block("madpipe --help", "sh", "", epilog_examples(build_parser().epilog or ""))]
    for name in COMMANDS:
        epilog = command_parser(name).epilog or ""
        blocks.append(Block(f"madpipe {name} --help", "sh", epilog, epilog_examples(epilog)))
    return blocks


def matching(table: dict, text: str) -> list:
    return [value for pattern, value in table.items() if re.search(pattern, text, re.M)]


def needs(block: Block) -> set[str]:
    text = "\n".join(block.commands) if block.language == "sh" else block.text
    return {tool for tools in matching(TOOLS, text) for tool in tools}


def known_broken(block: Block) -> list[str]:
    return [why for key, why in KNOWN_BROKEN.items()
            if key in block.commands or any(key in c for c in block.commands) or key in block.text]


def is_slow(block: Block) -> bool:
    text = "\n".join(block.commands) if block.language == "sh" else block.text
    return any(re.search(pattern, text, re.M) for pattern in SLOW)


def as_run(command: str) -> str:
    """The command line the test runs for ``command`` (the tables' rewrites applied)."""
    for table in (REWRITES, SHORTER):
        for old, new in table.items():
            command = command.replace(old, new)
    for name in PLACEHOLDERS:
        if name.startswith("/"):
            command = command.replace(name, name.strip("/").replace("/", "_") + ("/" if name.endswith("/") else ""))
    if re.match(r"^madpipe bench\b", command):
        head, pipe, tail = command.partition(" >")
        command = head + BENCH_SHORTER + pipe + tail
    return command


def quote(words) -> str:
    return " ".join(shlex.quote(w) for w in words)
