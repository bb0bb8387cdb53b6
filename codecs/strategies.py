"""Hypothesis strategies for every layer madpipe reads, for property tests of your own code.

::

    from hypothesis import given
    from madpipe.codecs.strategies import frame, smp, pkey_table_set, mailbox, lrh

    @given(frame())
    def test_my_parser_never_crashes(data):        # LRH .. VCRC, CRCs valid
        my_parser(data)

    @given(pkey_table_set(block=st.integers(0, 7)))  # a SubnSet(P_KeyTable) MAD, 256 bytes
    def test_my_sma(mad): ...

Every strategy draws field values from the construct schemas themselves (``fields_of``), so each
field is in its range and shrinks to zero; reserved fields are zero unless ``reserved="any"``.
Byte strategies (``lrh``, ``grh``, ``bth``, ``deth``, ``mad_header``, ``attribute``, ``smp``,
``mad``, ``pkey_table_set``, ``frame``, ``mailbox``) build the values into wire bytes. Keyword
arguments fix fields: a value, or a strategy for it (``lrh(vl=15)``, ``bth(dqp=st.just(0))``); a
nested Struct takes a dict (``fields_of(smp.SMP, hdr={"method": 2})``).

Needs hypothesis (``pip install 'madpipe[test]'``): the rest of madpipe does not.
"""
from __future__ import annotations

import construct as cs

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised only without the test extra
    raise ImportError("madpipe.codecs.strategies needs hypothesis: pip install 'madpipe[test]' "
                      "(or pip install hypothesis)") from exc

from madpipe.codecs import build, perf, qpc
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc

__all__ = [
    "attribute", "bth", "deth", "fields_of", "frame", "from_schema", "gmp", "grh", "lrh", "mad", "mad_header",
    "mailbox", "pkey_table", "pkey_table_set", "qp_command", "smp", "smp_attribute_id", "packet",
]

RESERVED_ZERO = "zero"
RESERVED_ANY = "any"


def _is_reserved(name: str | None) -> bool:
    return name is not None and name.startswith(("resv", "reserved"))


def _leaf(con, in_bits: bool, zero: bool):
    """A strategy for one leaf construct: integers in range, or bytes of its size."""
    if isinstance(con, cs.BitsInteger):
        top = (1 << con.length) - 1
    elif isinstance(con, (cs.FormatField, cs.BytesInteger)):
        top = (1 << (8 * con.sizeof())) - 1
    elif isinstance(con, cs.Bytes):
        n = con.sizeof()
        return st.just(bytes(n)) if zero else st.binary(min_size=n, max_size=n)
    else:
        raise TypeError(f"no strategy for {type(con).__name__}")
    return st.just(0) if zero else st.integers(0, top)


def _strategy(con, reserved: str, fixed, name: str | None = None, in_bits: bool = False):
    if isinstance(con, cs.Renamed):
        return _strategy(con.subcon, reserved, fixed, con.name, in_bits)
    if isinstance(con, cs.Transformed) and con.decodefunc is cs.bytes2bits:
        return _strategy(con.subcon, reserved, fixed, name, True)
    if isinstance(con, cs.Transformed) and con.decodefunc is cs.bits2bytes:
        return _strategy(con.subcon, reserved, fixed, name, False)
    if isinstance(con, cs.Struct):
        fixed = fixed or {}
        unknown = set(fixed) - {s.name for s in con.subcons}
        if unknown:
            raise ValueError(f"no field {sorted(unknown)[0]!r}; fields: {', '.join(s.name for s in con.subcons)}")
        parts = {}
        for sub in con.subcons:
            given = fixed.get(sub.name)
            if isinstance(given, st.SearchStrategy):
                parts[sub.name] = given
            elif isinstance(given, dict):
                parts[sub.name] = _strategy(sub, reserved, given, sub.name, in_bits)
            elif given is not None:
                parts[sub.name] = st.just(given)
            else:
                parts[sub.name] = _strategy(sub, reserved, None, sub.name, in_bits)
        return st.fixed_dictionaries(parts)
    if isinstance(con, cs.Array) and isinstance(con.count, int):
        return st.lists(_strategy(con.subcon, reserved, None, name, in_bits), min_size=con.count, max_size=con.count)
    return _leaf(con, in_bits, reserved == RESERVED_ZERO and _is_reserved(name))


def fields_of(schema, reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """Dicts of values for every field of a construct schema (``schema.build`` takes them)."""
    if reserved not in (RESERVED_ZERO, RESERVED_ANY):
        raise ValueError(f"reserved must be {RESERVED_ZERO!r} or {RESERVED_ANY!r}, not {reserved!r}")
    return _strategy(schema, reserved, fixed)


def from_schema(schema, reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """Wire bytes of a construct schema, from :func:`fields_of`."""
    return fields_of(schema, reserved, **fixed).map(schema.build)


def lrh(reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """IBA 7.7 LRH, 8 bytes (any LNH, PktLen and LIDs unless fixed)."""
    return from_schema(ibh.LRH, reserved, **fixed)


def grh(reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """IBA 8.3 GRH, 40 bytes."""
    return from_schema(ibh.GRH, reserved, **fixed)


def bth(reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """IBA 9.2 BTH, 12 bytes."""
    return from_schema(ibh.BTH, reserved, **fixed)


def deth(reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """IBA 9.3.3 DETH, 8 bytes."""
    return from_schema(ibh.DETH, reserved, **fixed)


def mad_header(reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """IBA 13.4.3 common MAD header, 24 bytes."""
    return from_schema(madc.MADHeader, reserved, **fixed)


def smp_attribute_id(unknown: bool = False) -> st.SearchStrategy:
    """An SMP attribute ID madpipe has a schema for; with ``unknown``, vendor and unassigned ones too."""
    known = st.sampled_from(sorted(smpc.SMP_ATTRIBUTES))
    if not unknown:
        return known
    return st.one_of(known, st.integers(0xFF00, 0xFFFF), st.integers(0, 0xFFFF))


def attribute(attr_id: int, reserved: str = RESERVED_ZERO, **fixed) -> st.SearchStrategy:
    """The 64-byte data area of SMP attribute ``attr_id`` (RawAttribute for an unknown ID)."""
    return from_schema(smpc.attribute_schema(attr_id), reserved, **fixed)


def pkey_table(pkeys=None) -> st.SearchStrategy:
    """One P_KeyTable block, 64 bytes: 32 P_Keys (``pkeys``: a strategy for the list)."""
    pkeys = pkeys if pkeys is not None else st.lists(st.integers(0, 0xFFFF), min_size=32, max_size=32)
    return pkeys.map(lambda p: smpc.PKeyTable.build(dict(pkeys=list(p))))


def _v(value):
    """A fixed value as a strategy; a strategy as is."""
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


_HOP = st.integers(1, 254)


@st.composite
def smp(draw, method=None, attr_id=None, attr_mod=None, directed=None, data=None, status=None,
        hops=None, tid=None, reserved: str = RESERVED_ZERO) -> bytes:
    """A 256-byte SMP (LID-routed class 0x01 or directed-route 0x81), the attribute's data drawn
    from its schema. Each argument: a value or a strategy. ``hops``: the directed route (a list
    of 0..63 ports; hop_cnt follows it, hop_ptr is 0 for a request, hop_cnt for a response)."""
    directed = draw(_v(directed) if directed is not None else st.booleans())
    method = draw(_v(method) if method is not None else st.sampled_from(
        [madc.IB_MGMT_METHOD_GET, madc.IB_MGMT_METHOD_SET, madc.IB_MGMT_METHOD_GET_RESP, madc.IB_MGMT_METHOD_TRAP]))
    attr_id = draw(_v(attr_id) if attr_id is not None else smp_attribute_id())
    attr_mod = draw(_v(attr_mod) if attr_mod is not None else st.integers(0, 0xFFFFFFFF))
    body = draw(_v(data) if data is not None else attribute(attr_id, reserved))
    status = draw(_v(status) if status is not None else st.sampled_from([0, 0, 0, 0x0004, 0x000C, 0x001C]))
    tid = draw(_v(tid) if tid is not None else st.integers(0, (1 << 64) - 1))
    kw = {}
    if directed:
        path = draw(_v(hops) if hops is not None else st.lists(_HOP, max_size=8))
        response = madc.is_response(method)
        kw = dict(directed=True, path=path, hop_ptr=len(path) if response else 0,
                  return_path=path if response else None)
    return build.smp_mad(method, attr_id, body, tid, attr_mod, status=status, **kw)


def pkey_table_set(block=None, port=None, pkeys=None, directed=None, method=madc.IB_MGMT_METHOD_SET,
                   tid=None) -> st.SearchStrategy:
    """A SubnSet(P_KeyTable) MAD, 256 bytes: block (default 0..3, inside the table), switch port in
    attr_mod bits 16-31 (default 0), 32 P_Keys, LID-routed or directed route. ``method`` makes a
    SubnGet or SubnGetResp instead."""
    block = _v(block) if block is not None else st.integers(0, 3)
    port = _v(port) if port is not None else st.just(0)
    pkeys = pkeys if pkeys is not None else st.lists(
        st.one_of(st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF)), min_size=32, max_size=32)
    return st.tuples(block, port, pkeys).flatmap(lambda t: smp(
        method=method, attr_id=smpc.IB_SMP_ATTR_PKEY_TABLE, attr_mod=(t[1] << 16) | t[0],
        data=smpc.PKeyTable.build(dict(pkeys=list(t[2]))), directed=directed, status=0, tid=tid))


@st.composite
def gmp(draw, mgmt_class=None, method=None, attr_id=None, tid=None) -> bytes:
    """A 256-byte GMP: PerfMgt (a known attribute's data from its schema), SA, CM or vendor."""
    cls = draw(_v(mgmt_class) if mgmt_class is not None else st.sampled_from(
        [madc.IB_MGMT_CLASS_PERF_MGMT, madc.IB_MGMT_CLASS_SUBN_ADM, madc.IB_MGMT_CLASS_CM, 0x09, 0x30]))
    method = draw(_v(method) if method is not None else st.sampled_from([0x01, 0x02, 0x03, 0x81, 0x12, 0x92]))
    tid = draw(_v(tid) if tid is not None else st.integers(0, (1 << 64) - 1))
    if cls == madc.IB_MGMT_CLASS_PERF_MGMT and attr_id is None:
        attr_id = draw(st.sampled_from(sorted(perf.PERF_ATTRIBUTES)))
    attr_id = draw(_v(attr_id) if attr_id is not None else st.integers(0, 0xFFFF))
    if cls == madc.IB_MGMT_CLASS_PERF_MGMT:
        data = bytes(40) + draw(from_schema(perf.attribute_schema(attr_id)))
    else:
        data = draw(st.binary(min_size=232, max_size=232))
    version = 2 if cls in (madc.IB_MGMT_CLASS_SUBN_ADM, madc.IB_MGMT_CLASS_CM) else 1
    return build.gmp_mad(cls, method, attr_id, tid, draw(st.integers(0, 0xFFFFFFFF)), data, class_version=version)


def mad() -> st.SearchStrategy:
    """Any 256-byte MAD madpipe reads: an SMP (either routing) or a GMP."""
    return st.one_of(smp(), gmp())


_LID = st.integers(1, 0xBFFF)
_GID = st.binary(min_size=16, max_size=16)


@st.composite
def frame(draw, payload=None, grh=None) -> bytes:
    """A MAD on the wire, LRH through VCRC with both CRCs right: an SMP on VL15/QP0 (LIDs drawn
    for LID-routed, permissive for directed route), or a GMP on QP1, maybe behind a GRH."""
    m = draw(payload if payload is not None else mad())
    if m[1] in (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
        if m[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
            return build.build_smp_frame(m, psn=draw(st.integers(0, 0xFFFFFF)))
        return build.build_smp_frame(m, draw(_LID), draw(_LID), psn=draw(st.integers(0, 0xFFFFFF)))
    use_grh = draw(_v(grh) if grh is not None else st.booleans())
    g = dict(sgid=draw(_GID), dgid=draw(_GID), tclass=draw(st.integers(0, 255)),
             flow_label=draw(st.integers(0, 0xFFFFF)), hoplmt=draw(st.integers(0, 255))) if use_grh else None
    return build.build_gmp_frame(m, draw(_LID), draw(_LID), sl=draw(st.integers(0, 15)),
                                 pkey=draw(st.sampled_from([0xFFFF, 0x7FFF, 0x8001])), grh=g)


@st.composite
def mailbox(draw, pkey_index=None, port=None, service_type=None, optpar=None, mgid_index=None,
            reserved: str = RESERVED_ANY) -> bytes:
    """An mlx4 QP-context mailbox, 256 bytes, every byte drawn (every byte is a field); the fields
    the SR-IOV master reads can be fixed or drawn from their interesting values: ``pkey_index``
    (primary path; 0..255, past 127 the kernel's read spills), ``port`` (1 or 2, the sched_queue
    bit), ``service_type`` (RC 0, UC 1, RD 2, UD 3, XRC 6, MLX 7), ``optpar``, ``mgid_index``."""
    buf = bytearray(draw(from_schema(qpc.QPContextMailbox, reserved)))
    if pkey_index is not None:
        buf[qpc.MBOX_PRI_PKEY_INDEX] = draw(_v(pkey_index))
    if port is not None:
        p = draw(_v(port))
        buf[qpc.MBOX_PRI_SCHED_QUEUE] = (buf[qpc.MBOX_PRI_SCHED_QUEUE] & ~0x40) | ((p - 1) << 6)
    st_ = draw(_v(service_type) if service_type is not None else st.sampled_from([0, 1, 2, 3, 6, 7, buf[qpc.MBOX_SERVICE_TYPE]]))
    buf[qpc.MBOX_SERVICE_TYPE] = st_
    o = draw(_v(optpar) if optpar is not None else st.sampled_from(
        [0, 0x80, 0x81, 0x1, 0x10 | 0x80, 0x20, int.from_bytes(buf[0:4], "big")]))
    buf[qpc.MBOX_OPTPAR:qpc.MBOX_OPTPAR + 4] = o.to_bytes(4, "big")
    if mgid_index is not None:
        buf[qpc.MBOX_PRI_MGID_INDEX] = draw(_v(mgid_index))
    return bytes(buf)


@st.composite
def qp_command(draw, base_proxy_sqpn: int = 64, slave=None, transition=None) -> tuple:
    """(mailbox, transition name, slave, qpn): one QP state-transition command for
    ``madpipe.pipeline.mlx4.paravirt.rewrite``. QP numbers cluster around the proxy (from
    ``base_proxy_sqpn``) and tunnel ranges; ``slave`` defaults to 0..79 and a few outside."""
    mbox = draw(mailbox(pkey_index=st.one_of(st.integers(0, 3), st.integers(120, 255))))
    t = draw(_v(transition) if transition is not None else st.sampled_from(sorted(qpc.TRANSITIONS)))
    s = draw(_v(slave) if slave is not None else st.one_of(st.integers(0, 79), st.sampled_from([80, 255, -1])))
    p = base_proxy_sqpn
    tun = p + 8 * 80
    qpn = draw(st.one_of(st.integers(p - 8, tun + 648), st.integers(0, (1 << 32) - 1)))
    return mbox, t, s, qpn


def packet(frames=None):
    """Scapy packets (``madpipe.codecs.layers``, link type 197/247 layers) dissected from
    :func:`frame`; needs the scapy layers module."""
    from madpipe.codecs import layers

    return (frames if frames is not None else frame()).map(layers.LRH)
