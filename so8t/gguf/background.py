"""Background threads for the GGUF writers and checks: an ordered chunk writer, a bounded read-ahead,
and an order-keeping parallel map (``ordered_map``).

Both keep the output bytes identical to a serial run (the writer handles chunks strictly in submission
order) and move every exception from their thread to the caller's. Callers must always ``close()`` them,
also after an error, so no thread outlives an export.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from so8t import profile


def ordered_map(job: Callable, items: Iterable, workers: int = 0) -> Iterator:
    """``job(item)`` for every item on a pool of ``workers`` threads (0: one per CPU), yielded in item
    order, with at most two items per worker in flight (memory stays a few chunks). The jobs' numpy, torch
    and ggml calls release the GIL; torch runs one intra-op thread meanwhile
    (``ggml_kernels.torch_single_threaded``), so the pool does not oversubscribe the cores."""
    from so8t.gguf.ggml_kernels import torch_single_threaded

    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="so8t-map") as pool, torch_single_threaded():
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(job, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class OrderedWriter:
    """One background thread that runs write jobs in submission order: encoded chunks (with their
    hashes) and plain calls such as writing a file's header. Chunks arrive as futures, so encoding may
    still run elsewhere (ggml's pool) when they are queued; the writer waits for each in turn.

    The first error is kept, later jobs are dropped, and the error is raised on the caller's thread by
    the next ``submit`` / ``call`` or by ``close``. ``close`` always stops the thread (also after a caller
    error)."""

    def __init__(self, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="so8t-gguf-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job()
                except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
                    self.error = err

    def submit(self, write: Callable[[memoryview], None], encoded: Future, hasher) -> None:
        """Queue the bytes ``encoded`` will hold (a future of an array): ``write(bytes)``, then
        ``hasher.update(bytes)``. Blocks while ``depth`` jobs are waiting."""

        def job() -> None:
            buf = memoryview(np.ascontiguousarray(encoded.result())).cast("B")
            write(buf)
            with profile.phase("hash"):
                hasher.update(buf)

        self.call(job)

    def call(self, job: Callable[[], None]) -> None:
        """Queue ``job()`` after everything submitted so far."""
        self._raise()
        self._queue.put(job)

    def close(self, check: bool = True) -> None:
        """Wait until every submitted chunk is written; raise the writer's error if ``check``."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if check:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class Prefetch:
    """Iterate ``items`` on a background thread started at once (so reading overlaps the caller's set-up),
    producing at most ``depth`` items beyond the one the consumer holds (at most ``depth + 1`` source
    tensors in memory). An item whose ``nbytes(item)`` exceeds ``alone_above`` is held alone: nothing is
    read ahead while the consumer works on it.

    The producer's exception is raised by the consumer's ``next``; ``close()`` (always call it, also
    when never iterated) stops the producer before its next item and waits for it."""

    _DONE = object()

    def __init__(self, items: Iterable, depth: int, nbytes=None, alone_above: int = 0):
        self._items, self._nbytes, self._alone_above = items, nbytes, alone_above
        self._permits = max(0, depth) + 1  # + the item the consumer holds
        self._ready: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(self._permits)
        self._stop = threading.Event()
        self._held = 0  # permits of the item the consumer holds
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name="so8t-gguf-reader", daemon=True)
        self._thread.start()

    def _acquire(self) -> bool:
        while not self._room.acquire(timeout=0.1):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    def _produce(self) -> None:
        try:
            iterator = iter(self._items)
            while self._acquire():
                try:
                    item = next(iterator)
                except StopIteration:
                    self._ready.put((self._DONE, None, 0))
                    return
                alone = self._nbytes is not None and self._nbytes(item) > self._alone_above
                weight = self._permits if alone else 1
                self._ready.put((item, None, weight))
                del item
                for _ in range(weight - 1):
                    if not self._acquire():
                        return
        except BaseException as err:  # noqa: BLE001 - re-raised on the consumer's thread
            self._ready.put((self._DONE, err, 0))

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        if self._held:
            self._room.release(self._held)
            self._held = 0
        if self._finished:
            raise StopIteration
        item, err, weight = self._ready.get()
        if item is self._DONE:
            self._finished = True
            self.close()
            if err is not None:
                raise err
            raise StopIteration
        self._held = weight
        return item

    def close(self) -> None:
        self._finished = True
        self._stop.set()
        self._thread.join()
        while not self._ready.empty():
            self._ready.get_nowait()
