"""SMPs and responses built by hand (what ``madpipe craft`` runs), from the scapy layers.

``smp_get("port-info", lid=4, attr_mod=1)``, ``smp_set_pkeys(0, [0xFFFF, 0x8001], lid=4)``,
``getresp(request)``: whole packets, LRH to VCRC, with the CRCs computed. A value that cannot go
on the wire as asked is a :class:`~madpipe.codecs.errors.CraftError` (one line), unless ``raw``
asks to send it cut to its field, as a C program storing it would.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from scapy.packet import Packet, Raw

from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.errors import CraftError
from madpipe.codecs.layers import BTH, DETH, GRH, LRH
from madpipe.codecs.mad_layers import (
    IB_SMP_MAX_HOP_CNT,
    MAD,
    SMP,
    SMP_ATTRIBUTE_LAYERS,
    PKeyTable,
    SMPDirected,
    attribute_layer_for,
)

__all__ = [
    "smp_attribute", "smp_packet", "smp_get", "smp_set", "smp_set_pkeys", "getresp", "from_record",
    "check_range", "check_pkeys", "pkey_attr_mod", "IB_PKEY_MAX_BLOCK",
]

IB_PKEY_MAX_BLOCK = 2047  # P_KeyTable: at most 65536 entries, 32 per block (IBA 14.2.5.7)

# Names people type for SMP attributes besides the schema's (any case, '-' and '_' ignored):
# infiniband-diags' smpquery operations and short forms.
_SMP_ATTRIBUTE_ALIASES = {
    "nodedesc": smpc.IB_SMP_ATTR_NODE_DESC,
    "pkeys": smpc.IB_SMP_ATTR_PKEY_TABLE,
    "guids": smpc.IB_SMP_ATTR_GUID_INFO,
    "sl2vl": smpc.IB_SMP_ATTR_SL_TO_VL_TABLE,
    "sltovl": smpc.IB_SMP_ATTR_SL_TO_VL_TABLE,
    "vlarb": smpc.IB_SMP_ATTR_VL_ARB_TABLE,
    "lft": smpc.IB_SMP_ATTR_LINEAR_FORWARD_TABLE,
    "rft": smpc.IB_SMP_ATTR_RANDOM_FORWARD_TABLE,
    "mft": smpc.IB_SMP_ATTR_MCAST_FORWARD_TABLE,
    "ledinfo": smpc.IB_SMP_ATTR_LED_INFO,
}


def smp_attribute(attr) -> tuple[int, type]:
    """(attr_id, layer) of an SMP attribute given as id, layer, or name.

    Names: the schema's ('PKeyTable'), kebab case ('pkey-table', 'port-info', 'node-info'), or
    smpquery's ('pkeys', 'nodedesc', 'sl2vl', 'vlarb', 'guids'); case, '-' and '_' are ignored.
    A vendor or unknown id gives a Raw layer.
    """
    if isinstance(attr, type) and issubclass(attr, Packet):
        for attr_id, layer in SMP_ATTRIBUTE_LAYERS.items():
            if layer is attr:
                return attr_id, layer
        raise CraftError(f"{attr.__name__} is not an SMP attribute layer")
    if isinstance(attr, int):
        if not 0 <= attr <= 0xFFFF:
            raise CraftError(f"attribute id {attr:#x} does not fit 16 bits")
        return attr, SMP_ATTRIBUTE_LAYERS.get(attr, Raw)
    key = re.sub(r"[-_ ]", "", str(attr)).lower()
    for attr_id, layer in SMP_ATTRIBUTE_LAYERS.items():
        if layer.__name__.lower() == key:
            return attr_id, layer
    if key in _SMP_ATTRIBUTE_ALIASES:
        return _SMP_ATTRIBUTE_ALIASES[key], SMP_ATTRIBUTE_LAYERS[_SMP_ATTRIBUTE_ALIASES[key]]
    try:
        return smp_attribute(int(key, 0))
    except ValueError:
        names = ", ".join(_kebab(layer.__name__) for layer in SMP_ATTRIBUTE_LAYERS.values())
        raise CraftError(f"unknown SMP attribute {attr!r}; one of: {names}, or a number") from None


def _kebab(name: str) -> str:
    """'PKeyTable' -> 'pkey-table', 'SLtoVLMappingTable' -> 'sl-to-vl-mapping-table'."""
    name = name.replace("PKey", "Pkey").replace("GUID", "Guid").replace("SLtoVL", "SlToVl")
    name = name.replace("VLArb", "VlArb").replace("SMInfo", "SmInfo")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def check_range(what: str, value: int, limit: int, raw: bool, width: int, hexa: bool = False) -> int:
    """``value`` if 0 <= value <= limit, else a ``CraftError``; with ``raw``, a value past
    ``limit`` is allowed and cut to ``width`` bits, as a C program storing it would."""
    if value < 0:
        raise CraftError(f"{what} {value} is negative")
    if value > limit and not raw:
        shown = f"{value:#x} is past the maximum {limit:#x}" if hexa else f"{value} is past the maximum {limit}"
        raise CraftError(f"{what} {shown} (--raw, or raw=True, sends it anyway)")
    return value & ((1 << width) - 1)


def smp_packet(method: int, attr, lid: int | None = None, dr_path: Sequence[int] | None = None,
               attr_mod: int = 0, *, slid: int | None = None, tid: int = 1, m_key: int = 0,
               hop_cnt: int | None = None, hop_ptr: int = 0, status: int = 0, sl: int = 0,
               pkey: int = ibh.IB_DEFAULT_PKEY_FULL, raw: bool = False, data=None) -> Packet:
    """An SMP on the wire: LRH / BTH / DETH / SMP or SMPDirected / attribute, CRCs computed.

    ``lid``: a LID-routed SMP (class 0x01) to that LID, from ``slid`` (default 1).
    ``dr_path``: a directed-route SMP (class 0x81) through those ports (hops 1..n; ``[]`` is
    the local port), LRH and DR LIDs permissive (0xFFFF), ``slid`` default 0xFFFF.
    Neither: a directed-route SMP to the local port. ``data`` is the attribute: a layer
    (``PortInfo(port_state=1)``), a dict of its fields, or bytes; None is the attribute's
    defaults (zeros). A hop count over 63 is an error unless ``raw`` (then ``hop_cnt`` may be
    anything up to 255).
    """
    if lid is not None and dr_path is not None:
        raise CraftError("give a LID (LID routed) or a directed-route path, not both")
    attr_id, layer = smp_attribute(attr)
    check_range("LID", lid or 0, 0xFFFF, False, 16, hexa=True)
    attr_mod = check_range("attribute modifier", attr_mod, 0xFFFFFFFF, False, 32, hexa=True)
    data = _attribute_data(layer, attr_id, data)
    if lid is not None:
        if hop_cnt is not None or hop_ptr:
            raise CraftError("a hop count or pointer goes with a directed route, not a LID")
        lrh = LRH(dlid=lid, slid=1 if slid is None else slid, sl=sl)
        mad: Packet = SMP(method=method, tid=tid, attr_id=attr_id, attr_mod=attr_mod, m_key=m_key, status=status)
    else:
        hops = list(dr_path or [])
        if len(hops) > IB_SMP_MAX_HOP_CNT:
            raise CraftError(f"a directed route has at most {IB_SMP_MAX_HOP_CNT} hops, not {len(hops)}")
        for port in hops:
            check_range("path port", port, 0xFF, False, 8)
        if hop_cnt is not None and hop_cnt > 0xFF:
            raise CraftError(f"hop count {hop_cnt} does not fit its byte")
        count = len(hops) if hop_cnt is None else check_range("hop count", hop_cnt, IB_SMP_MAX_HOP_CNT, raw, 8)
        lrh = LRH(dlid=ibh.IB_PERMISSIVE_LID, slid=ibh.IB_PERMISSIVE_LID if slid is None else slid, sl=sl)
        if madc.is_response(method):
            status |= madc.IB_SMP_DIRECTION
        mad = SMPDirected(method=method, tid=tid, attr_id=attr_id, attr_mod=attr_mod, m_key=m_key,
                          status=status, hop_ptr=hop_ptr, hop_cnt=count, initial_path=hops)
    return lrh / BTH(pkey=pkey) / DETH() / mad / data


def _attribute_data(layer: type[Packet], attr_id: int, data) -> Packet:
    """The attribute payload from a layer, a dict of the attribute's fields, bytes or None."""
    if data is None:
        data = {}
    if isinstance(data, (bytes, bytearray)):
        return Raw(bytes(data))
    if isinstance(data, dict):
        if layer is Raw:
            if data:
                raise CraftError(f"attribute {attr_id:#06x} has no schema: give its data as bytes")
            return Raw(bytes(smpc.IB_SMP_DATA_SIZE))
        names = [f.name for f in layer.fields_desc]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise CraftError(f"{layer.__name__} has no field {unknown[0]!r} (fields: {', '.join(names)})")
        return layer(**data)
    if isinstance(data, Packet):
        return data
    raise CraftError(f"attribute data is a layer, a dict of fields or bytes, not {type(data).__name__}")


def smp_get(attr, lid: int | None = None, dr_path: Sequence[int] | None = None, attr_mod: int = 0,
            **kwargs) -> Packet:
    """SubnGet(attr): ``smp_get('port-info', lid=4, attr_mod=1)``, ``smp_get('node-info', dr_path=[1, 3])``.

    Keyword arguments are ``smp_packet``'s (slid, tid, m_key, raw, data...).
    """
    return smp_packet(madc.IB_MGMT_METHOD_GET, attr, lid, dr_path, attr_mod, **kwargs)


def smp_set(attr, lid: int | None = None, dr_path: Sequence[int] | None = None, attr_mod: int = 0,
            **kwargs) -> Packet:
    """SubnSet(attr): ``smp_set('port-info', lid=4, attr_mod=1, data={'port_state': 1})``."""
    return smp_packet(madc.IB_MGMT_METHOD_SET, attr, lid, dr_path, attr_mod, **kwargs)


def pkey_attr_mod(block: int, port: int | None = None, raw: bool = False) -> int:
    """P_KeyTable attribute modifier: block in bits 0-15, switch port in bits 16-31."""
    block = check_range("P_KeyTable block", block, IB_PKEY_MAX_BLOCK, raw, 16)
    port = check_range("port", port or 0, 0xFF, raw, 16)
    return port << 16 | block


def check_pkeys(pkeys: Sequence[int], raw: bool = False) -> list[int]:
    """At most 32 P_Keys, each 16 bits (with ``raw``, larger values are cut to 16 bits)."""
    if len(pkeys) > smpc.IB_NUM_PKEY_ELEMENTS_IN_BLOCK:
        raise CraftError(f"a P_KeyTable block holds {smpc.IB_NUM_PKEY_ELEMENTS_IN_BLOCK} P_Keys, not {len(pkeys)}")
    return [check_range("P_Key", p, 0xFFFF, raw, 16, hexa=True) for p in pkeys]


def smp_set_pkeys(block: int, pkeys: Sequence[int], lid: int | None = None,
                  dr_path: Sequence[int] | None = None, port: int | None = None, *,
                  raw: bool = False, method: int = madc.IB_MGMT_METHOD_SET, **kwargs) -> Packet:
    """SubnSet(P_KeyTable) of one block: ``smp_set_pkeys(0, [0xFFFF, 0x8001], lid=4)``.

    ``pkeys`` fill the block from index 0 (the rest are 0); ``port`` (a switch port) goes in
    bits 16-31 of the attribute modifier. A P_Key over 0xFFFF or a block past 2047 is an error
    unless ``raw``.
    """
    attr_mod = pkey_attr_mod(block, port, raw)
    keys = check_pkeys(pkeys, raw)
    return smp_packet(method, smpc.IB_SMP_ATTR_PKEY_TABLE, lid, dr_path, attr_mod, raw=raw,
                      data=PKeyTable(pkeys=keys), **kwargs)


def getresp(request: Packet, data=None, *, status: int = 0) -> Packet:
    """The response an agent sends to ``request`` (a packet from the LRH, or an ERF record).

    Same TID, attribute and modifier; method GetResp for Get and Set (TrapRepress for Trap,
    else the method with the response bit); LIDs, GIDs and QPs swapped; for a directed-route
    SMP the D bit set, hop pointer and paths kept. ``data`` replaces the attribute: a layer,
    bytes, or a dict of the attribute's fields; None keeps the request's. CRCs, PktLen are
    recomputed.
    """
    if LRH not in request:
        raise CraftError("getresp needs a packet with an LRH")
    resp = request[LRH].copy()
    resp.icrc = resp.vcrc = resp.pktlen = None
    resp.slid, resp.dlid = request[LRH].dlid, request[LRH].slid
    if GRH in resp:
        resp[GRH].sgid, resp[GRH].dgid = request[GRH].dgid, request[GRH].sgid
        resp[GRH].paylen = None
    if BTH in resp and DETH in resp:
        resp[BTH].dqp, resp[DETH].sqp = request[DETH].sqp, request[BTH].dqp
    if MAD not in resp:
        raise CraftError("getresp needs a request that carries a MAD")
    mad = resp[MAD]
    method = mad.method
    if method == madc.IB_MGMT_METHOD_SET:
        mad.method = madc.IB_MGMT_METHOD_GET_RESP
    elif method == madc.IB_MGMT_METHOD_TRAP:
        mad.method = madc.IB_MGMT_METHOD_TRAP_REPRESS
    else:
        mad.method = method | madc.IB_MGMT_METHOD_RESP
    mad.status = status
    if isinstance(mad, SMPDirected):
        mad.status = status | madc.IB_SMP_DIRECTION
    if data is not None:
        data = _attribute_data(attribute_layer_for(type(mad), mad.attr_id), mad.attr_id, data)
        mad.remove_payload()
        mad.add_payload(data)
    return resp


def from_record(record: dict) -> Packet:
    """The packet of a ``madpipe decode -T json`` record (see ``encode.encode_record``)."""
    from madpipe.codecs.encode import encode_record

    return LRH(encode_record(record))
