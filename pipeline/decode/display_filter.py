"""`-Y` display filters over decoded records, in the spirit of tshark's, on madpipe's JSON keys.

Grammar:  expr := term (('||' | 'or') term)*      term := factor (('&&' | 'and') factor)*
          factor := ('!' | 'not') factor | '(' expr ')' | KEY [OP VALUE]
KEY is a dotted path into the JSON record (``mad.attr_id``, ``attr.pkeys.0``); a bare KEY is true
when present and not false/None/0. OP is == != < <= > >=; VALUE an integer (0x.. allowed), a
quoted string, true, false or null. Examples: ``mad.attr_id==0x16 && mad.method==2``, ``grh``,
``!icrc_ok``.

A KEY no decoded record can hold (a typo: ``foo.bar``, ``mad.atr_id``) is refused with the keys
nearest to it, as tshark refuses an unknown field: a filter that silently matches nothing looks
like a capture without such frames.
"""
from __future__ import annotations

import difflib
import operator
import re
from functools import lru_cache

from madpipe.codecs.errors import MadpipeError

_TOKEN = re.compile(
    r"\s*(?:(?P<op>==|!=|<=|>=|<|>|&&|\|\||!|\(|\))|(?P<str>\"[^\"]*\"|'[^']*')"
    r"|(?P<word>[A-Za-z0-9_.\-:]+))"
)
_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}
_MISSING = object()


class FilterError(MadpipeError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"filter {text!r}: cannot read at character {pos + 1}: {text[pos:]!r}")
        kind = m.lastgroup
        tok = m.group(kind)
        if kind == "word" and tok in ("and", "or", "not"):
            kind, tok = "op", {"and": "&&", "or": "||", "not": "!"}[tok]
        out.append((kind, tok))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _value(kind: str, tok: str):
    if kind == "str":
        return tok[1:-1]
    low = tok.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    try:
        return int(tok, 0)
    except ValueError:
        return tok


def lookup(record: dict, path: str):
    value = record
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
        if value is _MISSING:
            return value
    return value


#: Top-level keys of a record besides the layers (``capture`` with several captures).
TOP_KEYS = ("frame", "ts", "capture", "icrc_ok", "vcrc_ok", "error", "skipped", "class_data", "raw_len",
            "payload_len")


def _generic(key: str) -> str:
    """``key`` with its list indices as ``#`` (``attr.pkeys.3`` -> ``attr.pkeys.#``)."""
    return ".".join("#" if part.isdigit() else part for part in key.split("."))


@lru_cache(maxsize=1)
def known_keys() -> frozenset[str]:
    """Every key a record of ``madpipe decode -T json`` can hold, dotted, list indices as ``#``:
    the header layers' keys and every SMP and PerfMgt attribute's fields, from the schemas."""
    from madpipe.codecs import perf, smp
    from madpipe.codecs.field_table import LAYER_KEYS, schema_fields

    keys = set(TOP_KEYS) | set(LAYER_KEYS) | {"attr", "attr.name", "attr.block"}
    keys |= {f"{layer}.{name}" for layer, names in LAYER_KEYS.items() for name in names}
    keys |= {"smp.initial_path.#", "smp.return_path.#"}
    schemas = [schema for _, schema in smp.SMP_ATTRIBUTES.values()]
    schemas += [schema for _, schema in perf.PERF_ATTRIBUTES.values()]
    for schema in schemas:
        for field in schema_fields(schema):
            parts = _generic(field.name.replace("[", ".").replace("]", "")).split(".")
            if all(parts):
                keys |= {"attr." + ".".join(parts[:n]) for n in range(1, len(parts) + 1)}
    return frozenset(keys)


def check_key(key: str, text: str) -> None:
    """A FilterError naming the nearest keys when no record can hold ``key``."""
    if _generic(key) in known_keys():
        return
    near = difflib.get_close_matches(_generic(key), sorted(known_keys()), n=5, cutoff=0.6)
    hint = f"nearest: {', '.join(near)}" if near else f"records have: {', '.join(_TOP_LEVEL)}"
    raise FilterError(f"filter {text!r}: no field {key!r} in madpipe decode's records; {hint} "
                      "(the keys of -T json; # is an index)")


_TOP_LEVEL = ("frame", "ts", "lrh", "grh", "bth", "deth", "mad", "smp", "attr", "icrc_ok", "vcrc_ok", "error")


def compile_filter(text: str):
    """Parse ``text`` once; return a predicate over decoded records. Bad syntax is a FilterError."""
    toks = _tokens(text)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else (None, None)

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def expr():
        left = term()
        while peek() == ("op", "||"):
            take()
            right = term()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def term():
        left = factor()
        while peek() == ("op", "&&"):
            take()
            right = factor()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def factor():
        kind, tok = take()
        if (kind, tok) == ("op", "!"):
            inner = factor()
            return lambda r: not inner(r)
        if (kind, tok) == ("op", "("):
            inner = expr()
            if take() != ("op", ")"):
                raise FilterError(f"filter {text!r}: missing ')'")
            return inner
        if kind != "word":
            raise FilterError(f"filter {text!r}: expected a field name, got {tok!r}")
        key = tok
        check_key(key, text)
        if peek()[0] == "op" and peek()[1] in _OPS:
            op = _OPS[take()[1]]
            vkind, vtok = take()
            if vkind not in ("word", "str"):
                raise FilterError(f"filter {text!r}: expected a value after the comparison")
            want = _value(vkind, vtok)

            def compare(r, key=key, op=op, want=want):
                got = lookup(r, key)
                if got is _MISSING:
                    return False
                try:
                    return op(got, want)
                except TypeError:
                    return False

            return compare
        return lambda r, key=key: lookup(r, key) not in (_MISSING, None, False, 0)

    if not toks:
        raise FilterError("empty filter")
    pred = expr()
    if pos != len(toks):
        raise FilterError(f"filter {text!r}: unexpected {toks[pos][1]!r}")
    return pred
