"""pytest-benchmark mirror of `madpipe bench` (run: pytest tests/test_benchmarks.py --benchmark-enable).

In the normal suite benchmarks are disabled (pyproject addopts), so each runs once as a plain
test: the results are checked, the timings are never pass/fail.
"""
import json
import shutil

import numpy as np
import pytest

from madpipe.pipeline.bench import kernels as kernels_bench
from madpipe.pipeline.bench import workload
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.ingest.reader import Ingest
from madpipe.pipeline.mlx4 import paravirt, snoop

N = 100_000


@pytest.fixture(scope="module")
def sm():
    return workload.sm_mads(N, seed=1)


@pytest.fixture(scope="module")
def qp():
    return workload.qp_commands(N, seed=2)


def test_touch_baseline(benchmark, sm):
    mads = sm[0]
    assert benchmark(kernels_bench.touch_lines, mads) == int(mads[:, 1].sum()) + int(mads[:, 64].sum())


def test_touch_of_the_lines_smp_snoop_reads(benchmark, sm):
    mads = sm[0]
    want = int(mads[:, 1].sum()) + int(mads[:, 64].sum()) + int(mads[:, 127].sum())
    assert benchmark(kernels_bench.touch_snooped, mads) == want


@pytest.mark.parametrize("profile", ["new", "3.7"])
def test_snoop_kernel(benchmark, sm, profile):
    mads, port_num, status = sm

    def run():
        cache, v2p = snoop.init_pkeys(num_vfs=4, profile=profile)
        return snoop.smp_snoop(cache, v2p, mads, port_num, status, num_vfs=4, profile=profile)

    res = benchmark(run)
    # The workload promises real changes in roughly a tenth of the P_KeyTable Sets.
    assert 0.02 * N < int(res.master_event.sum()) < 0.3 * N


def test_paravirt_inplace(benchmark, qp):
    mbox, transition, slave, qpn = qp
    _, v2p = snoop.init_pkeys(num_vfs=8, profile="3.7")
    expect, _ = paravirt.rewrite(mbox, transition, slave, qpn, v2p, base_proxy_sqpn=0x48)
    work = mbox.copy()

    def run():
        np.copyto(work, mbox)
        return paravirt.rewrite_inplace(work, transition, slave, qpn, v2p, base_proxy_sqpn=0x48)

    benchmark(run)
    assert np.array_equal(work, expect)


def test_ingest(benchmark, sm, tmp_path):
    path = tmp_path / "w.pcap"
    workload.write_capture(path, workload.mad_frames(sm[0][:20_000]))

    def run():
        return sum(len(b.mads()[0]) for b in Ingest(path))

    assert benchmark(run) == 20_000


def test_snoop_end_to_end(benchmark, sm, tmp_path):
    # The streaming fabric snoop with its read-ahead thread, and its text output, on 20k frames.
    import io

    from madpipe.pipeline.fabric import output as fabric_output
    from madpipe.pipeline.fabric.snoop import snoop_capture

    path = tmp_path / "w.pcap"
    workload.write_capture(path, workload.mad_frames(sm[0][:20_000]))

    def run():
        out = io.StringIO()
        result = snoop_capture(path)
        fabric_output.print_text(result, out)
        return result, out.getvalue()

    result, text = benchmark(run)
    assert result.counts["frames"] == 20_000 and result.counts["events"] > 0
    assert text.endswith(f"{result.counts['events']} change events; 0 findings; "
                         f"P_KeyTable Sets: {result.counts['sets']} ({result.counts['unconfirmed']} unconfirmed, "
                         "0 with error status)\n")


def test_workload_capture_decodes_clean(tmp_path, capsys):
    # The synthetic capture the benchmarks read is valid IB: every CRC checks, nothing is an error.
    mads, _, _ = workload.sm_mads(300, seed=5)
    path = tmp_path / "w.pcap"
    workload.write_capture(path, workload.mad_frames(mads))
    assert main(["decode", "-r", str(path), "-T", "json"]) == 0
    err = capsys.readouterr().err
    assert "300 frames read, 300 decoded (300 MADs), 0 with errors" in err
    assert "ICRC 300 ok 0 bad, VCRC 300 ok 0 bad" in err


def test_bench_command_runs(capsys):
    assert main(["bench", "--n", "2000", "--repeat", "1", "--subset", "200", "--what", "snoop,paravirt"]) == 0
    out, err = capsys.readouterr()
    # progress while it runs (stderr is no terminal here: a line a figure), and for which n the targets are
    assert "madpipe bench: n=2000, groups snoop, paravirt; the targets are set for --n 1000000" in err
    assert "bench: snoop: numba kernel, profile new\n" in err and err.count("bench: paravirt: numba in place\n") == 1
    assert "numba kernel, profile new" in out and "numba in place" in out and "baseline" in out
    # The targets its figures allow checking, each with its ratio and a verdict; no others.
    targets = out.split("targets (medians of this run")[1]
    assert "this run has 2000" in targets
    for what in ("vs touching its memory", "vs the pure-Python reference", "vs copying the mailboxes"):
        line = next(line for line in targets.splitlines() if what in line)
        assert line.rstrip().endswith(("met", "NOT MET")) and "x, at least" in line
    assert "tshark" not in targets


def test_bench_json_has_target_records(capsys):
    assert main(["bench", "--n", "2000", "--repeat", "1", "--subset", "200", "--what", "paravirt",
                 "-T", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [target] = [r for r in records if "target" in r]
    figures = {r["name"]: r for r in records if "group" in r}
    want = figures["numba in place"]["rate_per_s"] / figures["memory copy"]["rate_per_s"]
    assert target["ratio"] == pytest.approx(want) and target["met"] == (want >= 0.5)


def test_a_ratio_is_the_median_of_back_to_back_pairs(monkeypatch):
    # A clock the calls advance: the figure always takes twice its baseline's time, but the
    # machine slows down fourfold after the baseline's own runs. Pairs see 0.5x in every run;
    # the medians, taken apart, would say 2x.
    from madpipe.pipeline.bench import runner

    now = [0.0]
    slow = [1.0]
    calls = []
    monkeypatch.setattr(runner.time, "perf_counter", lambda: now[0])

    def work(seconds, name):
        def fn():
            calls.append(name)
            now[0] += seconds * slow[0]
        return fn

    bench = runner.Bench(n=10, repeat=3)
    base = bench.measure("g", "base", 10, work(1.0, "base"))
    slow[0] = 4.0
    fig = bench.measure("g", "fig", 10, work(2.0, "fig"), baseline="base")
    assert calls == ["base"] * 3 + ["base", "fig"] * 3
    assert base.times == [1.0] * 3 and fig.times == [8.0] * 3 and fig.pair_ratios == [0.5] * 3
    assert bench.ratio(fig) == 0.5 and fig.rate / base.rate == 0.125
    once = bench.measure("g", "once", 10, work(2.0, "once"), baseline="base", repeat=1)
    assert once.pair_ratios == [] and bench.ratio(once) == 0.125 and calls[-1] == "once"


def test_bench_rejects_unknown_group(capsys):
    assert main(["bench", "--what", "snoop,nope"]) == 2
    assert "unknown group nope" in capsys.readouterr().err


def test_bench_api_group(capsys):
    assert main(["bench", "--n", "1000", "--repeat", "1", "--what", "api", "-T", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    figures = {r["name"]: r for r in records if "group" in r}
    for profile in ("new", "3.7"):
        for load in ("SM traffic", "every Set changes"):
            fig = figures[f"snoop.smp_snoop, {profile}, {load}"]
            assert fig["baseline"] == f"memory touch (the lines it reads), {load}" and fig["items"] == 1000
    assert figures["paravirt.rewrite (new output)"]["baseline"] == "np.copy (a new array)"
    assert figures["paravirt.rewrite(out=buffer)"]["baseline"] == "np.copyto (mapped buffer)"
    for fmt in ("text", "json"):  # the figure is the bytes the printer wrote, its baseline the same bytes
        fig = figures[f"snoop -T {fmt} output into a pipe"]
        assert fig["unit"] == "bytes" and fig["items"] == figures[f"prepared {fmt} bytes into a pipe"]["items"]
    assert figures["snoop -T json output into a pipe"]["items"] > 1000 * 500  # 32 changes an event
    targets = {r["target"]: r for r in records if "target" in r}
    rate = targets["event JSON Lines written, bytes/s"]
    assert rate["rate_per_s"] == pytest.approx(figures["snoop -T json output into a pipe"]["rate_per_s"])
    assert rate["met"] == (rate["rate_per_s"] >= 500e6)
    assert "smp_snoop call (3.7), vs touching its memory" in targets
    if shutil.which("tshark"):
        assert "snoop -T json of changing Sets, vs tshark plain" in targets


@pytest.mark.tools("tshark")
def test_snoop_as_a_process_is_paired_with_tshark(capsys):
    # Each run of the madpipe process follows a tshark run of the same file, and the target is the
    # median of those pairs' ratios (measured a minute apart, the two met different machines).
    assert main(["bench", "--n", "3000", "--subset", "300", "--repeat", "2", "--what", "capture", "-T", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    figures = {r["name"]: r for r in records if "group" in r}
    process = figures["madpipe snoop, a process (+start-up)"]
    assert process["baseline"] == "tshark plain, whole file (a process)" and process["pairs"] == 2
    assert figures["tshark plain, whole file (a process)"]["items"] == process["items"] == 3000
    targets = {r["target"]: r for r in records if "target" in r}
    assert targets["snoop as a process, vs tshark plain (both start)"]["ratio"] == process["ratio_to_baseline"]


def test_a_missed_target_never_reads_as_its_line():
    from madpipe.pipeline.bench.output import _ratio_text

    assert _ratio_text(9.9951, 10) == "9.995" and _ratio_text(9.18, 10) == "9.18"
    assert _ratio_text(11.55, 10) == "11.6" and _ratio_text(10.0004, 10) == "10"
    assert _ratio_text(0.49996, 0.5) == "0.49996" and _ratio_text(0.5, 0.5) == "0.5"
