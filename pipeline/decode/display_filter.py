"""`-Y` display filters over decoded records, in the spirit of tshark's, on madpipe's JSON keys.

Grammar:  expr := term (('||' | 'or') term)*      term := factor (('&&' | 'and') factor)*
          factor := ('!' | 'not') factor | '(' expr ')' | KEY [OP VALUE]
KEY is a dotted path into the JSON record (``mad.attr_id``, ``attr.pkeys.0``); a bare KEY is true
when present and not false/None/0. OP is == != < <= > >=; VALUE an integer (0x.. allowed), a
quoted string, true, false or null. Examples: ``mad.attr_id==0x16 && mad.method==2``, ``grh``,
``!icrc_ok``.
"""
from __future__ import annotations

import operator
import re

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
