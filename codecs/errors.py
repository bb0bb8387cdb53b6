"""Errors that the CLI turns into one line on stderr and exit status 2."""


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
