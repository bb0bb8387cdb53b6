"""opensm's ``partitions.conf``, read as opensm 3.3 reads it (``opensm/osm_prtn_config.c``,
``doc/partition-config.txt``), into the partitions and members a policy check needs.

The grammar: ``#`` starts a comment; a statement ends at ``;`` and may continue over lines (its
header, up to ``:``, on one line); the header is ``[NAME][=PKEY][,FLAG[=VALUE]]...`` (flags
``ipoib``, ``mtu``, ``rate``, ``sl``, ``scope``, ``Q_Key``, ``TClass``, ``FlowLabel``,
``defmember=full|limited|both``, ``indx0``); members are ``PORT[=full|limited|both]`` separated
by ``,``, where PORT is a port GUID (``0x``-hex or decimal), ``ALL``, ``ALL_CAS``,
``ALL_SWITCHES``, ``ALL_ROUTERS``, ``SELF`` or ``NONE``; ``mgid=GID[,FLAG]...`` takes the rest of
its line. As in opensm, keywords and flags match by prefix (``lim`` is ``limited``), a P_Key keeps
its low 15 bits, P_Key 0 (or none) is generated, an unknown flag or membership is a warning
(the membership becomes limited). What opensm refuses (a header without ``:``, a P_Key or GUID
that is not a number, an empty flag) is a :class:`PolicyError` naming the line and column.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from madpipe.codecs.errors import MadpipeError, read_text

DEFAULT_PKEY = 0x7FFF
PKEY_BASE_MASK = 0x7FFF
MEMBERSHIPS = ("full", "limited", "both")
KEYWORDS = ("ALL", "ALL_CAS", "ALL_SWITCHES", "ALL_ROUTERS", "SELF")  # in opensm's order of trying
GROUP_FLAGS = ("mtu", "rate", "scope", "Q_Key", "TClass", "sl", "FlowLabel")
PARTITION_FLAGS = ("ipoib", "defmember")


class PolicyError(MadpipeError):
    """Bad input in a partitions file: ``FILE:LINE:COL: what``."""


@dataclass
class Member:
    """One port specifier: ``what`` is a keyword of :data:`KEYWORDS` or ``guid``."""

    what: str
    guid: int | None
    membership: str  # full, limited or both
    line: int
    col: int


@dataclass
class Partition:
    """One statement of the file (statements with the same P_Key apply in file order)."""

    name: str
    pkey: int  # low 15 bits; generated as opensm does when the file gives none
    line: int
    col: int
    flags: dict[str, str | None] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    mgids: list[str] = field(default_factory=list)


@dataclass
class Policy:
    path: str
    partitions: list[Partition]
    warnings: list[str]  # FILE:LINE:COL: warning: ... (what opensm logs and goes on)

    @property
    def has_default(self) -> bool:
        return any(p.pkey == DEFAULT_PKEY for p in self.partitions)


def _prefix_of(word: str, full: str) -> bool:
    """opensm's ``!strncmp(word, full, strlen(word))``: ``word`` is a prefix of ``full``."""
    return full.startswith(word)


def _c_number(text: str) -> int | None:
    """``strtoul(text, &end, 0)`` that must read the whole text: 0x hex, 0 octal, else decimal."""
    t = text.strip()
    try:
        if t[:2].lower() == "0x":
            return int(t[2:], 16) if t[2:] and t[2] not in "+-_" else None
        if len(t) > 1 and t[0] == "0":
            return int(t[1:], 8) if t[1] not in "+-_" else None
        return int(t, 10) if t and t[0] not in "+-_" else None
    except ValueError:
        return None


class _Reader:
    """Walks the file as osm_prtn_config_parse_file does, keeping line and column for messages."""

    def __init__(self, path: str):
        self.path = path
        self.partitions: list[Partition] = []
        self.warnings: list[str] = []
        self.used_pkeys = {DEFAULT_PKEY}  # opensm makes Default first
        self.counter = 0  # global_pkey_counter

    def where(self, line: int, col: int) -> str:
        return f"{self.path}:{line}:{col}"

    def error(self, line: int, col: int, what: str) -> PolicyError:
        return PolicyError(f"{self.where(line, col)}: {what}")

    def warn(self, line: int, col: int, what: str) -> None:
        self.warnings.append(f"{self.where(line, col)}: warning: {what}")

    def read(self, text: str) -> None:
        current: Partition | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0]
            pos = 0
            while True:
                while pos < len(line) and line[pos] in " \t\r\n":
                    pos += 1
                if pos >= len(line):
                    break
                semi = line.find(";", pos)
                end = semi if semi >= 0 else len(line)
                start = pos
                if current is None:
                    colon = line.find(":", pos, end)
                    if colon < 0:
                        raise self.error(lineno, pos + 1, "no partition definition: expected "
                                         "'NAME=PKEY[,FLAG...] :' before the members")
                    current = self.header(line[pos:colon], lineno, pos)
                    start = colon + 1
                self.members(current, line, start, end, lineno)
                if semi < 0:
                    break
                self.partitions.append(current)
                current = None
                pos = semi + 1
        if current is not None:  # opensm takes a last statement without ';' too
            self.partitions.append(current)

    def header(self, text: str, lineno: int, offset: int) -> Partition:
        tokens = _split(text, ",", offset)
        (first, col), flags = tokens[0], tokens[1:]
        name, eq, pkey_text = (s.strip() for s in first.partition("="))
        col_name = col + len(first) - len(first.lstrip()) + 1
        if not eq and name[:1].isdigit():  # "0x8001 : ..." is a P_Key without a name
            name, pkey_text, eq = "", name, "="
        pkey = 0
        if eq:
            value = _c_number(pkey_text)
            if value is None or value > 0xFFFF:
                at = col + first.index("=") + 2 if "=" in first else col_name
                raise self.error(lineno, at, f"bad partition definition: P_Key {pkey_text!r} is not a "
                                 "16-bit number")
            pkey = value & PKEY_BASE_MASK
        part = Partition(name, pkey, lineno, col_name)
        for flag_text, fcol in flags:
            flag, _, value = (s.strip() for s in flag_text.partition("="))
            at = fcol + len(flag_text) - len(flag_text.lstrip()) + 1
            if not flag:
                raise self.error(lineno, at, "bad partition flags: an empty flag")
            self.flag(part, flag, value if "=" in flag_text else None, lineno, at)
        if not part.pkey:
            part.pkey = self.generated_pkey()
        self.used_pkeys.add(part.pkey)
        return part

    def generated_pkey(self) -> int:
        """opensm's generate_pkey: the next counter value no partition holds yet."""
        while True:
            self.counter += 1
            if self.counter not in self.used_pkeys:
                return self.counter

    def flag(self, part: Partition, flag: str, value: str | None, lineno: int, col: int) -> None:
        known = next((f for f in (*GROUP_FLAGS, *PARTITION_FLAGS) if _prefix_of(flag, f)), None)
        if flag == "indx0":
            known = "indx0"
        if known is None:
            self.warn(lineno, col, f"unknown partition flag {flag!r} (opensm ignores it)")
            return
        if known == "defmember":
            member = next((m for m in ("full", "both", "limited") if value is not None and _prefix_of(value, m)),
                          None)
            if member is None:
                self.warn(lineno, col, f"defmember={value or ''} is not full, limited or both (opensm ignores it)")
                return
            value = member
        elif known not in ("ipoib", "indx0") and (value is None or _c_number(value) is None):
            self.warn(lineno, col, f"flag {known!r} needs a number (opensm skips it)")
        part.flags[known] = value

    def members(self, part: Partition, line: str, start: int, end: int, lineno: int) -> None:
        for text, col in _split(line[start:end], ",", start):
            name, eq, flag = (s.strip() for s in text.partition("="))
            at = col + len(text) - len(text.lstrip()) + 1
            if name == "mgid":  # a multicast group: its flags take the rest of the statement's line
                self.mgid(part, flag, lineno, at)
                return
            self.member(part, name, flag if eq else None, lineno, at)

    def mgid(self, part: Partition, gid: str, lineno: int, col: int) -> None:
        try:
            ok = ipaddress.IPv6Address(gid).packed[0] == 0xFF
        except ValueError:
            ok = False
        if not ok:
            self.warn(lineno, col, f"mgid {gid!r} is not a multicast GID (opensm creates no group)")
        else:
            part.mgids.append(gid)

    def member(self, part: Partition, name: str, flag: str | None, lineno: int, col: int) -> None:
        if not name or _prefix_of(name, "NONE"):
            return
        membership = part.flags.get("defmember") or "limited"
        if flag is not None:
            membership = next((m for m in ("full", "both", "limited") if _prefix_of(flag, m)), "")
            if not membership:
                self.warn(lineno, col, f"membership {flag!r} is not full, limited or both: limited, as opensm takes it")
                membership = "limited"
        keyword = next((k for k in KEYWORDS if _prefix_of(name, k)), None)
        if keyword is not None:
            part.members.append(Member(keyword, None, membership, lineno, col))
            return
        guid = _c_number(name)
        if not guid or guid >> 64:
            raise self.error(lineno, col, f"bad PortGUID {name!r}: expected a 64-bit number (0x-prefixed hex "
                             "or decimal), ALL, ALL_CAS, ALL_SWITCHES, ALL_ROUTERS, SELF or NONE")
        part.members.append(Member("guid", guid, membership, lineno, col))


def _split(text: str, sep: str, offset: int) -> list[tuple[str, int]]:
    """``text`` split at ``sep``, each piece with its 0-based column in the line."""
    out, col = [], offset
    for piece in text.split(sep):
        out.append((piece, col))
        col += len(piece) + 1
    return out


def parse_policy(text: str, path: str = "<partitions>") -> Policy:
    """The partitions of a partitions.conf text; :class:`PolicyError` for what opensm refuses."""
    reader = _Reader(path)
    reader.read(text)
    return Policy(path, reader.partitions, reader.warnings)


def read_policy(path: str | os.PathLike) -> Policy:
    """:func:`parse_policy` of a file; a file that cannot be read or is not text is one line too."""
    path = os.fspath(path)
    text = read_text(path, PolicyError)
    return parse_policy(text, path)
