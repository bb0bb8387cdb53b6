"""The argument check in front of each ahead-of-time kernel.

pycc's wrappers take their arguments on trust: an array of the wrong dtype is read as the wrong
bytes, a read-only one is written. :func:`guard` wraps a compiled function in a check of what
its ``aot.KERNELS`` signature says, and an error that names the kernel, the argument and the
type it must have.

Argument types: u1..u8 / i1..i8 unsigned / signed integers of 1..8 bytes, b1 bool, f8 float64; ``[::1]``,
``[:,::1]``, ``[:,:,::1]`` C-contiguous arrays of 1-3 dimensions, ``!`` before one the kernel
writes (it must be writable).
"""
from __future__ import annotations

import operator

import numpy as np

DTYPES = {"u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64",
          "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64", "b1": "bool", "f8": "float64"}


class KernelTypeError(TypeError):
    pass


def arg_spec(token: str) -> tuple[str, int, bool]:
    """(numpy dtype name, dimensions (0: a scalar), written by the kernel) of one argument type."""
    written = token.startswith("!")
    code, _, dims = token.lstrip("!").partition("[")
    return DTYPES[code], (dims.count(",") + 1 if dims else 0), written


def guard(module: str, kernel: str, fn, args: str):
    """``fn`` behind a check of what pycc's wrapper takes on trust: each array's dtype, dimensions,
    layout and alignment, and that the arrays the kernel writes are writable; integers are
    integers (not floats that would be truncated) and flags are bools."""
    specs = [arg_spec(t) for t in args.split()]
    arrays = [(i, np.dtype(d), nd, w) for i, (d, nd, w) in enumerate(specs) if nd]
    integers = [i for i, (d, nd, _) in enumerate(specs) if not nd and d != "bool"]
    flags = [i for i, (d, nd, _) in enumerate(specs) if not nd and d == "bool"]
    count = len(specs)

    def refuse(i, want, got):
        raise KernelTypeError(f"{module}.{kernel}: argument {i + 1} must be {want} "
                              f"(the ahead-of-time build's type), got {got}")

    def call(*a):
        if len(a) != count:
            raise KernelTypeError(f"{module}.{kernel}: {count} arguments expected, got {len(a)}")
        for i, dtype, nd, written in arrays:
            x = a[i]
            fl = getattr(x, "flags", None)
            if (type(x) is not np.ndarray or x.dtype != dtype or x.ndim != nd or not fl.c_contiguous
                    or not fl.aligned or (written and not fl.writeable)):
                want = f"a C-contiguous{' writable' if written else ''} {dtype}[{nd}-d] array"
                if type(x) is not np.ndarray:
                    got = type(x).__name__
                else:
                    got = f"{x.dtype}[{x.ndim}-d]" + "".join(
                        f", {what}" for what, bad in (("not C-contiguous", not fl.c_contiguous),
                                                      ("not aligned", not fl.aligned),
                                                      ("read-only", written and not fl.writeable)) if bad)
                refuse(i, want, got)
        for i in integers:
            try:
                operator.index(a[i])
            except TypeError:
                refuse(i, "an integer", type(a[i]).__name__)
        for i in flags:
            if not isinstance(a[i], (bool, np.bool_)):
                refuse(i, "a bool", type(a[i]).__name__)
        return fn(*a)

    call.__name__ = kernel
    call.__qualname__ = kernel
    call.__doc__ = f"{module}.{kernel}, compiled ahead of time (arguments: {args})."
    call.aot = fn
    return call
