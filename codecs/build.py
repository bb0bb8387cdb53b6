"""Build MAD packets as they appear on the wire, from the LRH through the VCRC.

Everything goes through the construct schemas of ``ib_headers``, ``mad`` and ``smp`` and is
sealed with ``crc.seal``, so a packet built here decodes with ``frame.decode_frame`` to the
values it was built from, CRCs included. The layout is formats.md's "Packet shape of a MAD":

    LRH (8) | [GRH (40)] | BTH (12, UD SEND only 0x64) | DETH (8) | MAD (256) | ICRC (4) | VCRC (2)

- SMPs (``build_smp_frame``): VL15, LNH=2 (local), QP0 -> QP0, Q_Key 0, P_Key 0xFFFF.
  A directed-route SMP travels with the permissive LID 0xFFFF at both ends by default.
- GMPs (``build_gmp_frame``): QP1 -> QP1 with Q_Key 0x80010000 (IB_QP1_QKEY), any VL but 15,
  with an optional GRH (LNH=3).
- MADs: ``smp_mad`` (any SMP attribute, LID-routed or directed-route) and ``pkey_table_mad``
  (one P_KeyTable block).

Example, a directed-route SubnSet(P_KeyTable) block 0 through ports 1 then 3::

    mad = pkey_table_mad(IB_MGMT_METHOD_SET, 0, [0xFFFF, 0x8001], tid=7, directed=True, path=[1, 3])
    packet = build_smp_frame(mad)

Later work (scapy layers, ``madpipe craft``) can reuse these as the reference builders.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from madpipe.codecs import crc
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc

IB_LRH_LVER = 0
IB_GRH_IPVER = 6
IB_GRH_NXTHDR_IBA = 0x1B  # GRH NxtHdr of an IBA transport packet (IBA 8.3.1)
IB_SMP_VL = 15
IB_QP0 = 0
IB_QP1 = 1


def _gid(value: str | bytes | int) -> bytes:
    """A GID given as text ('fe80::2:c903:0:1f2d'), 16 bytes or an int, as 16 bytes."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 16:
            raise ValueError(f"a GID is 16 bytes, not {len(value)}")
        return bytes(value)
    return ipaddress.IPv6Address(value).packed


def build_packet(payload: bytes, *, slid: int, dlid: int, dqp: int, sqp: int, qkey: int,
                 vl: int = 0, sl: int = 0, pkey: int = ibh.IB_DEFAULT_PKEY_FULL, psn: int = 0,
                 opcode: int = ibh.OPCODE_UD_SEND_ONLY, se: int = 0, m: int = 0, tver: int = 0,
                 a: int = 0, grh: dict | None = None) -> bytes:
    """A UD packet around ``payload``: LRH, optional GRH, BTH, DETH, payload, ICRC and VCRC.

    LRH.PktLen (4-byte words, LRH through ICRC), BTH.PadCnt and GRH.PayLen (BTH through ICRC)
    are computed; the payload is padded with zeros to a multiple of 4 bytes. ``grh`` holds any
    of tclass, flow_label, hoplmt, sgid, dgid (GIDs as text, 16 bytes or int); LNH is 3 when a
    GRH is given, else 2.
    """
    padcnt = -len(payload) % 4
    body_len = ibh.BTH_SIZE + ibh.DETH_SIZE + len(payload) + padcnt + crc.ICRC_SIZE
    grh_bytes = b""
    lnh = crc.LNH_IBA_LOCAL
    if grh is not None:
        lnh = crc.LNH_IBA_GLOBAL
        grh_bytes = ibh.GRH.build(dict(
            ipver=IB_GRH_IPVER,
            tclass=grh.get("tclass", 0),
            flow_label=grh.get("flow_label", 0),
            paylen=body_len,
            nxthdr=IB_GRH_NXTHDR_IBA,
            hoplmt=grh.get("hoplmt", 0),
            sgid=_gid(grh.get("sgid", 0)),
            dgid=_gid(grh.get("dgid", 0)),
        ))
    pktlen_bytes = ibh.LRH_SIZE + len(grh_bytes) + body_len
    lrh = ibh.LRH.build(dict(vl=vl, lver=IB_LRH_LVER, sl=sl, resv2=0, lnh=lnh, dlid=dlid,
                             resv5=0, pktlen=pktlen_bytes // 4, slid=slid))
    bth = ibh.BTH.build(dict(opcode=opcode, se=se, m=m, padcnt=padcnt, tver=tver, pkey=pkey,
                             resv8a=0, dqp=dqp, a=a, resv7b=0, psn=psn))
    deth = ibh.DETH.build(dict(qkey=qkey, resv8=0, sqp=sqp))
    return crc.seal(lrh + grh_bytes + bth + deth + bytes(payload) + bytes(padcnt))


def _is_directed(mad: bytes) -> bool:
    return mad[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE


def build_smp_frame(mad: bytes, slid: int | None = None, dlid: int | None = None,
                    dr: bool | None = None, *, sl: int = 0, psn: int = 0,
                    pkey: int = ibh.IB_DEFAULT_PKEY_FULL) -> bytes:
    """An SMP on the wire: VL15, LNH=2, QP0 -> QP0, Q_Key 0, around a 256-byte SMP ``mad``.

    ``dr`` (directed route) defaults to what the MAD's class says (0x81); a directed-route
    SMP's SLID and DLID default to the permissive LID 0xFFFF. A LID-routed one needs both.
    """
    if len(mad) != madc.MAD_SIZE:
        raise ValueError(f"a MAD is {madc.MAD_SIZE} bytes, not {len(mad)}")
    dr = _is_directed(mad) if dr is None else dr
    if dr:
        slid = ibh.IB_PERMISSIVE_LID if slid is None else slid
        dlid = ibh.IB_PERMISSIVE_LID if dlid is None else dlid
    elif slid is None or dlid is None:
        raise ValueError("a LID-routed SMP needs slid and dlid")
    return build_packet(mad, slid=slid, dlid=dlid, dqp=IB_QP0, sqp=IB_QP0, qkey=0,
                        vl=IB_SMP_VL, sl=sl, pkey=pkey, psn=psn)


def build_gmp_frame(mad: bytes, slid: int, dlid: int, *, vl: int = 0, sl: int = 0,
                    psn: int = 0, pkey: int = ibh.IB_DEFAULT_PKEY_FULL, dqp: int = IB_QP1,
                    sqp: int = IB_QP1, qkey: int = ibh.IB_QP1_QKEY, grh: dict | None = None) -> bytes:
    """A GMP on the wire: QP1 -> QP1 with Q_Key 0x80010000, optionally behind a GRH."""
    if len(mad) != madc.MAD_SIZE:
        raise ValueError(f"a MAD is {madc.MAD_SIZE} bytes, not {len(mad)}")
    if vl == IB_SMP_VL:
        raise ValueError("VL15 carries SMPs only")
    return build_packet(mad, slid=slid, dlid=dlid, dqp=dqp, sqp=sqp, qkey=qkey, vl=vl, sl=sl,
                        pkey=pkey, psn=psn, grh=grh)


def mad_header(mgmt_class: int, method: int, attr_id: int, tid: int, attr_mod: int = 0,
               status: int = 0, class_specific: int = 0, class_version: int = 1,
               base_version: int = 1) -> bytes:
    """The 24-byte common MAD header (IBA 13.4.3)."""
    return madc.MADHeader.build(dict(base_version=base_version, mgmt_class=mgmt_class,
                                     class_version=class_version, method=method, status=status,
                                     class_specific=class_specific, tid=tid, attr_id=attr_id,
                                     resv=0, attr_mod=attr_mod))


def gmp_mad(mgmt_class: int, method: int, attr_id: int, tid: int, attr_mod: int = 0,
            data: bytes = b"", class_version: int = 1, status: int = 0) -> bytes:
    """A 256-byte MAD of any class: the common header, then ``data`` padded with zeros."""
    body = bytes(data).ljust(madc.MAD_SIZE - madc.MAD_HEADER_SIZE, b"\0")
    if len(body) != madc.MAD_SIZE - madc.MAD_HEADER_SIZE:
        raise ValueError(f"class data of {len(data)} bytes does not fit a MAD")
    return mad_header(mgmt_class, method, attr_id, tid, attr_mod, status, 0, class_version) + body


def _path(hops: Sequence[int]) -> bytes:
    """A 64-byte path: entry 0 unused (IBA 14.2.2), hops 1..n the ports."""
    if len(hops) >= smpc.IB_SMP_MAX_PATH_HOPS:
        raise ValueError(f"a directed route has at most 63 hops, not {len(hops)}")
    return bytes([0, *hops]).ljust(smpc.IB_SMP_MAX_PATH_HOPS, b"\0")


def smp_mad(method: int, attr_id: int, data: bytes, tid: int, attr_mod: int = 0, *,
            m_key: int = 0, status: int = 0, directed: bool = False,
            path: Sequence[int] = (), return_path: Sequence[int] | None = None,
            hop_ptr: int = 0, dr_slid: int = ibh.IB_PERMISSIVE_LID,
            dr_dlid: int = ibh.IB_PERMISSIVE_LID, direction: int | None = None) -> bytes:
    """A 256-byte SMP carrying ``data`` (at most 64 bytes, zero padded) for attribute ``attr_id``.

    LID-routed (class 0x01) by default. ``directed=True`` gives class 0x81 with ``path`` as the
    initial path (hop_cnt = len(path)), ``return_path`` (default all zeros), ``hop_ptr``,
    ``dr_slid`` and ``dr_dlid``; the D bit (status bit 15) is set for responses unless
    ``direction`` says otherwise.
    """
    data = bytes(data).ljust(smpc.IB_SMP_DATA_SIZE, b"\0")
    if len(data) != smpc.IB_SMP_DATA_SIZE:
        raise ValueError(f"SMP data is at most 64 bytes, not {len(data)}")
    if not directed:
        return smpc.SMP.build(dict(
            hdr=dict(base_version=1, mgmt_class=madc.IB_MGMT_CLASS_SUBN_LID_ROUTED,
                     class_version=1, method=method, status=status, class_specific=0,
                     tid=tid, attr_id=attr_id, resv=0, attr_mod=attr_mod),
            m_key=m_key, resv=bytes(32), data=data, resv2=bytes(128)))
    if direction is None:
        direction = 1 if madc.is_response(method) else 0
    status = (status & 0x7FFF) | (madc.IB_SMP_DIRECTION if direction else 0)
    return smpc.SMPDirected.build(dict(
        hdr=dict(base_version=1, mgmt_class=madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE,
                 class_version=1, method=method, status=status, hop_ptr=hop_ptr,
                 hop_cnt=len(path), tid=tid, attr_id=attr_id, resv=0, attr_mod=attr_mod),
        m_key=m_key, dr_slid=dr_slid, dr_dlid=dr_dlid, resv=bytes(28), data=data,
        initial_path=_path(path),
        return_path=_path(return_path if return_path is not None else [0] * len(path))))


def pkey_table_mad(method: int, block: int, pkeys: Sequence[int], tid: int, *,
                   directed: bool = False, path: Sequence[int] = (), attr_mod_port: int = 0,
                   **smp_kw) -> bytes:
    """An SMP for one P_KeyTable block (attribute 0x0016): SubnGet, SubnSet or SubnGetResp.

    ``pkeys`` fills the block from index 0 (at most 32, the rest are 0). The attribute modifier
    is ``block`` in bits 0-15 and ``attr_mod_port`` (a switch port) in bits 16-31. Other keyword
    arguments go to ``smp_mad`` (m_key, status, return_path, hop_ptr, dr_slid, dr_dlid...).
    """
    if len(pkeys) > smpc.IB_NUM_PKEY_ELEMENTS_IN_BLOCK:
        raise ValueError(f"a P_KeyTable block holds 32 P_Keys, not {len(pkeys)}")
    if not 0 <= block <= 0xFFFF or not 0 <= attr_mod_port <= 0xFFFF:
        raise ValueError("block and port are 16-bit")
    table = list(pkeys) + [0] * (smpc.IB_NUM_PKEY_ELEMENTS_IN_BLOCK - len(pkeys))
    data = smpc.PKeyTable.build(dict(pkeys=table))
    return smp_mad(method, smpc.IB_SMP_ATTR_PKEY_TABLE, data, tid,
                   (attr_mod_port << 16) | block, directed=directed, path=path, **smp_kw)
