"""Coverage-guided fuzzing of madpipe's codecs with atheris (libFuzzer for Python).

    pip install atheris
    python fuzz/atheris_codecs.py -max_total_time=300 corpus_dir/      # libFuzzer flags
    python fuzz/atheris_codecs.py -runs=100000 -seed=1

Each input is one frame from the LRH, as a capture holds it. The check is the ``codecs`` target
of ``madpipe fuzz`` (``madpipe.pipeline.fuzz.targets.codecs.check_frame``): ``decode_frame`` returns a
record and never raises, the record is JSON, an error names offset and field, every layer round-trips through
the plain and the compiled schemas and agrees with what ``decode_frame`` reported, and (when the
scapy layers are installed) a frame that decodes cleanly rebuilds to the same bytes in scapy. Any
problem raises ``AssertionError`` with the finding, and libFuzzer saves the input as ``crash-*``.

Start from real frames: ``python fuzz/atheris_codecs.py --seed-corpus pcaps/x.pcap corpus_dir/``
writes each frame of the capture into ``corpus_dir`` first (the built-in seeds of ``madpipe
fuzz`` when no capture is given), then fuzzes. Replay a saved input with
``python fuzz/atheris_codecs.py crash-...`` (libFuzzer runs the files given without mutating).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys


def seed_corpus(capture: str | None, directory: str) -> int:
    """Write the frames of ``capture`` (or madpipe fuzz's built-in seeds) into ``directory``."""
    from madpipe.pipeline.fuzz.mutate.corpus import Corpus

    corpus = Corpus.from_path(capture) if capture else Corpus.builtin()
    os.makedirs(directory, exist_ok=True)
    for frame in corpus.frames:
        name = hashlib.sha1(frame).hexdigest()
        with open(os.path.join(directory, name), "wb") as f:
            f.write(frame)
    return len(corpus.frames)


def main(argv: list[str]) -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris (Linux, CPython 3.8-3.11 wheels)")
    with atheris.instrument_imports(include=["madpipe"]):
        # Everything decode_frame reaches, imported here so that atheris instruments it.
        for name in ("crc", "frame", "gmp", "ib_headers", "mad", "perf", "smp", "layers"):
            try:
                importlib.import_module(f"madpipe.codecs.{name}")
            except ImportError:  # the scapy layers are optional
                pass
        from madpipe.pipeline.fuzz.targets.codecs import check_frame, scapy_layers

    if "--seed-corpus" in argv:
        i = argv.index("--seed-corpus")
        capture = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") and \
            os.path.isfile(argv[i + 1]) else None
        del argv[i:i + (2 if capture else 1)]
        dirs = [a for a in argv[1:] if not a.startswith("-")]
        if not dirs:
            sys.exit("--seed-corpus needs a corpus directory argument to write into")
        print(f"seeded {dirs[0]} with {seed_corpus(capture, dirs[0])} frames", file=sys.stderr)

    scapy = scapy_layers() is not None

    def test_one_input(data: bytes) -> None:
        _rec, problems = check_frame(data, roundtrip=True, scapy=scapy)
        if problems:
            kind, key, what = problems[0]
            raise AssertionError(f"{kind}: {what}")

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
