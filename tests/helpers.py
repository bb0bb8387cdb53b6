"""Shared test helpers (tests/ is on sys.path: pytest's rootdir-relative import of a folder without __init__)."""


def common(schema, data: bytes, value=None, size=None):
    """Round-trip a construct schema on golden bytes, in the spirit of construct's own ``common()``.

    Parses ``data``, compares with ``value`` when given, builds back, requires the same bytes,
    checks ``sizeof()`` when the schema has a fixed size, then repeats with the compiled schema.
    Returns the parsed container.
    """
    parsed = schema.parse(data)
    if value is not None:
        assert strip(parsed) == strip(value)
    assert schema.build(parsed) == data
    if size is not None:
        assert schema.sizeof() == size
        assert len(data) == size
    compiled = schema.compile()
    parsed_c = compiled.parse(data)
    assert strip(parsed_c) == strip(parsed)
    assert compiled.build(parsed_c) == data
    return parsed


def strip(obj):
    """Container -> plain dict/list, without construct's private keys (_io, _flagsenum...)."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj
