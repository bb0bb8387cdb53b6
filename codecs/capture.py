"""Capture files: classic pcap (µs and ns, both byte orders) and pcapng, read as a stream.

Link types: 247 (LINKTYPE_INFINIBAND, raw packet from the LRH) and 197 (ERF; type 21 records
hold InfiniBand, what ibdump writes). Nothing is lost silently: a record that yields no packet
is still returned, with ``skip`` saying why, and the reader counts it.
"""
from __future__ import annotations

import io
import os
import struct
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Iterator, cast

from madpipe.codecs.erf_records import ERF_HEADER_SIZE, erf_ts_to_ns, erf_unwrap, erf_wrap
from madpipe.codecs.errors import CaptureError

if TYPE_CHECKING:
    from madpipe.codecs import pcapng

LINKTYPE_ERF = 197
LINKTYPE_INFINIBAND = 247
LINKTYPE_USER0 = 147
LINKTYPES = {LINKTYPE_ERF: "ERF", LINKTYPE_INFINIBAND: "INFINIBAND"}

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAP_HEADER_SIZE = 24
PCAP_RECORD_SIZE = 16
# A classic pcap record whose timestamp fraction is a second or more (link type 247; a 197 record's
# time is its ERF header's). Shared with the batch ingest, so both count the same reason.
PCAP_TS_FRACTION = "field ts_frac: the timestamp's fraction of a second is a second or more"
# Larger than any snapshot length in use (tcpdump's is 262144); a bigger record length means
# the file is corrupt at that point and cannot be resynchronised.
MAX_RECORD = 1 << 20


@dataclass(slots=True)
class Packet:
    """One record of a capture. ``data`` starts at the LRH, or is None when ``skip`` says why."""

    frame: int  # 1-based, as tshark numbers frames
    ts_ns: int
    data: bytes | None
    orig_len: int  # length on the wire, from the record header
    offset: int  # byte offset of the record in the file
    linktype: int
    iface: int = 0
    skip: str | None = None


class CaptureReader:
    """Iterate the packets of a pcap or pcapng file without loading it whole.

    >>> with CaptureReader("pcaps/infiniband_endace_erf_2008.pcap") as cap:  # doctest: +SKIP
    ...     for pkt in cap: ...
    After iteration, ``skipped`` counts reasons, ``error`` holds a fatal reason that ended the
    file early (truncation, corrupt length) or None.
    """

    def __init__(self, path: str | os.PathLike | BinaryIO):
        self._f: BinaryIO
        if hasattr(path, "read"):
            self._f = cast(BinaryIO, path)  # anything with read() is taken for a binary stream
            self.name = getattr(path, "name", "<stream>")
            self._own = False
        else:
            self.name = os.fspath(path)
            try:
                self._f = open(self.name, "rb", buffering=1 << 20)
            except OSError as exc:
                raise CaptureError(f"{self.name}: cannot open: {exc.strerror or exc}") from None
            self._own = True
        self.skipped: Counter[str] = Counter()
        self.error: str | None = None
        self.frames = 0
        head = self._f.read(PCAP_HEADER_SIZE)
        if len(head) < 4:
            self.close()
            raise CaptureError(f"{self.name}: empty or truncated file ({len(head)} bytes), not a capture")
        magic_le = struct.unpack_from("<I", head)[0]
        if magic_le == PCAPNG_SHB:
            self.format = "pcapng"
            self._head = head
            self.linktype = None
            self.nanosecond = None
        else:
            self.format = "pcap"
            self._parse_pcap_header(head)

    # -- classic pcap ---------------------------------------------------------------------
    def _parse_pcap_header(self, head: bytes) -> None:
        for order in "<>":
            magic = struct.unpack_from(order + "I", head)[0]
            if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                break
        else:
            self.close()
            raise CaptureError(
                f"{self.name}: bad magic 0x{head[:4].hex()} at offset 0: not a pcap or pcapng file"
            )
        if len(head) < PCAP_HEADER_SIZE:
            self.close()
            raise CaptureError(f"{self.name}: truncated pcap header ({len(head)} of 24 bytes)")
        self.byte_order = order
        self.nanosecond = magic == PCAP_MAGIC_NS
        _m, _vmaj, _vmin, _tz, _sig, self.snaplen, network = struct.unpack(order + "IHHiIII", head)
        self.linktype = network & 0x0FFFFFFF  # upper bits: FCS length flags
        if self.linktype not in LINKTYPES:
            self.close()
            raise CaptureError(
                f"{self.name}: link type {self.linktype} is not InfiniBand "
                "(madpipe reads 247 INFINIBAND and 197 ERF)"
            )

    def _iter_pcap(self) -> Iterator[Packet]:
        f, order = self._f, self.byte_order
        linktype = cast(int, self.linktype)  # a pcap file has one, checked in the header
        rec = struct.Struct(order + "IIII")
        scale = 1 if self.nanosecond else 1000
        offset = PCAP_HEADER_SIZE
        frame = 0
        while True:
            head = f.read(PCAP_RECORD_SIZE)
            if not head:
                return
            frame += 1
            if len(head) < PCAP_RECORD_SIZE:
                self._fatal(frame, offset, f"truncated record header ({len(head)} of 16 bytes)")
                return
            sec, frac, incl, orig = rec.unpack(head)
            if incl > MAX_RECORD:
                self._fatal(frame, offset, f"record length {incl} is corrupt (over {MAX_RECORD})")
                return
            data = f.read(incl)
            if len(data) < incl:
                self._fatal(frame, offset, f"truncated record: {len(data)} of {incl} bytes")
                return
            if frac * scale >= 1_000_000_000 and linktype != LINKTYPE_ERF:
                pkt = Packet(frame, sec * 1_000_000_000 + frac * scale, None, orig, offset, linktype)
                yield self._skip(pkt, PCAP_TS_FRACTION)
            else:
                yield self._packet(frame, sec * 1_000_000_000 + frac * scale, data, orig, offset, linktype)
            offset += PCAP_RECORD_SIZE + incl

    # -- pcapng ---------------------------------------------------------------------------
    def _iter_pcapng(self) -> Iterator[Packet]:
        from madpipe.codecs import pcapng  # here: a classic pcap never needs it (~1.5 ms of every start)

        self._pcapng = pcapng
        f = self._f
        buf = io.BytesIO(self._head)  # bytes already read while sniffing the magic
        offset = 0
        frame = 0
        order = "<"
        ifaces: list[pcapng.Interface] = []

        def read(n: int) -> bytes:
            got = buf.read(n)
            return got + f.read(n - len(got)) if len(got) < n else got

        while True:
            head = read(8)
            if not head:
                return
            if len(head) < 8:
                self._fatal(frame + 1, offset, f"truncated pcapng block header ({len(head)} of 8 bytes)")
                return
            btype = struct.unpack_from("<I", head)[0]
            if btype == PCAPNG_SHB:
                bom = read(4)
                if len(bom) < 4:
                    self._fatal(frame + 1, offset, "truncated section header block")
                    return
                if struct.unpack("<I", bom)[0] == PCAPNG_BOM:
                    order = "<"
                elif struct.unpack(">I", bom)[0] == PCAPNG_BOM:
                    order = ">"
                else:
                    self._fatal(frame + 1, offset, f"bad byte-order magic 0x{bom.hex()} in section header")
                    return
                ifaces = []  # interface ids restart in each section
                blen = struct.unpack_from(order + "I", head, 4)[0]
                if blen < 28 or blen % 4 or blen > MAX_RECORD + 64:
                    self._fatal(frame + 1, offset, f"section header block length {blen} is corrupt")
                    return
                body = bom + read(blen - 12)
            else:
                btype, blen = struct.unpack(order + "II", head)
                if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
                    self._fatal(frame + 1, offset, f"pcapng block length {blen} is corrupt")
                    return
                body = read(blen - 8)
            if len(body) < blen - 8:
                self._fatal(frame + 1, offset, f"truncated pcapng block: {len(body) + 8} of {blen} bytes")
                return
            trailer = struct.unpack_from(order + "I", body, len(body) - 4)[0]
            if trailer != blen:
                # The lengths at both ends disagree: where the next block starts is unknown.
                self._fatal(frame + 1, offset, f"pcapng block length {blen} at its start, {trailer} at its end")
                return
            body = body[:-4]
            if btype == PCAPNG_SHB and struct.unpack_from(order + "H", body, 4)[0] != 1:
                major = struct.unpack_from(order + "H", body, 4)[0]
                self._fatal(frame + 1, offset, f"section header block: major version {major}, madpipe reads 1")
                return
            if btype == pcapng.BLOCK_IDB:
                ifaces.append(pcapng.interface(body, order))
            elif btype in pcapng.PACKET_BLOCKS:
                frame += 1
                yield self._pcapng_packet(btype, body, order, ifaces, frame, offset)
            offset += blen

    def _pcapng_packet(self, btype, body, order, ifaces, frame, offset) -> Packet:
        pcapng = self._pcapng
        try:
            p = pcapng.packet_fields(btype, body, order)
        except pcapng.BlockError as exc:
            self.frames = frame
            return self._skip(Packet(frame, 0, None, 0, offset, -1), f"corrupt {pcapng.BLOCK_NAMES[btype]}, {exc}")
        if p.iface >= len(ifaces):
            return self._skip(Packet(frame, 0, None, p.orig_len, offset, -1, p.iface),
                              f"packet names interface {p.iface}, which no interface block declared")
        iface = ifaces[p.iface]
        if iface.error:
            return self._skip(Packet(frame, 0, None, p.orig_len, offset, iface.linktype, p.iface),
                              f"interface {p.iface}: {iface.error}")
        ts_ns = iface.ts_ns(p.ticks)
        why = pcapng.timestamp_error(iface, p.iface, ts_ns)
        if why:
            return self._skip(Packet(frame, 0, None, p.orig_len, offset, iface.linktype, p.iface), why)
        return self._packet(frame, ts_ns, p.data, p.orig_len, offset, iface.linktype, p.iface)

    # -- common ---------------------------------------------------------------------------
    def _packet(self, frame, ts_ns, data, orig, offset, linktype, iface=0) -> Packet:
        pkt = Packet(frame, ts_ns, data, orig, offset, linktype, iface)
        self.frames = frame
        if linktype == LINKTYPE_ERF:
            pkt.data, reason, pkt.iface = erf_unwrap(data)
            if reason:
                return self._skip(pkt, reason)
            pkt.orig_len = max(orig - ERF_HEADER_SIZE, 0)
            # The ERF timestamp is the capture card's own, in 2^-32 s; the pcap record's is that
            # time cut to the file's resolution (tshark shows the ERF one too).
            pkt.ts_ns = erf_ts_to_ns(int.from_bytes(data[:8], "little"))
        elif linktype != LINKTYPE_INFINIBAND:
            pkt.data = None
            return self._skip(pkt, f"link type {linktype} is not InfiniBand")
        return pkt

    def _skip(self, pkt: Packet, reason: str) -> Packet:
        pkt.skip = reason
        pkt.data = None
        self.frames = pkt.frame
        self.skipped[reason] += 1
        return pkt

    def _fatal(self, frame: int, offset: int, reason: str) -> None:
        self.error = f"frame {frame}, offset {offset}: {reason}"

    def __iter__(self) -> Iterator[Packet]:
        return self._iter_pcapng() if self.format == "pcapng" else self._iter_pcap()

    def close(self) -> None:
        if self._own:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CaptureWriter:
    """Write IB packets (from the LRH) as classic pcap: link type 197 (ERF, default) or 247.

    197 is what ibdump writes and what tshark opens; 247 is the plain raw-IB link type.
    ``append=True`` adds to an existing file of the same link type.
    """

    def __init__(self, path: str | os.PathLike | BinaryIO, linktype: int = LINKTYPE_ERF,
                 nanosecond: bool = True, append: bool = False, snaplen: int = 65535):
        if linktype not in LINKTYPES:
            raise CaptureError(f"cannot write link type {linktype}: madpipe writes 197 (ERF) or 247")
        self.linktype = linktype
        self.nanosecond = nanosecond
        self.count = 0
        self._f: BinaryIO
        if hasattr(path, "write"):
            self._f, self._own = cast(BinaryIO, path), False  # anything with write() is a binary stream
        else:
            name = os.fspath(path)
            if append and os.path.exists(name) and os.path.getsize(name) > 0:
                with CaptureReader(name) as existing:
                    if existing.format != "pcap" or existing.linktype != linktype:
                        raise CaptureError(
                            f"{name}: cannot append: it is {existing.format} link type "
                            f"{existing.linktype}, not pcap link type {linktype}"
                        )
                    self.nanosecond = existing.nanosecond
                    self._order = existing.byte_order
                self._f, self._own = open(name, "ab"), True
                return
            self._f, self._own = open(name, "wb"), True
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        self._order = "<"
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, packet: bytes, ts_ns: int = 0, iface: int = 0) -> None:
        data = erf_wrap(packet, ts_ns, iface) if self.linktype == LINKTYPE_ERF else bytes(packet)
        sec, ns = divmod(ts_ns, 1_000_000_000)
        frac = ns if self.nanosecond else ns // 1000
        self._f.write(struct.pack(self._order + "IIII", sec, frac, len(data), len(data)))
        self._f.write(data)
        self.count += 1

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def linktype_arg(value: str) -> int:
    """Parse a link type given on the command line: 197, 247, 'erf' or 'infiniband'."""
    names = {"erf": LINKTYPE_ERF, "infiniband": LINKTYPE_INFINIBAND, "ib": LINKTYPE_INFINIBAND}
    if value.lower() in names:
        return names[value.lower()]
    try:
        n = int(value, 0)
    except ValueError:
        n = -1
    if n not in LINKTYPES:
        raise ValueError(f"link type {value!r}: madpipe writes 197 (erf) or 247 (infiniband)")
    return n
