"""QP-modify commands recorded on a running mlx4 master with kprobe events, read from ftrace text.

mlx4 has no tracepoints for its command interface (mainline ``drivers/net/ethernet/mellanox/mlx4``
has no ``trace_*`` event of its own), so the recipe (:func:`recipe`, printed by
``madpipe paravirt --trace-recipe``) puts a kprobe on each QP-modify wrapper that has an inbox.
``mlx4_master_process_vhcr`` (cmd.c) calls them for every VF command and for the master's own
``mlx4_qp_modify`` (``native`` = 0 goes through ``mlx4_slave_cmd``), as
``cmd->wrapper(dev, slave, vhcr, inbox, outbox, cmd)``, before any rewrite: at function entry the
inbox holds the mailbox exactly as the function sent it. Each event records::

    slave   = 2nd argument (int)                                        :s32
    op      = vhcr->op, struct mlx4_vhcr offset 24 (u64 in_param, u64 out_param,
              u32 in_modifier, u32 errno, u16 op, ...; mlx4.h)          :x16
    in_mod  = vhcr->in_modifier, offset 16                              :x32
    mbox0..mbox3 = 4 x 64 bytes of inbox->buf (struct mlx4_cmd_mailbox: void *buf is the
              first member, include/linux/mlx4/cmd.h), so +K(+0(inbox))  :x8[64]

Four x8[64] arrays because a probe array holds at most 64 elements (MAX_ARRAY_LEN,
kernel/trace/trace_probe.h), and bytes (not x32 words) so the text does not depend on the traced
machine's byte order. Array types need Linux 4.20 or later.

The kernel prints each event (``print_kprobe_event``, kernel/trace/trace_kprobe.c, and
``print_probe_args``, trace_probe_tmpl.h) after the usual ftrace context, as in ``trace`` and
``trace_pipe``::

    <task>-<pid> [<cpu>] <flags> <seconds>.<us>: qp_INIT2RTR: (mlx4_INIT2RTR_QP_wrapper+0x0/0x5d0 [mlx4_core]) slave=3 op=0x1a in_mod=0x1230 mbox0={0x0,0x0,...} mbox1={...} mbox2={...} mbox3={...}

Lines of other events are skipped and counted by event name; ``CPU:N [LOST M EVENTS]`` lines
(the ring buffer overflowed) are counted; ``#`` header lines and blank lines are ignored. A line
of a QP-modify event (one with an ``mbox0`` field) that cannot be read is an error naming the line and field.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from madpipe.pipeline.mlx4 import paravirt

#: The wrappers that take an inbox (cmd.c ``cmd_info[]``: ``.has_inbox = true``). 2ERR, RTS2SQD,
#: QUERY (mlx4_GEN_QP_wrapper) and 2RST carry no mailbox, and the master rewrites nothing for them.
WRAPPERS = {name: f"mlx4_{name}_QP_wrapper" for name in
            ("RST2INIT", "INIT2INIT", "INIT2RTR", "RTR2RTS", "RTS2RTS", "SQERR2RTS", "SQD2SQD", "SQD2RTS")}
GROUP = "madpipe"
EVENT_PREFIX = "qp_"
MBOX_FIELDS = ("mbox0", "mbox1", "mbox2", "mbox3")
MBOX_PART = 64
VHCR_IN_MODIFIER = 16   # offsetof(struct mlx4_vhcr, in_modifier)
VHCR_OP = 24            # offsetof(struct mlx4_vhcr, op)
#: The wrapper's arguments 2, 3, 4 (slave, vhcr, inbox) as x86-64 registers (System V ABI: rdi,
#: rsi, rdx, rcx, ...); ``$arg2``.. works on any architecture with function-argument access.
X86_64_ARGS = ("%si", "%dx", "%cx")
GENERIC_ARGS = ("$arg2", "$arg3", "$arg4")

_EVENT_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>[^\s:]+):(?P<body>.*)$")
_LOST = re.compile(r"^CPU:(?P<cpu>\d+) \[LOST (?:(?P<n>\d{1,20}) )?EVENTS\]\s*$")  # trace.c print_trace_line
_BODY = re.compile(r"^\s*\((?P<ip>[^)]*)\)(?P<args>(?:\s+\w+=\S*)*)\s*$")
_ARG = re.compile(r"\s+(\w+)=(\S*)")
_INT = re.compile(r"^(?:0x(?P<hex>[0-9a-fA-F]{1,16})|(?P<dec>-?[0-9]{1,20}))$")  # "0x%x" or "%d"/"%u"
_BYTE = re.compile(r"^0x[0-9a-fA-F]{1,2}$")


def probe_args(slave: str, vhcr: str, inbox: str) -> str:
    """The fetch arguments of one event, given how to fetch the wrapper's arguments 2, 3 and 4."""
    boxes = " ".join(f"{name}=+{i * MBOX_PART}(+0({inbox})):x8[{MBOX_PART}]" for i, name in enumerate(MBOX_FIELDS))
    return (f"slave={slave}:s32 op=+{VHCR_OP}({vhcr}):x16 in_mod=+{VHCR_IN_MODIFIER}({vhcr}):x32 {boxes}")


def probe_definitions(args=X86_64_ARGS, group: str = GROUP) -> list[str]:
    """One ``kprobe_events`` line per wrapper: ``p:GROUP/qp_INIT2RTR mlx4_INIT2RTR_QP_wrapper ...``."""
    fetch = probe_args(*args)
    return [f"p:{group}/{EVENT_PREFIX}{name} {symbol} {fetch}" for name, symbol in WRAPPERS.items()]


def recipe() -> str:
    """A shell script that records the QP-modify commands of the mlx4 master it runs on."""
    names = " ".join(WRAPPERS)
    return _RECIPE.format(names=names, x86=probe_args("%si", "%dx", "%cx"),
                          generic=probe_args(r"\$arg2", r"\$arg3", r"\$arg4"),
                          group=GROUP, prefix=EVENT_PREFIX)


_RECIPE = r"""#!/bin/sh
# Record the QP-modify commands an mlx4 SR-IOV master handles (its VFs' and its own), for
#   madpipe paravirt -r qp-trace.txt
# Run as root on the hypervisor while the VFs bring their QPs up; Ctrl-C stops it.
# Needs: Linux 4.20 or later (kprobe array types), CONFIG_KPROBE_EVENTS, mlx4_core loaded
# with SR-IOV (num_vfs). It adds kprobe events {group}/{prefix}<TRANSITION> on the 8 QP-modify
# wrappers that carry a mailbox, records them in the tracing instance "{group}", and removes
# both when it stops. Written from the kernel source; not tried on mlx4 hardware.
set -eu
OUT=${{1:-qp-trace.txt}}
T=/sys/kernel/tracing
if [ ! -e $T/kprobe_events ] && [ -e /sys/kernel/debug/tracing/kprobe_events ]; then
  T=/sys/kernel/debug/tracing
elif [ ! -e $T/kprobe_events ]; then
  mount -t tracefs nodev $T 2>/dev/null || true
fi
[ -e $T/kprobe_events ] || {{ echo "no kprobe_events: a kernel with CONFIG_KPROBE_EVENTS is needed" >&2; exit 1; }}
grep -qw mlx4_INIT2RTR_QP_wrapper /proc/kallsyms || {{ echo "mlx4_core is not loaded" >&2; exit 1; }}
case $(uname -m) in
  x86_64) ARGS="{x86}" ;;
  *) ARGS="{generic}" ;;
esac
cleanup() {{
  trap - INT TERM EXIT
  echo 0 > $T/instances/{group}/events/{group}/enable 2>/dev/null || true
  rmdir $T/instances/{group} 2>/dev/null || true
  for t in {names}; do echo "-:{group}/{prefix}$t" >> $T/kprobe_events 2>/dev/null || true; done
}}
cleanup  # what an interrupted earlier run may have left
trap cleanup INT TERM EXIT
for t in {names}; do
  echo "p:{group}/{prefix}$t mlx4_${{t}}_QP_wrapper $ARGS" >> $T/kprobe_events || {{
    echo "the kernel refused the probe on mlx4_${{t}}_QP_wrapper:" >&2; tail -n 2 $T/error_log >&2 2>/dev/null; exit 1; }}
done
mkdir -p $T/instances/{group}
echo 8192 > $T/instances/{group}/buffer_size_kb
echo 1 > $T/instances/{group}/events/{group}/enable
echo "recording QP-modify commands to $OUT; Ctrl-C to stop" >&2
cat $T/instances/{group}/trace_pipe > "$OUT"
"""


@dataclass
class FtraceSkips:
    """What an ftrace text had besides QP-modify records, so that nothing is lost silently."""
    other_events: Counter = field(default_factory=Counter)   # event name -> lines
    lost_events: int = 0                                      # from CPU:N [LOST M EVENTS] lines
    lost_lines: list = field(default_factory=list)            # their line numbers

    def summary(self) -> str:
        """One line, or "" when nothing was skipped."""
        parts = []
        if self.other_events:
            n = sum(self.other_events.values())
            names = ", ".join(f"{name} {count}" for name, count in self.other_events.most_common(5))
            more = ", ..." if len(self.other_events) > 5 else ""
            parts.append(f"skipped {n} line{'s' if n != 1 else ''} of other events, not QP-modify records with "
                         f"{'..'.join(MBOX_FIELDS[::3])} ({names}{more})")
        if self.lost_lines:
            where = ", ".join(str(n) for n in self.lost_lines[:5])
            parts.append(f"the kernel lost {self.lost_events or 'some'} events (ring buffer full; 'LOST' on "
                         f"line{'s' if len(self.lost_lines) > 1 else ''} {where}): commands are missing")
        return "; ".join(parts)


def looks_like_ftrace(text: str) -> bool:
    """True if the first line that is not blank is an ftrace header, event or lost-events line."""
    for line in text.splitlines():
        if line.strip():
            return line.startswith("#") or bool(_EVENT_LINE.match(line) or _LOST.match(line))
    return False


class FtraceError(ValueError):
    """A QP-modify line that cannot be read: "line N: field NAME: reason" (the reader adds the file)."""


def _error(lineno, name, reason) -> FtraceError:
    return FtraceError(f"line {lineno}: field {name}: {reason}")


def _int(lineno, name, value, hi) -> int:
    m = _INT.match(value)
    if not m:
        raise _error(lineno, name, f"expected an integer, got {value[:40]!r}")
    number = int(m["hex"], 16) if m["hex"] else int(m["dec"], 10)
    if not 0 <= number <= hi:
        raise _error(lineno, name, f"expected 0..{hi}, got {value}")
    return number


def _bytes(lineno, name, value) -> bytes:
    if not (value.startswith("{") and value.endswith("}")):
        what = "truncated array (no closing '}')" if value.startswith("{") else f"got {value[:40]!r}"
        raise _error(lineno, name, f"expected {{0x..,...}} of {MBOX_PART} x8 elements, {what}")
    items = value[1:-1].split(",")
    if len(items) != MBOX_PART:
        raise _error(lineno, name, f"expected {MBOX_PART} elements, got {len(items)}")
    for i, item in enumerate(items):
        if not _BYTE.match(item):
            raise _error(lineno, name, f"element {i}: expected a byte in hex (0x0..0xff), "
                         f"got {item[:20]!r}")
    return bytes(int(item, 16) for item in items)


def read_ftrace(text: str, slave_max: int):
    """Parse ftrace text: ``(transition, slave, in_mod, mailbox)`` arrays and the :class:`FtraceSkips`.

    Raises :class:`FtraceError` for a QP-modify line it cannot read, or a line that is no ftrace line.
    """
    codes, slaves, in_mods, boxes = [], [], [], []
    skips = FtraceSkips()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        lost = _LOST.match(line)
        if lost:
            skips.lost_events += int(lost["n"] or 0)  # "[LOST EVENTS]": the kernel did not count them
            skips.lost_lines.append(lineno)
            continue
        m = _EVENT_LINE.match(line)
        if not m:
            raise FtraceError(f"line {lineno}: not an ftrace event line "
                             f"('TASK-PID [CPU] FLAGS SECONDS: EVENT: ...'): {line.strip()[:60]!r}")
        event = m["event"]
        if "mbox0=" not in m["body"]:
            skips.other_events[event] += 1
            continue
        body = _BODY.match(m["body"])
        if not body:
            raise FtraceError(f"line {lineno}: event {event}: expected '(IP) name=value ...' "
                             f"after the event name")
        fields = dict(_ARG.findall(body["args"]))
        for name in ("slave", "op", "in_mod", *MBOX_FIELDS):
            if name not in fields:
                raise _error(lineno, name, f"missing (event {event})")
        slave = _int(lineno, "slave", fields["slave"], slave_max)
        op = _int(lineno, "op", fields["op"], 0xFFFF)
        if op not in paravirt.TRANSITION_NAMES:
            raise _error(lineno, "op", f"opcode {op:#x} is not a QP transition")
        name = paravirt.TRANSITION_NAMES[op]
        if event.startswith(EVENT_PREFIX) and event[len(EVENT_PREFIX):] in paravirt.TRANSITIONS \
                and event[len(EVENT_PREFIX):] != name:
            raise _error(lineno, "op", f"opcode {op:#x} is {name}, but the event is {event}")
        in_mod = _int(lineno, "in_mod", fields["in_mod"], 0xFFFFFFFF)
        box = b"".join(_bytes(lineno, part, fields[part]) for part in MBOX_FIELDS)
        codes.append(op)
        slaves.append(slave)
        in_mods.append(in_mod)
        boxes.append(box)
    mailbox = np.frombuffer(b"".join(boxes), dtype=np.uint8).reshape(len(boxes), 256).copy()
    return (np.array(codes, dtype=np.uint8), np.array(slaves, dtype=np.int32),
            np.array(in_mods, dtype=np.uint32), mailbox), skips
