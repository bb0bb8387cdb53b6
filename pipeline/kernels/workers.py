"""Helper threads for kernels that release the GIL: what ``concurrent.futures`` gives, without its
import (it imports ``logging``: ~4 ms of each ``madpipe snoop``, a tenth of madpipe's own imports).

>>> with Workers(2, "madpipe-format") as pool:   # doctest: +SKIP
...     job = pool.submit(fn, arg)
...     job.result()                              # fn's value, or its exception raised here
"""
from __future__ import annotations

import threading
from queue import SimpleQueue
from typing import Any, Callable


class Job:
    """A submitted call: :meth:`result` waits for it and gives its value or raises its exception."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self):
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def result(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Workers:
    """``count`` daemon threads running submitted calls in order of submission; :meth:`shutdown`
    (or leaving the ``with`` block) lets them finish what was submitted and stop."""

    def __init__(self, count: int = 1, name: str = "madpipe-worker"):
        self._calls: SimpleQueue = SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable, *args) -> Job:
        job = Job()
        self._calls.put((job, fn, args))
        return job

    def shutdown(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(wait=True)

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            job, fn, args = item
            try:
                job._value = fn(*args)
            except BaseException as error:  # given to whoever waits on the job
                job._error = error
            job._done.set()
