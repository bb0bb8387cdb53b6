"""smp_snoop and init_pkeys: golden cases from the kernel sources, and kernel == reference.

MADs are built here with struct (IBA 13.4 header, 14.2 SMP), independent of the codecs.
Run once more with NUMBA_DISABLE_JIT=1: the kernels then run as plain Python.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.mlx4 import snoop_reference as reference_snoop

LR, DR = 0x01, 0x81
GET, SET, GET_RESP = 0x01, 0x02, 0x81
GUID_INFO, PORT_INFO, PKEY_TABLE = 0x0014, 0x0015, 0x0016
RESULT_FIELDS = ("pkey_change_bitmap", "master_event", "slave_events", "finding", "lid_change", "client_rereg",
                 "gid_change", "snooped", "port_lid", "sm_lid", "sm_sl")
IMPLS = [pytest.param(snoop.smp_snoop, id="kernel"), pytest.param(snoop.smp_snoop_reference, id="reference")]
PROFILES = ["3.7", "new"]


# -- building MADs ------------------------------------------------------------------------------

def smp(attr_id=PKEY_TABLE, attr_mod=0, data=b"", *, mgmt_class=LR, method=SET, tid=0x1234) -> bytes:
    """A 256-byte SMP: common header, M_Key, 32 reserved (or DR fields), data[64] at 64, 128 more."""
    header = struct.pack(">BBBBHHQHHI", 1, mgmt_class, 1, method, 0, 0, tid, attr_id, 0, attr_mod)
    mad = header + bytes(8) + bytes(32) + data.ljust(64, b"\0") + bytes(128)
    assert len(mad) == 256
    return mad


def pkey_data(pkeys) -> bytes:
    pkeys = list(pkeys) + [0] * (32 - len(pkeys))
    return struct.pack(">32H", *pkeys)


def port_info_data(lid, sm_lid=0, sm_sl=0, client_rereg=False) -> bytes:
    data = bytearray(64)
    struct.pack_into(">HH", data, 16, lid, sm_lid)
    data[36] = 0x50 | (sm_sl & 0xF)  # NeighborMTU 5 (4096) in the high nibble
    data[51] = (0x80 if client_rereg else 0) | 0x12
    return bytes(data)


def batch(*mads) -> np.ndarray:
    return np.frombuffer(b"".join(mads), dtype=np.uint8).reshape(-1, 256).copy()


def pkey_set(block, pkeys, **kw) -> bytes:
    return smp(PKEY_TABLE, block, pkey_data(pkeys), **kw)


def fresh(num_vfs=4, num_ports=2, master=0, profile="mainline"):
    return snoop.init_pkeys(num_vfs=num_vfs, num_ports=num_ports, pkey_table_len=128, master=master,
                            profile=profile)


def assert_same_results(a, b):
    for name in RESULT_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name == "slave_events":
            assert x == y, name  # the compact form, rows and bits equal
            x, y = x.dense(), y.dense()
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y), name


def run_both(cache, v2p, mads, port_num, status, **kw):
    """Kernel and reference on copies of the same state; asserts they agree; returns the kernel's."""
    outcomes = []
    for impl in (snoop.smp_snoop, snoop.smp_snoop_reference):
        c, v = cache.copy(), v2p.copy()
        state = {k: kw[k].copy() for k in ("port_lid", "sm_lid", "sm_sl") if kw.get(k) is not None}
        rest = {k: val for k, val in kw.items() if k not in state}
        res = impl(c, v, mads, port_num, status, **rest, **state)
        assert np.array_equal(v, v2p), "v2p must never be written"
        outcomes.append((c, res))
    (ck, rk), (cr, rr) = outcomes
    assert np.array_equal(ck, cr), "phys_pkey_cache differs"
    assert_same_results(rk, rr)
    return ck, rk


def assert_dense_as_before(res, cache, v2p, mads, port_num, status, **kw):
    """The compact slave events against the bool[N, 80] of release 0.1, built here the way it was:
    one row per MAD, True at each function the reference's smp_snoop_one lists for it."""
    n = len(mads)
    port_num = np.broadcast_to(port_num, n)
    status = np.broadcast_to(status, n)
    state = reference_snoop.SnoopState(cache.copy(), v2p, *(
        kw.pop(k).copy() if kw.get(k) is not None else np.zeros(2, t)
        for k, t in (("port_lid", np.uint16), ("sm_lid", np.uint16), ("sm_sl", np.uint8))))
    before = np.zeros((n, res.slave_events.shape[1]), dtype=np.bool_)   # the profile's functions
    for i in range(n):
        out = reference_snoop.smp_snoop_one(state, mads[i], int(port_num[i]), int(status[i]), **kw)
        before[i, out.slave_events] = True
    events = res.slave_events
    assert np.array_equal(events.dense(), before)
    assert [tuple(a.tolist()) for a in events.pairs()] == [tuple(a.tolist()) for a in np.nonzero(before)]
    for f in (0, 1, 5, 79, before.shape[1] - 1):
        assert np.array_equal(events.of_function(f), np.flatnonzero(before[:, f]))
    assert events.any() == before.any()


# -- jit switch ---------------------------------------------------------------------------------

def test_jit_cache_switch():
    # In fresh processes: reloading jit here would reset this process's binding state under
    # kernels already made (a helper left unbound is then an untyped global to numba).
    probe = "from madpipe.pipeline.kernels import jit; print(jit.CACHE)"
    env = {k: v for k, v in os.environ.items() if k != "MADPIPE_NO_CACHE"}
    for extra, printed in (({"MADPIPE_NO_CACHE": "1"}, "False"), ({}, "True")):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(env, **extra))
        assert done.stdout.strip() == printed, done.stderr[-2000:]


# -- init_pkeys (seed commit, main.c) --------------------------------------------------------------

def test_init_pkeys_seed_values():
    cache, v2p = snoop.init_pkeys(num_vfs=4, num_ports=2, pkey_table_len=128, master=0)
    assert cache.dtype == np.uint16 and cache.shape == (2, 128)
    assert v2p.dtype == np.uint8 and v2p.shape == (128, 2, 128)    # mainline, the default
    assert snoop.init_pkeys(num_vfs=4, profile="3.7")[1].shape == (80, 2, 128)
    for port in range(2):
        assert cache[port, 0] == 0xFFFF
        assert not cache[port, 1:].any()
        assert list(v2p[0, port]) == list(range(128))  # the master: identity
        for vf in range(1, 5):
            assert v2p[vf, port, 0] == 0
            assert (v2p[vf, port, 1:] == 127).all()  # unassigned
    assert not v2p[5:].any()


def test_init_pkeys_other_shapes():
    cache, v2p = snoop.init_pkeys(num_vfs=2, num_ports=1, pkey_table_len=64, master=1)
    assert cache[0, 0] == 0xFFFF and not cache[0, 1:].any() and not cache[1].any()
    assert list(v2p[1, 0, :64]) == list(range(64))
    for vf in (0, 2):
        assert v2p[vf, 0, 0] == 0 and (v2p[vf, 0, 1:64] == 63).all()
    assert not v2p[:, 0, 64:].any() and not v2p[:, 1].any() and not v2p[3:].any()


# -- P_KeyTable golden cases ---------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("profile", PROFILES)
def test_set_changing_entry_1_then_again(impl, profile):
    cache, v2p = fresh(profile=profile)
    mads = batch(pkey_set(0, [0xFFFF, 0x8001]), pkey_set(0, [0xFFFF, 0x8001]))
    res = impl(cache, v2p, mads, 1, 0, profile=profile)
    assert list(res.pkey_change_bitmap) == [0x2, 0]
    assert list(res.master_event) == [True, False]
    assert list(res.finding) == [0, 0]
    assert list(res.snooped) == [True, True]
    assert not res.slave_events.any()  # index 1 is unassigned in every VF's row
    assert cache[0, 1] == 0x8001 and cache[0, 0] == 0xFFFF and not cache[1, 1:].any()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("status", [1, 0x001C, 0x8000, 0x8001])
def test_non_zero_status_is_not_snooped(impl, status):
    cache, v2p = fresh()
    before = cache.copy()
    res = impl(cache, v2p, batch(pkey_set(0, [0x1234, 0x8001], mgmt_class=DR)), 1, status)
    assert np.array_equal(cache, before)
    assert res.pkey_change_bitmap[0] == 0 and not res.master_event[0] and not res.snooped[0]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mgmt_class, method", [(LR, GET_RESP), (DR, GET_RESP), (LR, GET), (0x03, SET), (0x04, SET)])
def test_only_smp_sets_are_snooped(impl, mgmt_class, method):
    cache, v2p = fresh()
    before = cache.copy()
    res = impl(cache, v2p, batch(pkey_set(0, [0, 0x8001], mgmt_class=mgmt_class, method=method)), 1, 0)
    assert np.array_equal(cache, before)
    assert not res.snooped.any() and not res.master_event.any()


@pytest.mark.parametrize("impl", IMPLS)
def test_switch_port_bits_of_attr_mod_are_ignored(impl):
    cache, v2p = fresh()
    res = impl(cache, v2p, batch(pkey_set((3 << 16) | 1, [0x8005])), 2, 0)
    assert res.pkey_change_bitmap[0] == 0x1 and cache[1, 32] == 0x8005 and res.finding[0] == 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("profile", PROFILES)
def test_block_4_on_port_1_spills_into_port_2_row(impl, profile):
    cache, v2p = fresh(profile=profile)
    pkeys = [0x8000 + i for i in range(32)]
    res = impl(cache, v2p, batch(pkey_set(4, pkeys)), 1, 0, profile=profile)
    assert res.finding[0] == snoop.FINDING_SPILL
    assert list(cache[1, 0:32]) == pkeys
    assert cache[0, 0] == 0xFFFF and not cache[0, 1:].any() and not cache[1, 32:].any()
    assert res.pkey_change_bitmap[0] == 0xFFFFFFFF and res.master_event[0]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("block, port", [(8, 1), (4, 2), (7, 2), (0xFFFF, 1), (0x7FFF, 2)])
def test_blocks_past_the_table_are_refused(impl, block, port):
    cache, v2p = fresh()
    before = cache.copy()
    res = impl(cache, v2p, batch(pkey_set(block, [0x8001] * 32)), port, 0)
    assert res.finding[0] == snoop.FINDING_REFUSED
    assert np.array_equal(cache, before)
    assert res.pkey_change_bitmap[0] == 0 and not res.master_event[0] and not res.slave_events.any()
    assert not res.snooped[0]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("port, num_ports", [(0, 2), (3, 2), (255, 2), (2, 1)])
def test_port_outside_the_device_is_refused(impl, port, num_ports):
    cache, v2p = fresh(num_ports=num_ports)
    before = cache.copy()
    mads = batch(pkey_set(0, [0x8001]), smp(PORT_INFO, 0, port_info_data(7, 1, 1, True)), smp(GUID_INFO, 0))
    res = impl(cache, v2p, mads, port, 0, num_ports=num_ports)
    assert list(res.finding) == [2, 2, 2]
    assert np.array_equal(cache, before) and not res.port_lid.any() and not res.sm_lid.any()
    assert not (res.master_event.any() or res.lid_change.any() or res.client_rereg.any() or res.snooped.any())


@pytest.mark.parametrize("impl", IMPLS)
def test_vf_events_follow_virt2phys_rows(impl):
    cache, v2p = fresh(num_vfs=4)
    v2p[1, 0, 7] = 3   # VF 1 maps its index 7 to physical 3 on port 1
    v2p[2, 1, 5] = 3   # VF 2 maps physical 3, but on port 2
    v2p[3, 0, 9] = 40  # VF 3 maps physical 40 on port 1 (block 1)
    res = impl(cache, v2p, batch(pkey_set(0, [0xFFFF, 0, 0, 0x8003])), 1, 0, num_vfs=4, profile="new")
    assert res.pkey_change_bitmap[0] == 0x8
    assert [f for f in range(80) if res.slave_events.dense()[0, f]] == [1]
    # entry 0 of a block is mapped by every VF's index 0 -> physical 0 only for block 0
    res = impl(cache, v2p, batch(pkey_set(1, [0x8001] + [0] * 7 + [0x8040])), 1, 0, num_vfs=4, profile="new")
    assert res.pkey_change_bitmap[0] == 0x101
    assert [f for f in range(80) if res.slave_events.dense()[0, f]] == [3]
    res = impl(cache, v2p, batch(pkey_set(0, [0x7FFF])), 1, 0, num_vfs=4, profile="new")
    assert [f for f in range(80) if res.slave_events.dense()[0, f]] == [1, 2, 3, 4]
    res = impl(cache, v2p[:80], batch(pkey_set(0, [0xFFFF])), 1, 0, num_vfs=4, profile="3.7")  # 80 rows at 3.7
    assert res.master_event[0] and not res.slave_events.any()


def test_propagation_scans_only_pkey_table_len_and_skips_master():
    cache, v2p = fresh(num_vfs=3, master=0)
    v2p[2, 0, 100] = 5
    v2p[0, 0, :] = 5  # the master's own row never produces a VF event
    mads = batch(pkey_set(0, [0xFFFF, 0, 0, 0, 0, 0x8005]))
    _, res = run_both(cache, v2p, mads, 1, 0, num_vfs=3, pkey_table_len=100)
    assert res.pkey_change_bitmap[0] == 0x20 and not res.slave_events.any()
    _, res = run_both(cache, v2p, mads, 1, 0, num_vfs=3, pkey_table_len=101)
    assert [f for f in range(80) if res.slave_events.dense()[0, f]] == [2]


@pytest.mark.parametrize("impl", IMPLS)
def test_spilled_indices_propagate_on_the_mads_port_row(impl):
    # Block 4 on port 1 writes physical port 2's entries 0..31, but __propagate_pkey_ev compares
    # i + 32*4 (128..159) with the port-1 rows, value against value (u8 promoted to int).
    cache, v2p = fresh(num_vfs=3)
    v2p[1, 0, 5] = 130  # port-1 row holds 130: matches changed index 2 of block 4
    v2p[2, 1, 5] = 2    # port-2 row holds 2, where the bytes physically landed: no match
    v2p[3, 0, 5] = 2    # index 2 of block 0: not what changed
    # port 2's entry 0 already holds 0xFFFF: only entry 2 changes
    res = impl(cache, v2p, batch(pkey_set(4, [0xFFFF, 0, 0x8002])), 1, 0, num_vfs=3, profile="new")
    assert res.finding[0] == snoop.FINDING_SPILL and res.pkey_change_bitmap[0] == 0x4
    assert cache[1, 2] == 0x8002
    assert [f for f in range(80) if res.slave_events.dense()[0, f]] == [1]


@pytest.mark.parametrize("impl", IMPLS)
def test_operators_manual_scenario(impl):
    # partitions: Default=0x7fff full, 0x3000 full, 0x3030 full; vm1 idx 0->1, 1->0; vm2 0->2, 1->0
    cache, v2p = fresh(num_vfs=2)
    v2p[1, 0, 0], v2p[1, 0, 1] = 1, 0
    v2p[2, 0, 0], v2p[2, 0, 1] = 2, 0
    res = impl(cache, v2p, batch(pkey_set(0, [0xFFFF, 0xB000, 0xB030])), 1, 0, num_vfs=2)
    assert list(cache[0, :4]) == [0xFFFF, 0xB000, 0xB030, 0]
    assert res.pkey_change_bitmap[0] == 0x6 and res.master_event[0]
    assert list(res.slave_events.dense()[0, :3]) == [False, True, True]
    # the SM moves vm2's partition: only vm2 hears about it
    res = impl(cache, v2p, batch(pkey_set(0, [0xFFFF, 0xB000, 0xB031])), 1, 0, num_vfs=2)
    assert res.pkey_change_bitmap[0] == 0x4 and res.master_event[0]
    assert [f for f in range(80) if res.slave_events.dense()[0, f]] == [2]
    # the default partition moves: entry 0 is every VF's index 1 (vm1, vm2)
    res = impl(cache, v2p, batch(pkey_set(0, [0x7FFF, 0xB000, 0xB031])), 1, 0, num_vfs=2)
    assert [f for f in range(80) if res.slave_events.dense()[0, f]] == [1, 2]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("profile", PROFILES)
def test_port_mgmt_change_events_skip_the_snoop(impl, profile):
    cache, v2p = fresh(profile=profile)
    before = cache.copy()
    mads = batch(pkey_set(0, [0, 0x8001]), smp(PORT_INFO, 0, port_info_data(9, 3, 2, True)), smp(GUID_INFO, 0))
    res = impl(cache, v2p, mads, 1, 0, profile=profile, port_mgmt_change_events=True)
    assert np.array_equal(cache, before)
    assert not (res.snooped.any() or res.master_event.any() or res.lid_change.any() or res.client_rereg.any()
                or res.gid_change.any())
    # firmware still applied the PortInfo Set: the next Set with that LID is no LID change
    assert list(res.port_lid) == [9, 0] and not res.sm_lid.any()
    res = impl(cache, v2p, batch(smp(PORT_INFO, 0, port_info_data(9))), 1, 0, profile=profile,
               port_lid=res.port_lid)
    assert not res.lid_change[0]


# -- PortInfo and GUIDInfo -----------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("profile", PROFILES)
def test_port_info_lid_change_sm_and_client_rereg(impl, profile):
    cache, v2p = fresh(profile=profile)
    mads = batch(
        smp(PORT_INFO, 0, port_info_data(lid=5, sm_lid=1, sm_sl=3)),                       # 0 -> 5
        smp(PORT_INFO, 0, port_info_data(lid=5, sm_lid=2, sm_sl=4, client_rereg=True), mgmt_class=DR),
        smp(PORT_INFO, 0, port_info_data(lid=6, sm_lid=9, sm_sl=15)),                      # refused by firmware
        smp(PORT_INFO, 0, port_info_data(lid=6, sm_lid=7, sm_sl=1)),                       # 5 -> 6
        smp(PORT_INFO, 0, port_info_data(lid=0x20, sm_lid=1, sm_sl=0)),                    # port 2: 0 -> 0x20
    )
    port = np.array([1, 1, 1, 1, 2], dtype=np.uint8)
    status = np.array([0, 0, 0x0C, 0, 0], dtype=np.uint16)
    res = impl(cache, v2p, mads, port, status, profile=profile)
    assert list(res.lid_change) == [True, False, False, True, True]
    assert list(res.client_rereg) == [False, True, False, False, False]
    assert list(res.snooped) == [True, True, False, True, True]
    assert list(res.port_lid) == [6, 0x20] and list(res.sm_lid) == [7, 1] and list(res.sm_sl) == [1, 0]
    assert not res.master_event.any() and not res.gid_change.any() and not res.finding.any()


def test_port_info_state_carries_across_batches():
    cache, v2p = fresh()
    port_lid = np.array([5, 0], dtype=np.uint16)
    sm_lid = np.zeros(2, dtype=np.uint16)
    sm_sl = np.zeros(2, dtype=np.uint8)
    res = snoop.smp_snoop(cache, v2p, batch(smp(PORT_INFO, 0, port_info_data(5, 1, 2))), 1, 0,
                          port_lid=port_lid, sm_lid=sm_lid, sm_sl=sm_sl)
    assert not res.lid_change[0] and res.port_lid is port_lid
    assert list(sm_lid) == [1, 0] and list(sm_sl) == [2, 0]


def test_reference_event_order():
    cache, v2p = fresh(num_vfs=2)
    state = reference_snoop.SnoopState(cache, v2p, np.zeros(2, np.uint16), np.zeros(2, np.uint16),
                                       np.zeros(2, np.uint8))
    mad = smp(PORT_INFO, 0, port_info_data(4, 1, 0, client_rereg=True))
    out = reference_snoop.smp_snoop_one(state, mad, 2, 0, num_vfs=2, profile="new")
    assert out.events == [
        (1, 2, "MLX4_EQ_PORT_INFO_CLIENT_REREG_MASK"), (2, 2, "MLX4_EQ_PORT_INFO_CLIENT_REREG_MASK"),
        ("master", 2, "IB_EVENT_CLIENT_REREGISTER"),
        ("master", 2, "IB_EVENT_LID_CHANGE"),
        (1, 2, "MLX4_EQ_PORT_INFO_LID_CHANGE_MASK"), (2, 2, "MLX4_EQ_PORT_INFO_LID_CHANGE_MASK"),
    ]
    mad = smp(PORT_INFO, 0, port_info_data(5, 1, 0, client_rereg=True))
    out = reference_snoop.smp_snoop_one(state, mad, 2, 0, num_vfs=2, profile="3.7")
    assert out.events == [("master", 2, "IB_EVENT_CLIENT_REREGISTER"), ("master", 2, "IB_EVENT_LID_CHANGE")]
    out = reference_snoop.smp_snoop_one(state, pkey_set(0, [0xFFFF, 0, 0x8001]), 1, 0, num_vfs=2, profile="new")
    assert out.events == [("master", 1, "IB_EVENT_PKEY_CHANGE")]


@pytest.mark.parametrize("impl", IMPLS)
def test_guid_info(impl):
    cache, v2p = fresh()
    guids = struct.pack(">8Q", *range(0x1000, 0x1008))
    mads = batch(smp(GUID_INFO, 0, guids), smp(GUID_INFO, 15, guids), smp(GUID_INFO, 16, guids),
                 smp(GUID_INFO, 0xFFFFFFFF, guids))
    res = impl(cache, v2p, mads, 1, 0, profile="new")
    assert list(res.gid_change) == [True, True, False, False]
    assert list(res.finding) == [0, 0, 2, 2]
    assert list(res.snooped) == [True, True, False, False]
    res = impl(cache, v2p[:80], mads, 1, 0, profile="3.7")   # the 3.7 table: its first 80 functions
    assert not res.gid_change.any() and not res.finding.any() and res.snooped.all()
    assert not (res.master_event.any() or res.lid_change.any())


# -- API checks ----------------------------------------------------------------------------------

def test_scalars_broadcast_and_empty_batch():
    cache, v2p = fresh()
    res = snoop.smp_snoop(cache, v2p, np.zeros((0, 256), np.uint8), 1, 0)
    assert len(res) == 0 and res.slave_events.shape == (0, 128)
    mads = batch(pkey_set(0, [0xFFFF, 0x8001]), pkey_set(0, [0xFFFF, 0x8001]))
    res = snoop.smp_snoop(cache, v2p, mads, np.uint8(2), np.uint16(0))
    assert list(res.pkey_change_bitmap) == [2, 0] and cache[1, 1] == 0x8001
    assert res.pkey_change_bitmap.dtype == np.uint32 and res.finding.dtype == np.int8
    assert res.master_event.dtype == np.bool_ and res.slave_events.shape == (2, 128)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments_name_the_argument(impl):
    cache, v2p = fresh()
    mads = batch(pkey_set(0, [0xFFFF]))
    cases = [
        (dict(cache=cache.astype(np.int32)), "cache"),
        (dict(cache=cache[:1]), "cache"),
        (dict(cache=np.asfortranarray(cache)), "cache"),
        (dict(v2p=v2p[:4]), "v2p"),
        (dict(mads=mads.astype(np.int8)), "mads"),
        (dict(mads=mads[:, :255]), "mads"),
        (dict(mads=np.zeros((4, 256), np.uint8)[::2]), "mads"),
        (dict(mads=bytes(256)), "mads"),
        (dict(port_num=np.ones(2, np.uint8)), "port_num"),
        (dict(port_num=np.ones(1, np.int64)), "port_num"),
        (dict(port_num=256), "port_num"),
        (dict(status=np.zeros(1, np.uint8)), "status"),
        (dict(status=-1), "status"),
        (dict(profile="3.8"), "profile"),
        (dict(num_vfs=127), "num_vfs"),
        (dict(master=5), "master"),
        (dict(num_ports=3), "num_ports"),
        (dict(pkey_table_len=129), "pkey_table_len"),
        (dict(port_lid=np.zeros(2, np.int32)), "port_lid"),
    ]
    base = dict(cache=cache, v2p=v2p, mads=mads, port_num=1, status=0)
    for change, name in cases:
        kw = {**base, **change}
        with pytest.raises(ValueError, match=name):
            impl(kw.pop("cache"), kw.pop("v2p"), kw.pop("mads"), kw.pop("port_num"), kw.pop("status"), **kw)
    readonly = cache.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="cache"):
        impl(readonly, v2p, mads, 1, 0)


# -- kernel == reference ------------------------------------------------------------------------

PALETTE = [0xFFFF, 0x7FFF, 0x0000, 0x8001, 0xB000, 0xB030, 0x3030]


@st.composite
def mad_strategy(draw):
    """(mad, port_num, status), biased towards what the snoop acts on: SMP Sets answered with
    status 0 on a real port, P_KeyTable blocks 0..3, spills (4..7), blocks past the table."""
    shape = draw(st.sampled_from(["pkey"] * 7 + ["port_info", "guid_info", "any"]))
    mgmt_class = draw(st.sampled_from([LR, DR]))
    method = draw(st.sampled_from([SET] * 9 + [GET_RESP]))
    status = draw(st.sampled_from([0] * 8 + [1, 0x8000]))
    port = draw(st.sampled_from([1, 1, 1, 2, 2, 2, 0, 3]))
    if shape == "any":
        mgmt_class = draw(st.sampled_from([LR, DR, 0x03, 0x04]))
        method = draw(st.sampled_from([SET, GET, GET_RESP, 0x03]))
        status = draw(st.sampled_from([0, 0x001C, 0x8000]))
    attr_id = {"pkey": PKEY_TABLE, "port_info": PORT_INFO, "guid_info": GUID_INFO}.get(shape)
    if attr_id is None:
        attr_id = draw(st.sampled_from([PKEY_TABLE, PORT_INFO, GUID_INFO, 0x0011, 0x0017]))
    attr_mod = draw(st.one_of(
        st.integers(0, 1), st.integers(0, 1), st.integers(0, 1), st.integers(0, 3), st.integers(0, 3),
        st.integers(4, 7), st.just(4),
        st.integers(8, 0xFFFF),
        st.integers(0, 2**32 - 1),
        st.builds(lambda port, bn: (port << 16) | bn, st.integers(1, 36), st.integers(0, 9)),
    ))
    if attr_id == PKEY_TABLE:
        base = draw(st.sampled_from(["zeros", "default", "palette"]))
        pkeys = [0] * 32 if base == "zeros" else [0xFFFF] + [0] * 31
        if base == "palette":
            pkeys = draw(st.lists(st.sampled_from(PALETTE), min_size=32, max_size=32))
        for i, value in draw(st.lists(st.tuples(st.integers(0, 31), st.sampled_from(PALETTE)), max_size=3)):
            pkeys[i] = value
        data = pkey_data(pkeys)
    elif attr_id == PORT_INFO:
        data = port_info_data(draw(st.sampled_from([0, 1, 5, 0x20, 0xFFFF])), draw(st.integers(0, 3)),
                              draw(st.integers(0, 15)), draw(st.booleans()))
    else:
        data = draw(st.binary(min_size=64, max_size=64))
    return smp(attr_id, attr_mod, data, mgmt_class=mgmt_class, method=method), port, status


@st.composite
def config_strategy(draw):
    profile = draw(st.sampled_from(PROFILES))
    many = [64] if profile == "3.7" else [79, 80, 126]       # up to MLX4_MAX_NUM_VF
    num_vfs = draw(st.one_of(st.integers(0, 6), st.sampled_from(many)))
    master = draw(st.sampled_from([0, 0, 0, num_vfs]))
    num_ports = draw(st.sampled_from([2, 2, 1]))
    cache, v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=num_ports, master=master, profile=profile)
    for slave, port, ix, value in draw(st.lists(
            st.tuples(st.integers(0, num_vfs), st.integers(0, 1), st.integers(0, 127),
                      st.one_of(st.integers(0, 40), st.integers(128, 160), st.integers(0, 255))),
            max_size=20)):
        v2p[slave, port, ix] = value
    kw = dict(num_vfs=num_vfs, master=master, num_ports=num_ports,
              pkey_table_len=draw(st.sampled_from([128, 128, 64, 5])),
              profile=profile,
              port_mgmt_change_events=draw(st.sampled_from([False, False, False, True])),
              port_lid=np.array(draw(st.lists(st.sampled_from([0, 1, 5]), min_size=2, max_size=2)), np.uint16))
    return cache, v2p, kw


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=config_strategy(), mads=st.lists(mad_strategy(), min_size=3, max_size=60))
def test_kernel_matches_reference_hypothesis(config, mads):
    cache, v2p, kw = config
    arr = batch(*(m for m, _, _ in mads))
    port = np.array([p for _, p, _ in mads], dtype=np.uint8)
    status = np.array([s for _, _, s in mads], dtype=np.uint16)
    _, res = run_both(cache, v2p, arr, port, status, **kw)
    assert_dense_as_before(res, cache, v2p, arr, port, status, **kw)


def random_batch(n: int, seed: int):
    """n MADs, mostly P_KeyTable Sets that restate an operator's table, about 10% changing it."""
    rng = np.random.default_rng(seed)
    mads = np.zeros((n, 256), dtype=np.uint8)
    mads[:, 0] = 1
    mads[:, 1] = rng.choice([LR, DR, 0x03], n, p=[0.55, 0.4, 0.05])
    mads[:, 2] = 1
    mads[:, 3] = rng.choice([SET, GET, GET_RESP], n, p=[0.9, 0.05, 0.05])
    attr = rng.choice([PKEY_TABLE, PORT_INFO, GUID_INFO, 0x0011], n, p=[0.9, 0.04, 0.04, 0.02])
    mads[:, 16] = attr >> 8
    mads[:, 17] = attr & 0xFF
    kind = rng.random(n)
    block = np.where(kind < 0.93, rng.integers(0, 4, n), np.where(kind < 0.97, rng.integers(4, 8, n),
                                                                   rng.integers(8, 0x10000, n)))
    attr_mod = block | np.where(rng.random(n) < 0.05, rng.integers(1, 37, n) << 16, 0)
    guid_block = rng.integers(0, 20, n)
    attr_mod = np.where(attr == GUID_INFO, guid_block, attr_mod)
    mads[:, 20:24] = attr_mod.astype(">u4").view(np.uint8).reshape(n, 4)
    # the operator's table: 0xFFFF, 0xB000, 0xB030, the rest 0, whatever block is written
    table = np.zeros((4, 32), dtype=">u2")
    table[0, :3] = [0xFFFF, 0xB000, 0xB030]
    data = table[block % 4].copy()
    change = (rng.random(n) < 0.10) & (attr == PKEY_TABLE)
    rows = np.nonzero(change)[0]
    data[rows, rng.integers(0, 32, rows.size)] = rng.choice(PALETTE, rows.size)
    mads[:, 64:128] = data.view(np.uint8).reshape(n, 64)
    pi = np.nonzero(attr == PORT_INFO)[0]
    mads[pi, 80:82] = rng.choice([1, 1, 2, 7], pi.size).astype(">u2").view(np.uint8).reshape(-1, 2)
    mads[pi, 82:84] = rng.integers(0, 4, (pi.size, 2))
    mads[pi, 100] = rng.integers(0, 256, pi.size)
    mads[pi, 115] = rng.integers(0, 256, pi.size)
    port = rng.choice([1, 2, 0, 3], n, p=[0.55, 0.43, 0.01, 0.01]).astype(np.uint8)
    status = rng.choice([0, 0x1C, 0x8000], n, p=[0.95, 0.03, 0.02]).astype(np.uint16)
    return mads, port, status


@pytest.mark.slow
@pytest.mark.parametrize("profile", PROFILES)
def test_kernel_matches_reference_random_100k(profile):
    n = 100_000
    mads, port, status = random_batch(n, seed=3 if profile == "new" else 4)
    cache, v2p = snoop.init_pkeys(num_vfs=6, num_ports=2, profile=profile)
    v2p[1, 0, :3] = [1, 0, 2]
    v2p[2, 0, :3] = [2, 0, 1]
    v2p[3, 1, :2] = [1, 2]
    v2p[4, 0, 10] = 130  # a value only a spilled block 4 on port 1 can hit
    v2p[5, 0, :] = np.arange(128) + 128
    cache_after, res = run_both(cache, v2p, mads, port, status, num_vfs=6, profile=profile)
    assert_dense_as_before(res, cache, v2p, mads, port, status, num_vfs=6, profile=profile)
    with pytest.warns(DeprecationWarning, match="dense=True"):
        old = snoop.smp_snoop(cache.copy(), v2p, mads, port, status, num_vfs=6, profile=profile, dense=True)
    assert old.slave_events.dtype == np.bool_ and np.array_equal(old.slave_events, res.slave_events.dense())
    # the batch exercises what it is meant to
    changed = np.count_nonzero(res.pkey_change_bitmap) / n
    assert 0.05 < changed < 0.30
    assert np.count_nonzero(res.finding == snoop.FINDING_SPILL) > 100
    assert np.count_nonzero(res.finding == snoop.FINDING_REFUSED) > 100
    assert res.lid_change.any() and res.client_rereg.any()
    if profile == "new":
        assert res.slave_events.dense()[:, 1:6].any(axis=0).all() and res.gid_change.any()
    else:
        assert not res.slave_events.any() and not res.gid_change.any()
    assert not np.array_equal(cache_after, cache)


def test_kernel_and_reference_constants_are_the_codecs():
    # The kernel keeps literal constants (numba) and the reference its own, each written from the
    # kernel headers; both must be the values the codecs decode with.
    from madpipe.codecs import mad, smp
    from madpipe.pipeline.mlx4 import snoop_kernels as kernels_snoop

    for module in (kernels_snoop, reference_snoop):
        assert module.IB_MGMT_CLASS_SUBN_LID_ROUTED == mad.IB_MGMT_CLASS_SUBN_LID_ROUTED
        assert module.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE == mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
        assert module.IB_MGMT_METHOD_SET == mad.IB_MGMT_METHOD_SET
        assert module.IB_SMP_ATTR_GUID_INFO == smp.IB_SMP_ATTR_GUID_INFO
        assert module.IB_SMP_ATTR_PORT_INFO == smp.IB_SMP_ATTR_PORT_INFO
        assert module.IB_SMP_ATTR_PKEY_TABLE == smp.IB_SMP_ATTR_PKEY_TABLE
        assert module.MLX4_MAX_PORTS == 2 and module.MLX4_MAX_PORT_PKEYS == 128
        assert module.FINDING_SPILL == snoop.FINDING_SPILL and module.FINDING_REFUSED == snoop.FINDING_REFUSED
