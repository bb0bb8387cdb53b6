"""madpipe.codecs.strategies: every layer's strategy builds bytes madpipe decodes back to the values
drawn, and the SMP, P_KeyTable and mailbox strategies drive the kernels against their references.

No timed tests: hypothesis runs with deadline=None, and few examples (the suite also runs with
NUMBA_DISABLE_JIT=1).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import perf, qpc
from madpipe.codecs import smp as smpc
from madpipe.codecs import strategies as S
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.fuzz.targets.codecs import check_frame, scapy_layers

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("strategy, schema", [
    (S.lrh(), ibh.LRH), (S.grh(), ibh.GRH), (S.bth(), ibh.BTH), (S.deth(), ibh.DETH),
    (S.mad_header(), madc.MADHeader), (S.attribute(smpc.IB_SMP_ATTR_PORT_INFO), smpc.PortInfo),
    (S.attribute(smpc.IB_SMP_ATTR_VL_ARB_TABLE), smpc.VLArbitrationTable), (S.mailbox(), qpc.QPContextMailbox),
    (S.from_schema(perf.PortCounters), perf.PortCounters),
])
def test_layer_strategies_give_bytes_of_the_schema(strategy, schema):
    @FEW
    @given(strategy)
    def check(data):
        assert len(data) == schema.sizeof()
        assert schema.build(schema.parse(data)) == data

    check()


@FEW
@given(S.fields_of(ibh.LRH))
def test_reserved_fields_are_zero_unless_asked(fields):
    assert fields["resv2"] == 0 and fields["resv5"] == 0


@FEW
@given(S.lrh(reserved="any", vl=15, lnh=st.sampled_from([2, 3])))
def test_fields_can_be_fixed_with_values_or_strategies(data):
    lrh = ibh.LRH.parse(data)
    assert lrh.vl == 15 and lrh.lnh in (2, 3)


def test_unknown_fields_are_refused():
    with pytest.raises(ValueError, match="no field 'vll'"):
        S.lrh(vll=1)
    with pytest.raises(ValueError, match="reserved must be"):
        S.lrh(reserved="some")


@FEW
@given(S.frame())
def test_frames_decode_cleanly_with_good_crcs(data):
    rec, problems = check_frame(data, roundtrip=True, scapy=scapy_layers() is not None)
    assert problems == []
    assert "error" not in rec and rec["icrc_ok"] and rec["vcrc_ok"]
    assert "attr" in rec


@FEW
@given(S.smp(directed=True, method=madc.IB_MGMT_METHOD_GET_RESP, hops=st.lists(st.integers(1, 254), max_size=10)))
def test_directed_route_smps_carry_their_path(mad):
    from madpipe.codecs import build

    rec = decode_frame(build.build_smp_frame(mad))
    s = rec["smp"]
    assert s["hop_cnt"] == len(s["initial_path"]) == s["hop_ptr"] and s["return_path"] == s["initial_path"]
    assert rec["mad"]["status"] & madc.IB_SMP_DIRECTION


@FEW
@given(S.pkey_table_set(block=st.integers(0, 7)))
def test_pkey_table_set_is_a_subnset_of_one_block(mad):
    hdr = madc.MADHeader.parse(mad[:24])
    assert hdr.method == madc.IB_MGMT_METHOD_SET and hdr.attr_id == smpc.IB_SMP_ATTR_PKEY_TABLE
    assert hdr.attr_mod <= 7 and hdr.mgmt_class in (0x01, 0x81)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(S.pkey_table_set(block=st.integers(0, 9)), min_size=1, max_size=12),
       st.lists(st.sampled_from([1, 2]), min_size=12, max_size=12))
def test_snoop_kernel_and_reference_agree_on_drawn_sets(mads, ports):
    from madpipe.pipeline.mlx4 import snoop

    batch = np.frombuffer(b"".join(mads), dtype=np.uint8).reshape(-1, 256).copy()
    port = np.array(ports[:len(mads)], dtype=np.uint8)
    out = []
    for run in (snoop.smp_snoop, snoop.smp_snoop_reference):
        cache, v2p = snoop.init_pkeys(num_vfs=3)
        res = run(cache, v2p, batch, port, 0, num_vfs=3)
        out.append((res, cache))
    (k, kc), (r, rc) = out
    assert np.array_equal(kc, rc)
    for name in ("pkey_change_bitmap", "master_event", "slave_events", "finding", "snooped"):
        assert np.array_equal(getattr(k, name), getattr(r, name)), name


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(S.qp_command(base_proxy_sqpn=64), min_size=1, max_size=10), st.sampled_from(["3.7", "new", "mainline"]))
def test_paravirt_kernel_and_reference_agree_on_drawn_commands(commands, profile):
    from madpipe.pipeline.mlx4 import paravirt
    from madpipe.pipeline.mlx4.profiles import resolve

    boxes = np.frombuffer(b"".join(c[0] for c in commands), dtype=np.uint8).reshape(-1, 256).copy()
    names = np.array([c[1] for c in commands])
    slaves = np.array([c[2] for c in commands])
    qpns = np.array([c[3] for c in commands], dtype=np.uint32)
    functions = resolve(profile).v2p_shape[0]  # 80 at 3.7, 128 on mainline
    v2p = np.tile(np.arange(128, dtype=np.uint8), (functions, 2, 1))
    kw = dict(base_proxy_sqpn=64, profile=profile, return_findings=True)
    k = paravirt.rewrite(boxes, names, slaves, qpns, v2p, **kw)
    r = paravirt.rewrite_reference(boxes, names, slaves, qpns, v2p, **kw)
    for a, b in zip(k, r):
        assert np.array_equal(a, b)


def test_scapy_packets_when_the_layers_are_there():
    if scapy_layers() is None:
        pytest.skip("madpipe.codecs.layers (issue 4) is not available")

    @FEW
    @given(S.packet())
    def check(pkt):
        assert bytes(pkt)[:8] == bytes(pkt.copy())[:8]

    check()
