"""`madpipe paravirt -r` on ftrace text: the kprobe recipe's events as the kernel prints them.

The lines are built here the way Linux 6.1.192 prints a kprobe event in ``trace``/``trace_pipe``:
  kernel/trace/trace_output.c:614  trace_seq_printf(s, "%16s-%-7d ", comm, entry->pid);
                            :625  trace_seq_printf(s, "[%03d] ", iter->cpu);
                            :628  trace_print_lat_fmt(s, entry);   (irq-info flags, e.g. "d..1.", then ' ')
                            :630  trace_print_time(...)            ("%5lu.%06lu")
                            :631  trace_seq_puts(s, ": ");
  kernel/trace/trace_kprobe.c:1470 print_kprobe_event: "%s: (" event name, the probed address as
                                   sym+off/size [module], ")", then print_probe_args
  kernel/trace/trace_probe_tmpl.h:258 print_probe_args: " %s=" name, then the value; an array
                                   is '{', each element, ',' between, '}'
  kernel/trace/trace_probe.c      DEFINE_BASIC_PRINT_TYPE_FUNC: s32 "%d", x8/x16/x32 "0x%x"
  kernel/trace/trace.c            print_trace_line: "CPU:%d [LOST %lu EVENTS]\\n"
and, where this machine lets us, from the running kernel itself (a uprobe with the same fetch
arguments on a user-space stand-in for the wrappers: see test_real_kernel_prints_what_we_read).
"""
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from madpipe.pipeline.cli.main import main
from madpipe.pipeline.mlx4 import paravirt, trace_ftrace
from madpipe.pipeline.mlx4.trace import TraceError, read_trace, read_trace_with_skips, write_trace

DATA = Path(__file__).parent / "data"
EXAMPLE = DATA / "paravirt_example.jsonl"
VFS_MAP = DATA / "paravirt_vfs.map"
HEADER = """# tracer: nop
#
# entries-in-buffer/entries-written: 10/10   #P:4
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


def kernel_line(event, slave, op, in_mod, box, *, comm="kworker/u16:2", pid=1234, cpu=3, flags="d..1.",
                ts=(5123, 456789), symbol=None):
    """One line of ``trace``, as the kernel prints the recipe's event (see the module docstring)."""
    name = event[len("qp_"):]
    symbol = symbol or f"mlx4_{name}_QP_wrapper+0x0/0x5d0 [mlx4_core]"
    head = f"{comm:>16}-{pid:<7} [{cpu:03d}] {flags} {ts[0]:5d}.{ts[1]:06d}: "
    boxes = "".join(f" mbox{i}={{{','.join(f'0x{b:x}' for b in box[64 * i:64 * i + 64])}}}" for i in range(4))
    return f"{head}{event}: ({symbol}) slave={slave} op=0x{op:x} in_mod=0x{in_mod:x}{boxes}"


def ftrace_text(trace, *, extra=()):
    """The example trace as the recipe's events, with other lines interleaved."""
    lines = [HEADER.rstrip("\n")]
    for i in range(trace.n):
        code = int(trace.transition[i])
        lines.append(kernel_line(f"qp_{paravirt.TRANSITION_NAMES[code]}", int(trace.slave[i]), code,
                                 int(trace.in_mod[i]), trace.mailbox[i].tobytes(), cpu=i % 4,
                                 ts=(5123, 456789 + i)))
        if i in dict(extra):
            lines.append(dict(extra)[i])
    return "\n".join(lines) + "\n"


BUNDLED = DATA / "paravirt_example_ftrace.txt"
BUNDLED_NOTE = """# The bundled example trace (paravirt_example.jsonl) as the kprobe events of `madpipe paravirt
# --trace-recipe` print it in the trace file, built by tests/test_trace_ftrace.py from the kernel's
# print code; not recorded on mlx4 hardware.
"""


def test_bundled_example_is_the_example_trace_in_ftrace_form():
    """The README's ftrace example: the JSON example's commands, as this module's kernel_line prints them."""
    assert BUNDLED.read_text() == BUNDLED_NOTE + ftrace_text(read_trace(EXAMPLE))


SCHED = ("          <idle>-0       [001] d..2. 5123.456800: sched_switch: prev_comm=swapper/1 prev_pid=0 "
         "prev_prio=120 prev_state=R ==> next_comm=kworker/u16:2 next_pid=1234 next_prio=120")


def test_one_kernel_line_is_read_field_by_field():
    box = bytes(range(256))
    text = HEADER + kernel_line("qp_INIT2RTR", 3, 0x1a, 0x1230, box) + "\n"
    assert trace_ftrace.looks_like_ftrace(text)
    (code, slave, in_mod, mailbox), skips = trace_ftrace.read_ftrace(text, 0xFFFF)
    assert list(code) == [0x1a] and list(slave) == [3] and list(in_mod) == [0x1230]
    assert mailbox[0].tobytes() == box
    assert skips.summary() == ""


def test_ftrace_rewrites_to_the_same_bytes_as_the_json_trace(tmp_path, capsys):
    trace = read_trace(EXAMPLE)
    src = tmp_path / "qp.txt"
    src.write_text(ftrace_text(trace, extra=[(2, SCHED), (5, "CPU:2 [LOST 3 EVENTS]")]))
    for flag, suffix in ((None, "jsonl"), ("--binary", "bin")):
        outs = []
        for path in (EXAMPLE, src):
            out = tmp_path / f"{path.stem}.{suffix}"
            argv = ["paravirt", "-r", str(path), "-w", str(out), "--pkey-map", str(VFS_MAP)] + ([flag] if flag else [])
            assert main(argv) == 0
            outs.append(out.read_bytes())
        assert outs[0] == outs[1] and len(outs[0]) > 0
    err = capsys.readouterr().err
    assert "skipped 1 line of other events" in err and "sched_switch 1" in err
    assert "lost 3 events" in err and "line" in err


def test_report_says_ftrace_and_skips_go_to_stderr_only(tmp_path, capsys):
    src = tmp_path / "qp.txt"
    src.write_text(ftrace_text(read_trace(EXAMPLE), extra=[(0, SCHED)]))
    assert main(["paravirt", "-r", str(src), "-T", "json", "-q"]) == 0
    out, err = capsys.readouterr()
    assert '"encoding":"ftrace"' in out and "sched_switch" not in out
    assert err.count("\n") == 1 and "sched_switch 1" in err


def _error(tmp_path, capsys, line):
    src = tmp_path / "bad.txt"
    good = kernel_line("qp_RST2INIT", 1, 0x19, 0x1210, bytes(256))
    src.write_text(HEADER + good + "\n" + line + "\n")
    assert main(["paravirt", "-r", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{src}: line 8: " in err   # 6 header lines, the good line, then this one
    return err


def _bad(line, old, new):
    assert old in line
    return line.replace(old, new, 1)


GOOD = kernel_line("qp_INIT2RTR", 3, 0x1a, 0x1230, bytes(range(256)))


@pytest.mark.parametrize("line, message", [
    (GOOD[:-40], "field mbox3: expected {0x..,...} of 64 x8 elements, truncated array (no closing '}')"),
    (_bad(GOOD, ",0x3f}", "}"), "field mbox0: expected 64 elements, got 63"),
    (_bad(GOOD, "0x3f}", "}"), "field mbox0: element 63: expected a byte in hex (0x0..0xff), got ''"),
    (_bad(GOOD, ",0x7,", ",0xzz,"), "field mbox0: element 7: expected a byte in hex (0x0..0xff), got '0xzz'"),
    (_bad(GOOD, ",0x41,", ",0x141,"), "field mbox1: element 1: expected a byte in hex (0x0..0xff), got '0x141'"),
    (_bad(GOOD, ",0xc1,", ",c1,"), "field mbox3: element 1: expected a byte in hex"),
    (_bad(GOOD, " in_mod=0x1230", ""), "field in_mod: missing (event qp_INIT2RTR)"),
    (_bad(GOOD, "in_mod=0x1230", "in_mod=0xg"), "field in_mod: expected an integer, got '0xg'"),
    (_bad(GOOD, "slave=3", "slave=-1"), "field slave: expected 0..65535, got -1"),
    (_bad(GOOD, "in_mod=0x1230", "in_mod=" + "9" * 5000), "field in_mod: expected an integer, got '9999"),
    (_bad(GOOD, "in_mod=0x1230", "in_mod=0x100000000"), "field in_mod: expected 0..4294967295, got 0x100000000"),
    (_bad(GOOD, "op=0x1a", "op=0x9"), "field op: opcode 0x9 is not a QP transition"),
    (_bad(GOOD, "op=0x1a", "op=0x1b"), "field op: opcode 0x1b is RTR2RTS, but the event is qp_INIT2RTR"),
    (_bad(GOOD, ": (mlx4_INIT2RTR_QP_wrapper+0x0/0x5d0 [mlx4_core])", ": "), "expected '(IP) name=value ...'"),
    ("garbage mbox0={}", "not an ftrace event line"),
])
def test_bad_lines_are_one_line_errors_naming_file_line_field(tmp_path, capsys, line, message):
    assert message in _error(tmp_path, capsys, line)


def test_other_events_and_lost_events_are_counted_not_lost():
    text = HEADER + "\n".join([SCHED, SCHED, "CPU:0 [LOST EVENTS]",
                               kernel_line("qp_RST2INIT", 1, 0x19, 0x1210, bytes(256)),
                               SCHED.replace("sched_switch", "qp_other")]) + "\n"
    arrays, skips = trace_ftrace.read_ftrace(text, 0xFFFF)
    assert arrays[0].tolist() == [0x19]
    assert skips.other_events == {"sched_switch": 2, "qp_other": 1}
    assert skips.lost_lines == [9] and skips.lost_events == 0
    assert "the kernel lost some events" in skips.summary() and "sched_switch 2, qp_other 1" in skips.summary()


def test_json_and_binary_are_still_told_apart(tmp_path):
    trace = read_trace(EXAMPLE)
    binary = tmp_path / "t.bin"
    write_trace(binary, trace.transition, trace.slave, trace.in_mod, trace.mailbox, binary=True)
    assert read_trace_with_skips(EXAMPLE)[1] == "json"
    assert read_trace_with_skips(binary)[1] == "binary"
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("{not json\n")
    with pytest.raises(TraceError, match="line 1: not JSON"):
        read_trace(bad_json)


def test_recipe_defines_the_fields_the_reader_needs():
    defs = trace_ftrace.probe_definitions()
    assert len(defs) == 8 and {d.split()[1] for d in defs} == set(trace_ftrace.WRAPPERS.values())
    for d in defs:
        names = re.findall(r" (\w+)=", d)
        assert names == ["slave", "op", "in_mod", "mbox0", "mbox1", "mbox2", "mbox3"]
        assert "mbox3=+192(+0(%cx)):x8[64]" in d and "op=+24(%dx):x16" in d and "in_mod=+16(%dx):x32" in d
    sh = shutil.which("sh")
    if sh:  # the whole script parses
        subprocess.run([sh, "-n"], input=trace_ftrace.recipe(), text=True, check=True)


@pytest.mark.parametrize("machine, args", [("x86_64", trace_ftrace.X86_64_ARGS),
                                           ("aarch64", trace_ftrace.GENERIC_ARGS)])
def test_recipe_script_writes_exactly_the_definitions(machine, args):
    """The script's own `case` and loop, run by sh with uname faked: the lines it would write to
    kprobe_events are probe_definitions() byte for byte ($arg2.. must survive the shell's quoting)."""
    sh = shutil.which("sh")
    if not sh:
        pytest.skip("no sh")
    script = trace_ftrace.recipe()
    case = script[script.index("case $(uname -m)"):script.index("esac") + 4]
    loop = re.search(r"^for t in ([A-Z0-9 ]+); do\n  echo (\"p:[^\n]*\") >> \$T/kprobe_events", script, re.M)
    snippet = f"uname() {{ echo {machine}; }}\n{case}\nfor t in {loop[1]}; do echo {loop[2]}; done\n"
    out = subprocess.run([sh, "-c", snippet], check=True, capture_output=True, text=True).stdout
    assert out.splitlines() == trace_ftrace.probe_definitions(args)


def test_mutated_lines_give_records_or_one_line_errors():
    """Seeded byte edits of a good trace: every outcome is records or a TraceError, never a traceback."""
    rng = np.random.default_rng(15)
    base = ftrace_text(read_trace(EXAMPLE), extra=[(1, SCHED), (3, "CPU:1 [LOST 2 EVENTS]")]).encode()
    alphabet = np.frombuffer(b"0x19azZ{},= -:()[]#\n\xff", dtype=np.uint8)
    for _ in range(300):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(0, len(data)))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                data[at] = int(rng.choice(alphabet))
            elif kind == 1:
                del data[at:at + int(rng.integers(1, 40))]
            else:
                data[at:at] = bytes(rng.choice(alphabet, int(rng.integers(1, 5))))
        text = data.decode("utf-8", errors="replace")
        try:
            arrays, _ = trace_ftrace.read_ftrace(text, 0xFFFF)
        except trace_ftrace.FtraceError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("line ")
        else:
            assert arrays[3].shape == (len(arrays[0]), 256)


def test_cli_prints_the_recipe(capsys):
    assert main(["paravirt", "--trace-recipe"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/sh") and "kprobe_events" in out and "trace_pipe" in out
    assert main(["paravirt"]) == 2
    assert "give -r TRACE (or --trace-recipe" in capsys.readouterr().err


# --- the running kernel prints what we read -------------------------------------------------------

STANDIN_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
/* include/linux/mlx4 layouts the probes rely on: struct mlx4_vhcr (mlx4.h), struct mlx4_cmd_mailbox (cmd.h) */
struct mlx4_vhcr { uint64_t in_param, out_param; uint32_t in_modifier, errno_; uint16_t op, token;
                   uint8_t op_modifier, e_bit; };
struct mlx4_cmd_mailbox { void *buf; uint64_t dma; };
volatile int sink;
#define W(name) __attribute__((noinline)) int mlx4_##name##_QP_wrapper(void *dev, int slave, \
    struct mlx4_vhcr *vhcr, struct mlx4_cmd_mailbox *inbox, struct mlx4_cmd_mailbox *outbox, void *cmd) \
    { sink = vhcr->op + ((unsigned char *)inbox->buf)[35] + slave; return 0; }
W(RST2INIT) W(INIT2INIT) W(INIT2RTR) W(RTR2RTS) W(RTS2RTS) W(SQERR2RTS) W(SQD2SQD) W(SQD2RTS)
int main(int argc, char **argv) {
  static unsigned char buf[4096], rec[264];
  struct mlx4_vhcr v; struct mlx4_cmd_mailbox in = { buf, 0 };
  FILE *f = fopen(argv[1], "rb");
  if (!f || fread(rec, 1, 24, f) != 24) return 1;
  while (fread(rec, 1, 264, f) == 264) {
    memset(&v, 0, sizeof v);
    v.op = rec[0]; memcpy(&v.in_modifier, rec + 4, 4); memcpy(buf, rec + 8, 256);
    int slave = rec[2] | rec[3] << 8;
    switch (rec[0]) {
    case 0x19: mlx4_RST2INIT_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    case 0x2d: mlx4_INIT2INIT_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    case 0x1a: mlx4_INIT2RTR_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    case 0x1b: mlx4_RTR2RTS_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    case 0x1c: mlx4_RTS2RTS_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    case 0x1d: mlx4_SQERR2RTS_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    case 0x38: mlx4_SQD2SQD_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    case 0x1f: mlx4_SQD2RTS_QP_wrapper(0, slave, &v, &in, 0, 0); break;
    default: return 2;
    }
  }
  return 0;
}
"""


def _append(path, line: str) -> None:
    """``echo LINE >> path``: one write() with O_APPEND (Python's open(path, "a") also seeks, which
    tracefs refuses with EINVAL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


TRACEFS = "/sys/kernel/tracing"


def _mounted() -> bool:
    return os.path.exists(f"{TRACEFS}/trace")


@pytest.fixture
def tracefs():
    """tracefs, mounted for the test if it was not (as root), and unmounted again after."""
    mounted_here = False
    if not _mounted() and os.geteuid() == 0 and shutil.which("mount"):
        mounted_here = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS],
                                      capture_output=True).returncode == 0
    yield TRACEFS if _mounted() else None
    if mounted_here:
        subprocess.run(["umount", TRACEFS], capture_output=True)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the recipe's register arguments are x86-64's")
def test_real_kernel_prints_what_we_read(tmp_path, tracefs):
    """The recipe's fetch arguments, as a uprobe on a stand-in with the wrappers' signature.

    The kernel parses the same ``slave=%si:s32 op=+24(%dx):x16 ... mbox0=+0(+0(%cx)):x8[64]``,
    fetches through the same nested dereferences and prints through the same print_probe_args
    as for the kprobe on mlx4_core (only the probe point differs: a user-space function, so the
    test runs without mlx4 hardware or kprobes). madpipe must read back the mailboxes it fed in.
    """
    if os.geteuid() != 0:
        pytest.skip("uprobe events need root")
    if not shutil.which("gcc") or not shutil.which("objdump"):
        pytest.skip("gcc and objdump (binutils) build the stand-in")
    if tracefs is None or not os.path.exists(f"{tracefs}/uprobe_events"):
        pytest.skip("no uprobe_events in tracefs (it cannot be mounted, or CONFIG_UPROBE_EVENTS is off)")
    trace = read_trace(EXAMPLE)
    records = tmp_path / "in.bin"
    write_trace(records, trace.transition, trace.slave, trace.in_mod, trace.mailbox, binary=True)
    (tmp_path / "standin.c").write_text(STANDIN_C)
    exe = tmp_path / "standin"
    subprocess.run(["gcc", "-O0", "-o", str(exe), str(tmp_path / "standin.c")], check=True)
    dump = subprocess.run(["objdump", "-d", "-F", str(exe)], check=True, capture_output=True, text=True).stdout
    offsets = dict(re.findall(r"<(mlx4_\w+_QP_wrapper)> \(File Offset: (0x[0-9a-f]+)\):", dump))
    group = f"madpipe_test{os.getpid()}"
    instance = Path(tracefs, "instances", group)
    fetch = trace_ftrace.probe_args(*trace_ftrace.X86_64_ARGS)
    events = Path(tracefs, "uprobe_events")
    defined = []
    try:
        for name, symbol in trace_ftrace.WRAPPERS.items():
            _append(events, f"p:{group}/qp_{name} {exe}:{offsets[symbol]} {fetch}\n")
            defined.append(f"-:{group}/qp_{name}\n")
        instance.mkdir()
        (instance / "events" / group / "enable").write_text("1")
        subprocess.run([str(exe), str(records)], check=True)
        (instance / "events" / group / "enable").write_text("0")
        text = (instance / "trace").read_text()
    finally:
        if instance.exists():
            (instance / "events" / group / "enable").write_text("0")
            instance.rmdir()
        for line in defined:
            _append(events, line)
    (tmp_path / "kernel.txt").write_text(text)
    got, encoding, skips = read_trace_with_skips(tmp_path / "kernel.txt")
    assert encoding == "ftrace" and skips.summary() == ""
    np.testing.assert_array_equal(got.transition, trace.transition)
    np.testing.assert_array_equal(got.slave, trace.slave)
    np.testing.assert_array_equal(got.in_mod, trace.in_mod)
    np.testing.assert_array_equal(got.mailbox, trace.mailbox)


def test_recipe_stops_cleanly_where_it_cannot_record(tmp_path, tracefs):
    """Run as written on this machine: without kprobe events or without mlx4_core it says which in
    one line, exits 1, writes no file and leaves no event or tracing instance behind."""
    if os.geteuid() != 0:
        pytest.skip("the recipe runs as root")
    with open("/proc/kallsyms") as f:
        if "mlx4_INIT2RTR_QP_wrapper" in f.read():
            pytest.skip("an mlx4 master: the recipe would record until stopped")
    script = tmp_path / "record-qp.sh"
    script.write_text(trace_ftrace.recipe())
    out = tmp_path / "qp.txt"
    run = subprocess.run(["sh", str(script), str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and not out.exists()
    assert run.stderr in ("no kprobe_events: a kernel with CONFIG_KPROBE_EVENTS is needed\n",
                          "mlx4_core is not loaded\n")
    assert not os.path.exists(f"{TRACEFS}/instances/{trace_ftrace.GROUP}")
