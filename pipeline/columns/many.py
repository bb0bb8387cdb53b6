"""Many captures at once: the files of ``-r`` arguments, one step per capture run over the cores
(or on dask.distributed), a progress line, and one Parquet dataset partitioned by capture.

>>> from madpipe.pipeline.columns.many import capture_files, write_dataset            # doctest: +SKIP
>>> files = capture_files(["pcaps/"])                  # every capture of the folder, sorted
>>> write_dataset(files, "frames.parquet", "frames")   # frames/capture=<file name>/part-0.parquet
>>> write_dataset(files, "ports.parquet", "ports", dask="tcp://scheduler:8786")

This module imports no kernel: the CLI calls :func:`capture_files` before it decides whether
numba loads (``jit.plan_for_inputs``). A worker process decides the same way, from the same files,
before it imports one.
"""
from __future__ import annotations

import os
import sys
import time

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.kernels import jit

#: What a directory given to ``-r`` contributes: its files with these suffixes (any case), sorted.
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")

#: What write_dataset writes: a capture's frames (frames_dataframe's columns) or its P_Key tables.
KINDS = ("frames", "ports")

DASK_EXTRA = "dask"  # pip install 'madpipe[dask]'


def capture_files(paths) -> list[str]:
    """The captures named by ``paths``: a file as given, a directory as its captures, sorted.

    A directory without a capture is a one-line MadpipeError; a file is not opened here.
    """
    files: list[str] = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(CAPTURE_SUFFIXES) and os.path.isfile(os.path.join(path, name)))
            if not found:
                raise MadpipeError(f"{path}: no capture in this directory ({', '.join('*' + s for s in CAPTURE_SUFFIXES)})")
            files += found
        else:
            files.append(path)  # a missing file is the reader's error, in its turn
    # A file named twice (-r DIR -r DIR/x.pcap) is read once, where it was first named.
    once: dict[str, str] = {}
    for path in files:
        once.setdefault(os.path.realpath(path), path)
    return list(once.values())


def capture_labels(files: list[str]) -> list[str]:
    """What names each capture in a dataset: its path relative to the folder that holds them all
    (so node1/sniffer.pcap and node2/sniffer.pcap, ibdump's default name, stay apart; the file
    name when they share a folder)."""
    full = [os.path.abspath(f) for f in files]
    if len(full) == 1:
        return [os.path.basename(full[0])]
    parent = os.path.commonpath([os.path.dirname(f) for f in full])
    return [os.path.relpath(f, parent) for f in full]


def check_readable(files: list[str]) -> None:
    """One MadpipeError naming every capture that cannot be opened (missing, not a capture), so
    that a dataset is written whole or not at all, and before any scheduler is asked for."""
    from madpipe.codecs.capture import CaptureReader

    bad = []
    for path in files:
        try:
            with CaptureReader(path):
                pass
        except MadpipeError as exc:
            bad.append(str(exc))
    if bad:
        raise MadpipeError("; ".join(bad) + ": nothing written")


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Progress:
    """``madpipe snoop: 3/10 captures, 2.1 s, monday.pcap`` on one stderr line, redrawn in place.

    Drawn only when ``enabled`` (the CLI: stderr is a terminal, and stdout is not, or is not used);
    otherwise every call is a no-op but :meth:`note`, which prints its line either way.
    """

    def __init__(self, command: str, total: int, enabled: bool, stream=None):
        self.command, self.total, self.enabled = command, total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self.shown = 0  # characters of the line on screen

    @classmethod
    def for_cli(cls, command: str, total: int, uses_stdout: bool = True) -> Progress:
        tty = _isatty(sys.stderr) and (not uses_stdout or not _isatty(sys.stdout))
        return cls(command, total, tty and total > 1)

    def step(self, name: str = "") -> None:
        """One more capture done (``name`` says which)."""
        self.done += 1
        self._draw(name)

    def _draw(self, name: str) -> None:
        if not self.enabled:
            return
        line = (f"madpipe {self.command}: {self.done}/{self.total} captures, "
                f"{time.monotonic() - self.start:.1f} s" + (f", {os.path.basename(name)}" if name else ""))
        self.stream.write("\r" + line + " " * max(0, self.shown - len(line)))
        self.stream.flush()
        self.shown = len(line)

    def clear(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0

    def note(self, text: str) -> None:
        """Print a line to stderr without tearing the progress line."""
        self.clear()
        print(text, file=self.stream)
        if self.done:
            self._draw("")

    def close(self) -> None:
        self.clear()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run_each(fn, items: list, files: list[str], jobs: int | None = None, progress: Progress | None = None):
    """``fn(item)`` for each item, yielded in order: in this process when ``jobs`` is 1 or there is
    one item, else over ``jobs`` processes (default: the CPUs). ``fn`` must be a module-level
    function; each worker first plans the JIT for ``files`` as the CLI does."""
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise MadpipeError(f"-j must be 1 or more, got {jobs}")
    if jobs == 1 or len(items) <= 1:
        for item in items:
            result = fn(item)
            if progress:
                progress.step(_name_of(item))
            yield result
        return
    from concurrent.futures import ProcessPoolExecutor  # 10 ms: only runs over many captures pay it

    with ProcessPoolExecutor(min(jobs, len(items)), initializer=jit.plan_for_inputs, initargs=(files,)) as pool:
        for item, result in zip(items, pool.map(fn, items)):
            if progress:
                progress.step(_name_of(item))
            yield result


def _name_of(item) -> str:
    return item[0] if isinstance(item, tuple) else str(item)


class CaptureTag:
    """A text stream that writes JSON Lines with ``"capture": NAME`` as each record's first key."""

    def __init__(self, out, name: str):
        import json

        self.out = out
        self.head = '{"capture":' + json.dumps(name) + ","
        self.at_line_start = True

    def write(self, text: str) -> int:
        if not text:
            return 0
        if self.at_line_start and text[0] == "{":
            text = self.head + text[1:]
        self.out.write(text.replace("\n{", "\n" + self.head))
        self.at_line_start = text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


# -- one Parquet dataset, partitioned by capture --------------------------------------------------

def partition_dir(out: str, label: str) -> str:
    """The folder of a capture's partition: ``capture=`` its label, URI-escaped (pyarrow reads
    the escaping back: ``node1/sniffer.pcap``)."""
    from urllib.parse import quote

    return os.path.join(out, "capture=" + quote(label, safe=""))


def write_partition(item: tuple) -> dict:
    """The per-capture step: ``(path, out, kind, rule, files, label)`` -> ``out/capture=LABEL/part-0.parquet``.

    Returns ``{"capture", "rows", "file_error"}``; a capture that cannot be read at all gives
    ``rows`` 0 and its error, and no partition.
    """
    path, out, kind, rule, files, label = item
    jit.plan_for_inputs(files)  # a fresh worker (dask) decides as the CLI did; no effect if decided
    target = partition_dir(out, label)
    os.makedirs(target, exist_ok=True)
    part = os.path.join(target, "part-0.parquet")
    try:
        if kind == "frames":
            from madpipe.pipeline.columns.export import export_frames

            res = export_frames(path, part, "parquet")
            return {"capture": path, "rows": res.rows, "file_error": res.file_error}
        import pyarrow as pa
        import pyarrow.parquet as pq

        from madpipe.pipeline.columns.frames import port_tables_dataframe

        df = port_tables_dataframe(path, rule)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), part)
        return {"capture": path, "rows": len(df), "file_error": df.attrs["file_error"]}
    except MadpipeError as exc:
        if os.path.exists(part):
            os.remove(part)
        if not os.listdir(target):
            os.rmdir(target)
        return {"capture": path, "rows": 0, "file_error": str(exc), "unreadable": True}


def write_dataset(files: list[str], out: str, kind: str = "frames", *, rule: str = "set", jobs: int | None = None,
                  dask=None, progress: Progress | None = None, force: bool = False) -> list[dict]:
    """Write every capture's partition of one Parquet dataset under ``out`` (a directory).

    ``kind`` "frames": frames_dataframe's columns; "ports": port_tables_dataframe's. The step runs
    in this process (``jobs=1``), over ``jobs`` processes, or on dask.distributed when ``dask`` is
    a ``Client``, a scheduler address, or "local" (a LocalCluster of ``jobs`` worker processes).
    Read it back with ``pandas.read_parquet(out)``: ``capture`` is a categorical column, each
    capture's :func:`capture_labels` label. Every capture is opened before anything is written:
    one that cannot be read stops the whole dataset with one error naming it. A folder that is
    not empty is refused, unless ``force`` and it holds a dataset only (``capture=*`` folders),
    which is then replaced.
    Returns each capture's ``write_partition`` result, in the order of ``files``.
    """
    from madpipe.codecs.errors import require
    from madpipe.pipeline.columns.frames import DATA_EXTRA

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    require("pyarrow", DATA_EXTRA)
    files = capture_files(files)  # the same file twice is one capture
    labels = capture_labels(files)
    check_readable(files)
    if os.path.isfile(out):
        raise MadpipeError(f"{out}: is a file; -w takes a directory for a dataset")
    if os.path.isdir(out) and os.listdir(out):
        _replace_dataset(out, force)
    os.makedirs(out, exist_ok=True)
    # Absolute paths: a Dask worker's working directory is not ours (and -r paths must name the
    # same files on every worker: a shared file system).
    where = [os.path.abspath(f) for f in files]
    items = [(f, os.path.abspath(out), kind, rule, where, label) for f, label in zip(where, labels)]
    if dask is None:
        results = list(run_each(write_partition, items, where, jobs, progress))
    else:
        results = _on_dask(items, dask, jobs, progress)
    for r, f in zip(results, files):
        r["capture"] = os.fspath(f)
    return results


def _replace_dataset(out: str, force: bool) -> None:
    """Empty the dataset folder ``out`` for --force; refuse without it, or if it holds anything else."""
    import shutil

    if not force:
        raise MadpipeError(f"{out}: directory is not empty: --force to replace the dataset in it")
    names = sorted(os.listdir(out))
    other = [n for n in names if not (n.startswith("capture=") and os.path.isdir(os.path.join(out, n)))]
    if other:
        raise MadpipeError(f"{out}: holds {other[0]}, which is not a dataset partition: not replaced")
    for name in names:
        shutil.rmtree(os.path.join(out, name))


def local_cluster(distributed, jobs: int | None):
    """A LocalCluster of ``jobs`` single-thread worker processes, quiet below CRITICAL.

    A task's error comes back through its future; what the workers would log besides is
    shutdown noise: a worker still heartbeating while the scheduler closes logs a traceback
    ("Failed to communicate with scheduler during heartbeat") on a loaded machine."""
    import logging  # here: every command imports this module, and logging costs ~10 ms

    return distributed.LocalCluster(n_workers=jobs or default_jobs(), threads_per_worker=1,
                                    processes=True, dashboard_address=":0",
                                    silence_logs=logging.CRITICAL)


def _on_dask(items: list, scheduler, jobs: int | None, progress: Progress | None) -> list[dict]:
    from madpipe.codecs.errors import require

    distributed = require("distributed", DASK_EXTRA)
    client, cluster = scheduler, None
    if isinstance(scheduler, str):
        if scheduler == "local":
            cluster = local_cluster(distributed, jobs)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise MadpipeError(f"--dask {scheduler}: cannot reach the scheduler: {exc}") from None
    try:
        futures = client.map(write_partition, items, pure=False)
        where = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(items)
        for fut in distributed.as_completed(futures):
            i = where[fut.key]
            results[i] = fut.result()
            if progress:
                progress.step(items[i][0])
        return results
    finally:
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()
