"""Traces of QP-modify commands, the input of ``madpipe paravirt -r TRACE -w OUT``.

One record is one command a function sent the mlx4 master: the transition, the issuing function
(``slave``), the command's input modifier (``in_mod``, whose low 24 bits are the QP number) and
the 256-byte QP-context mailbox (optpar, reserved, ``struct mlx4_qp_context``; see
``madpipe.codecs.qpc``). Three encodings, told apart by the first bytes of the file:

**JSON Lines** (text, one object per line, blank lines ignored, other keys ignored)::

    {"transition": "INIT2RTR", "slave": 1, "in_mod": 123, "mailbox": "<512 hex digits>"}

- ``transition``: one of RST2INIT, INIT2INIT, INIT2RTR, RTR2RTS, RTS2RTS, SQERR2RTS, 2ERR,
  RTS2SQD, SQD2SQD, SQD2RTS, 2RST, QUERY;
- ``slave``: integer 0..65535 (0..79 are real functions; larger values are kept so that the
  model's handling of bad function numbers can be replayed);
- ``in_mod``: integer 0..4294967295;
- ``mailbox``: the 256 bytes as 512 hexadecimal digits (either case), in mailbox order.

**Binary** (for speed): a 24-byte header, then fixed 264-byte records, all integers
little-endian except inside the mailbox, which is kept byte for byte::

    header   0  16  magic b"madpipe-qptrace\\0"
            16   4  u32 version = 1
            20   4  u32 record size = 264
    record   0   1  u8  transition (the mlx4 opcode: INIT2RTR = 0x1a, see paravirt.TRANSITIONS)
             1   1  u8  reserved, 0
             2   2  u16 slave
             4   4  u32 in_mod
             8 256  mailbox

**ftrace text**: the ``trace`` or ``trace_pipe`` output of the kprobe events that
``madpipe paravirt --trace-recipe`` sets on a running mlx4 master (read only; see
:mod:`madpipe.pipeline.mlx4.trace_ftrace` for the event layout and what is skipped).

A binary trace is a numpy structured array (:data:`RECORD`) after the header, so
``np.fromfile(path, RECORD, offset=24)`` reads one too. Errors are :class:`TraceError`, one line
naming the file, the line or record number (1-based) and the field.
"""
from __future__ import annotations

import json
import os
import sys
from typing import NamedTuple

import numpy as np

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.mlx4 import paravirt
from madpipe.pipeline.mlx4.trace_ftrace import FtraceError, FtraceSkips, looks_like_ftrace, read_ftrace

MAGIC = b"madpipe-qptrace\0"
#: How much of a text trace is decoded to tell ftrace text from JSON Lines (an event line is ~1.4 KB).
SNIFF_BYTES = 64 * 1024
VERSION = 1
HEADER = np.dtype([("magic", "S16"), ("version", "<u4"), ("record_size", "<u4")])
RECORD = np.dtype([("transition", "u1"), ("reserved", "u1"), ("slave", "<u2"), ("in_mod", "<u4"),
                   ("mailbox", "u1", (256,))])
MAILBOX_HEX_DIGITS = 512
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
SLAVE_MAX = 0xFFFF
IN_MOD_MAX = 0xFFFFFFFF


class TraceError(MadpipeError):
    """A trace that cannot be read or written: file, line or record, field and reason."""


class Trace(NamedTuple):
    """A trace as arrays, ready for ``paravirt.rewrite(trace.mailbox, trace.transition, ...)``."""
    transition: np.ndarray   # uint8[N], mlx4 opcodes
    slave: np.ndarray        # int32[N]
    in_mod: np.ndarray       # uint32[N]
    mailbox: np.ndarray      # uint8[N, 256]

    @property
    def n(self) -> int:
        """The number of records (``len(trace)`` is the tuple's 4 fields)."""
        return len(self.transition)

    def names(self) -> list[str]:
        """The transition of each record by name."""
        return [paravirt.TRANSITION_NAMES[int(code)] for code in self.transition]


def _label(path) -> str:
    return "<stdin>" if path == "-" else os.fspath(path)


def read_trace(path) -> Trace:
    """Read a JSON Lines or binary trace (``"-"`` reads standard input)."""
    return read_trace_with_format(path)[0]


def read_trace_with_format(path) -> tuple[Trace, str]:
    """:func:`read_trace`, and the encoding it found: ``"binary"``, ``"json"`` (JSON Lines) or ``"ftrace"``."""
    trace, encoding, _ = read_trace_with_skips(path)
    return trace, encoding


def read_trace_with_skips(path) -> tuple[Trace, str, FtraceSkips]:
    """:func:`read_trace_with_format`, and what an ftrace text had besides QP-modify records
    (other events, lost events; empty for the other encodings)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise TraceError(f"{_label(path)}: cannot read: {exc.strerror or exc}") from None
    if data.startswith(MAGIC):
        return _read_binary(_label(path), data), "binary", FtraceSkips()
    # Told apart by the first line that is not blank: decoding and splitting a whole JSON Lines
    # trace (hundreds of MB) to look at it would cost as much as reading it.
    if looks_like_ftrace(data[:SNIFF_BYTES].decode("utf-8", errors="replace")):
        text = data.decode("utf-8", errors="replace")  # a task name in other events' lines may be anything
        try:
            arrays, skips = read_ftrace(text, SLAVE_MAX)
        except FtraceError as exc:
            raise TraceError(f"{_label(path)}: {exc}") from None
        return Trace(*arrays), "ftrace", skips
    return _read_jsonl(_label(path), data), "json", FtraceSkips()


def _read_binary(label: str, data: bytes) -> Trace:
    if len(data) < HEADER.itemsize:
        raise TraceError(f"{label}: binary trace header truncated ({len(data)} of {HEADER.itemsize} bytes)")
    header = np.frombuffer(data, HEADER, count=1)[0]
    if int(header["version"]) != VERSION:
        raise TraceError(f"{label}: header field version: unsupported version {int(header['version'])}, "
                         f"expected {VERSION}")
    if int(header["record_size"]) != RECORD.itemsize:
        raise TraceError(f"{label}: header field record_size: expected {RECORD.itemsize}, "
                         f"got {int(header['record_size'])}")
    body = len(data) - HEADER.itemsize
    n, rest = divmod(body, RECORD.itemsize)
    if rest:
        raise TraceError(f"{label}: record {n + 1}: truncated ({rest} of {RECORD.itemsize} bytes)")
    records = np.frombuffer(data, RECORD, count=n, offset=HEADER.itemsize)
    bad = np.flatnonzero(~np.isin(records["transition"], list(paravirt.TRANSITION_NAMES)))
    if bad.size:
        i = int(bad[0])
        raise TraceError(f"{label}: record {i + 1}: field transition: unknown opcode "
                         f"{int(records['transition'][i]):#04x}")
    bad = np.flatnonzero(records["reserved"])
    if bad.size:
        raise TraceError(f"{label}: record {int(bad[0]) + 1}: field reserved: expected 0, "
                         f"got {int(records['reserved'][bad[0]])}")
    return Trace(records["transition"].copy(), records["slave"].astype(np.int32),
                 records["in_mod"].astype(np.uint32), np.ascontiguousarray(records["mailbox"]))


def _field_int(label, lineno, obj, name, hi) -> int:
    if name not in obj:
        raise TraceError(f"{label}: line {lineno}: field {name}: missing")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(f"{label}: line {lineno}: field {name}: expected an integer, got {json.dumps(value)}")
    if not 0 <= value <= hi:
        raise TraceError(f"{label}: line {lineno}: field {name}: expected 0..{hi}, got {value}")
    return value


def _read_jsonl(label: str, data: bytes) -> Trace:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(f"{label}: line {lineno}: not UTF-8 text (and not a binary trace)") from None
    codes, slaves, in_mods, boxes = [], [], [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{label}: line {lineno}: not JSON: {exc.msg} at column {exc.colno}") from None
        except ValueError:  # json turns an integer of over sys.get_int_max_str_digits() digits down
            raise TraceError(f"{label}: line {lineno}: an integer too long to read "
                             f"(over {sys.get_int_max_str_digits()} digits)") from None
        except RecursionError:
            raise TraceError(f"{label}: line {lineno}: not JSON madpipe reads: arrays or objects nested "
                             "too deeply") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{label}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        name = obj.get("transition")
        if name is None:
            raise TraceError(f"{label}: line {lineno}: field transition: missing")
        if not isinstance(name, str) or name not in paravirt.TRANSITIONS:
            raise TraceError(f"{label}: line {lineno}: field transition: unknown {json.dumps(name)[:40]}; "
                             f"valid: {', '.join(paravirt.TRANSITIONS)}")
        slave = _field_int(label, lineno, obj, "slave", SLAVE_MAX)
        in_mod = _field_int(label, lineno, obj, "in_mod", IN_MOD_MAX)
        hexdigits = obj.get("mailbox")
        if hexdigits is None:
            raise TraceError(f"{label}: line {lineno}: field mailbox: missing")
        if not isinstance(hexdigits, str) or len(hexdigits) != MAILBOX_HEX_DIGITS:
            got = f"{len(hexdigits)} characters" if isinstance(hexdigits, str) else json.dumps(hexdigits)[:40]
            raise TraceError(f"{label}: line {lineno}: field mailbox: expected {MAILBOX_HEX_DIGITS} "
                             f"hex digits, got {got}")
        try:
            box = bytes.fromhex(hexdigits)
        except ValueError:
            box = b""
        if len(box) != 256:  # not hexadecimal, or whitespace, which bytes.fromhex skips
            col = next(i for i, c in enumerate(hexdigits) if c not in HEX_DIGITS)
            raise TraceError(f"{label}: line {lineno}: field mailbox: not hexadecimal "
                             f"(character {col + 1}: {hexdigits[col]!r})") from None
        codes.append(paravirt.TRANSITIONS[name])
        slaves.append(slave)
        in_mods.append(in_mod)
        boxes.append(box)
    mailbox = np.frombuffer(b"".join(boxes), dtype=np.uint8).reshape(len(boxes), 256).copy()
    return Trace(np.array(codes, dtype=np.uint8), np.array(slaves, dtype=np.int32),
                 np.array(in_mods, dtype=np.uint32), mailbox)


def write_trace(path, transition, slave, in_mod, mailboxes, *, binary: bool = False) -> int:
    """Write a trace (``"-"``: standard output); returns the number of records.

    transition: names or opcodes, one or per record; slave, in_mod: int or per record;
    mailboxes: ``uint8[N, 256]``. ``binary=True`` writes the binary form.
    """
    label = _label(path)
    if not isinstance(mailboxes, np.ndarray) or mailboxes.dtype != np.uint8 or mailboxes.ndim != 2 \
            or mailboxes.shape[1] != 256:
        shape = getattr(mailboxes, "shape", None)
        raise TraceError(f"{label}: mailboxes: expected a uint8 array of shape (N, 256), got "
                         f"{getattr(mailboxes, 'dtype', type(mailboxes).__name__)} {shape}")
    n = mailboxes.shape[0]
    try:
        codes = paravirt._transitions(transition, n)
        slaves = paravirt._integers("slave", slave, n, 0, SLAVE_MAX, np.int64)
        in_mods = paravirt._integers("in_mod", in_mod, n, 0, IN_MOD_MAX, np.int64)
    except ValueError as exc:
        raise TraceError(f"{label}: {exc}") from None
    if binary:
        header = np.array([(MAGIC, VERSION, RECORD.itemsize)], dtype=HEADER)
        records = np.zeros(n, dtype=RECORD)
        records["transition"] = codes
        records["slave"] = slaves
        records["in_mod"] = in_mods
        records["mailbox"] = mailboxes
        payload = header.tobytes() + records.tobytes()
    else:
        lines = []
        for i in range(n):
            lines.append(json.dumps({"transition": paravirt.TRANSITION_NAMES[int(codes[i])],
                                     "slave": int(slaves[i]), "in_mod": int(in_mods[i]),
                                     "mailbox": mailboxes[i].tobytes().hex()}) + "\n")
        payload = "".join(lines).encode("ascii")
    try:
        if path == "-":
            sys.stdout.buffer.write(payload)
            sys.stdout.buffer.flush()
        else:
            with open(path, "wb") as f:
                f.write(payload)
    except OSError as exc:
        raise TraceError(f"{label}: cannot write: {exc.strerror or exc}") from None
    return n
