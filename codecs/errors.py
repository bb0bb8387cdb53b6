"""Errors that the CLI turns into one line on stderr and exit status 2."""
import os


class MadpipeError(Exception):
    """A user-facing error: the message names the file, frame, offset and field where known."""


class DecodeError(MadpipeError):
    """A frame or field that could not be decoded: where (frame, byte offset, field) and why."""

    def __init__(self, reason: str, *, frame: int | None = None, offset: int | None = None, field: str | None = None):
        self.reason = reason
        self.frame = frame
        self.offset = offset
        self.field = field
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return (", ".join(where) + ": " if where else "") + self.reason


class CaptureError(MadpipeError):
    """The capture file itself cannot be read (bad magic, unknown link type, truncated header)."""


class CraftError(MadpipeError, ValueError):
    """A value that cannot go on the wire as asked (the CLI prints it as one line, exit 2)."""


class MissingExtra(MadpipeError, ImportError):
    """An optional dependency is not installed: the message names the extra that brings it."""


def read_text(path, error: type[MadpipeError] = MadpipeError) -> str:
    """A small text file (UTF-8) read whole; one that cannot be read or is not text raises
    ``error`` in one line naming the path, and for a bad byte its line, column and offset."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(f"{path}:{line}:{col}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start})") from None


def require(module: str, extra: str):
    """Import an optional dependency or fail with one line naming ``madpipe[extra]``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{module} is not installed: pip install 'madpipe[{extra}]' (in a checkout: '.[{extra}]')") from None
