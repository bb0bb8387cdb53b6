"""Shared test helpers (tests/ is on sys.path: pytest's rootdir-relative import of a folder without __init__)."""
from madpipe.codecs.compiled import compiled


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
    fast = compiled(schema)
    parsed_c = fast.parse(data)
    assert strip(parsed_c) == strip(parsed)
    assert fast.build(parsed_c) == data
    return parsed


def strip(obj):
    """Container -> plain dict/list, without construct's private keys (_io, _flagsenum...)."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def put_bits(buf: bytearray, offset: int, width: int, value: int) -> None:
    """OR ``value`` into ``buf`` at a big-endian bit offset (bit 0 = MSB of byte 0)."""
    total = len(buf) * 8
    assert 0 < width and offset + width <= total and 0 <= value < 1 << width
    n = int.from_bytes(buf, "big") | value << (total - offset - width)
    buf[:] = n.to_bytes(len(buf), "big")


def as_int(value) -> int:
    return int.from_bytes(value, "big") if isinstance(value, bytes) else int(value)


def check_field_table(schema, table, size):
    """Every field of ``table`` ((name, bit offset, width), in wire order) decodes at its offset.

    The table must tile the whole ``size`` bytes and name exactly the schema's fields. For each
    field, an all-ones value and an asymmetric one (MSB and LSB set) are placed alone in a zero
    buffer: that field must read them back, every other field must read 0, and build must
    give the buffer back.
    """
    pos = 0
    for name, offset, width in table:
        assert offset == pos, f"gap or overlap before {name}"
        pos += width
    assert pos == size * 8
    assert schema.sizeof() == size
    assert list(strip(schema.parse(bytes(size)))) == [name for name, _, _ in table]
    for name, offset, width in table:
        mask = (1 << width) - 1
        asymmetric = (1 << (width - 1)) | 1 | (0x5A5A5A5A5A5A5A5A & mask)
        for value in (mask, asymmetric):
            buf = bytearray(size)
            put_bits(buf, offset, width, value)
            parsed = schema.parse(bytes(buf))
            got = {k: as_int(v) for k, v in strip(parsed).items()}
            assert got[name] == value, name
            assert all(v == 0 for k, v in got.items() if k != name), name
            assert schema.build(parsed) == bytes(buf)
