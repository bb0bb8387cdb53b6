"""Run an iterator one item ahead on a worker thread: reading and walking the next chunks of a
capture overlaps the work on the current one.

The compiled kernels release the GIL (numba ``nogil``; the ahead-of-time build's wrappers too),
and so does reading the file, so on two cores the worker's read + record walk runs beside the
main thread's SMP extraction, pairing and snooping. Items come out in order; an exception in
the worker is raised in the consumer at the point where the item would have come.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


def ahead(iterator: Iterator[T], sets: int = 2) -> Iterator[T]:
    """Yield the items of ``iterator``, the next ones produced on a thread meanwhile.

    ``iterator`` may cycle through ``sets`` sets of buffers (item i + sets overwrites item i's):
    the worker asks for item i + sets only after the consumer has asked for item i + 1, i.e. is
    done with item i. With 2 sets, item i + 1 is being made while the consumer works on item i.
    """
    results: queue.Queue = queue.Queue()
    free = threading.Semaphore(sets)
    stop = threading.Event()

    def work() -> None:
        try:
            while True:
                free.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(iterator)
                except StopIteration:
                    results.put((_DONE, None))
                    return
                results.put((item, None))
        except BaseException as exc:  # re-raised in the consumer
            results.put((_DONE, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's open file, closed from the thread that ran it

    worker = threading.Thread(target=work, name="madpipe-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = results.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
            free.release()  # the consumer is done with the item before this one
    finally:
        stop.set()
        free.release()
        worker.join()


__all__ = ["ahead"]
