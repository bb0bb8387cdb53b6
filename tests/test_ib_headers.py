"""LRH, GRH, BTH, DETH, MAD header and the CRCs: bit-exact on random bytes and on the real capture."""
from pathlib import Path

import pytest
from helpers import common, strip
from hypothesis import given, settings
from hypothesis import strategies as st

from madpipe.codecs import crc, mad
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs.capture import CaptureReader

REAL = Path(__file__).parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap"
SCHEMAS = [(ibh.LRH, 8), (ibh.GRH, 40), (ibh.BTH, 12), (ibh.DETH, 8), (mad.MADHeader, 24), (mad.MAD, 256)]


@pytest.fixture(scope="module")
def real_frames():
    return [p.data for p in CaptureReader(REAL)]


@pytest.mark.parametrize("schema,size", SCHEMAS, ids=lambda s: getattr(s, "name", None) or str(s)[:8])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_round_trip_random_bytes(schema, size, data):
    raw = data.draw(st.binary(min_size=size, max_size=size))
    common(schema, raw, size=size)


def test_lrh_golden():
    # VL15, LVer 0, SL 0, LNH 2 (local), DLID 0xffff, PktLen 72, SLID 0xffff: a DR SMP's LRH.
    lrh = common(ibh.LRH, bytes.fromhex("f002ffff0048ffff"), size=8)
    assert (lrh.vl, lrh.lver, lrh.sl, lrh.lnh, lrh.dlid, lrh.pktlen, lrh.slid) == (15, 0, 0, 2, 0xFFFF, 72, 0xFFFF)
    assert lrh.resv2 == 0 and lrh.resv5 == 0
    # Reserved bits set on purpose survive the round trip.
    odd = common(ibh.LRH, bytes.fromhex("f00effff" "f848ffff"), size=8)
    assert odd.resv2 == 3 and odd.resv5 == 0x1F and odd.pktlen == 72


def test_bth_deth_golden():
    bth = common(ibh.BTH, bytes.fromhex("64" "f5" "ffff" "ab" "000001" "ff" "0001e9"), size=12)
    assert (bth.opcode, bth.se, bth.m, bth.padcnt, bth.tver, bth.pkey) == (0x64, 1, 1, 3, 5, 0xFFFF)
    assert (bth.resv8a, bth.dqp, bth.a, bth.resv7b, bth.psn) == (0xAB, 1, 1, 0x7F, 0x1E9)
    deth = common(ibh.DETH, bytes.fromhex("80010000" "7f" "000001"), size=8)
    assert (deth.qkey, deth.resv8, deth.sqp) == (ibh.IB_QP1_QKEY, 0x7F, 1)


def test_every_real_frame_splits_into_layers_that_rebuild_it(real_frames):
    for frame in real_frames:
        lrh = ibh.LRH.parse(frame)
        pos = 8
        rebuilt = ibh.LRH.build(lrh)
        if lrh.lnh == 3:
            rebuilt += ibh.GRH.build(ibh.GRH.parse(frame[pos:pos + 40]))
            pos += 40
        bth = ibh.BTH.parse(frame[pos:pos + 12])
        rebuilt += ibh.BTH.build(bth)
        pos += 12
        if bth.opcode == ibh.OPCODE_UD_SEND_ONLY:
            rebuilt += ibh.DETH.build(ibh.DETH.parse(frame[pos:pos + 8]))
            pos += 8
            if bth.dqp in (0, 1):
                rebuilt += mad.MAD.build(mad.MAD.parse(frame[pos:pos + 256]))
                pos += 256
        rebuilt += frame[pos:]
        assert rebuilt == frame


def test_delete_crcs_and_seal_gives_the_captured_ones(real_frames):
    for frame in real_frames:
        assert crc.seal(frame[:-6]) == frame


def test_vcrc_check_value():
    assert crc.crc16_vcrc(b"123456789") == 0x0A3D


def test_icrc_ignores_variant_fields_only(real_frames):
    local = next(f for f in real_frames if f[1] & 3 == 2)[:-6]
    base = crc.icrc(local)
    variant = bytearray(local)
    variant[0] = (variant[0] & 0x0F) | 0x30  # VL
    variant[12] ^= 0xFF  # BTH resv8a
    assert crc.icrc(bytes(variant)) == base
    invariant = bytearray(local)
    invariant[3] ^= 1  # DLID
    assert crc.icrc(bytes(invariant)) != base
    glob = next(f for f in real_frames if f[1] & 3 == 3)[:-6]
    base = crc.icrc(glob)
    variant = bytearray(glob)
    variant[2] ^= 0x55  # any LRH byte
    variant[9] ^= 0xFF  # traffic class / flow label
    variant[15] ^= 0xFF  # hop limit
    assert crc.icrc(bytes(variant)) == base
    invariant = bytearray(glob)
    invariant[20] ^= 1  # SGID
    assert crc.icrc(bytes(invariant)) != base


def test_check_crcs_on_short_input():
    assert crc.check_crcs(b"") == (None, None)
    assert crc.check_crcs(bytes.fromhex("f002ffff0048ffff")) == (None, None)


def test_mad_header_names_match_the_kernel():
    hdr = mad.MADHeader.parse(bytes(range(24)))
    assert list(strip(hdr)) == ["base_version", "mgmt_class", "class_version", "method", "status",
                                "class_specific", "tid", "attr_id", "resv", "attr_mod"]
    assert hdr.tid == int.from_bytes(bytes(range(8, 16)), "big") and hdr.attr_mod == 0x14151617
