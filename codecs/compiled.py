"""One cache of compiled construct schemas, shared by every codec module.

``compiled(schema)`` compiles a schema on first use (construct's ``.compile()`` generates and
execs Python source, which takes milliseconds) and returns the same compiled object afterwards.
Schemas live at module level, so keying by identity is safe.
"""
from __future__ import annotations

from construct import Construct

_cache: dict[int, Construct] = {}


def compiled(schema: Construct) -> Construct:
    key = id(schema)
    if key not in _cache:
        _cache[key] = schema.compile()
    return _cache[key]
