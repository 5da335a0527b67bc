"""Concurrent requests share encoder calls: while the encoder is busy, texts wait and go in together.

Every caller that needs vectors (remember, recall, recall_batch, predict_next's query, import)
goes through here. At most WORKERS encoder calls run at a time. A request that finds a free slot
and nothing waiting is encoded at once, in its own thread (a lone client pays nothing for
coalescing). Otherwise its texts join one queue; an encoder worker takes what is waiting, up to
MAX_TEXTS texts and MAX_CHARS characters, in turns across the waiting requests (each gets an
equal share of a batch, so one long text does not hold up many short ones), encodes it in one
call and hands each request its own rows.

WORKERS is 2: while one call is inside the model, the other tokenizes, pads and hands out rows,
work that would otherwise leave the cores idle (benchmarks/load.py: more requests per second than
one worker on two cores). Batches stay small (MAX_TEXTS) because on a CPU a text costs about the
same in a batch of 16 as in a batch of 64, while a request that arrives behind a big batch waits
for all of it.

A request that fails in the encoder fails with its batch-mates and no others, and the workers go
on; a cancelled request is dropped from the queue, and rows already computed for it are discarded.
A caller whose tool call is cancelled (see `cancel_token`) stops waiting at once.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import numpy as np
import structlog

from emx_mcp.embedding import Encoder, Vectors

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_TEXTS = 16
MAX_CHARS = 16_000
WORKERS = 2
# How often a waiting caller looks at its cancellation token.
POLL_S = 0.02

# Set (by the server, per tool call) to an event that fires when the call is cancelled; a caller
# waiting for its vectors then leaves the queue instead of holding a place in the next batch.
cancel_token: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "emx_cancel_token", default=None
)


# Set (by the server, per tool call) to a function that sends the caller a progress notification
# (done, total, message); a no-op unless the caller asked for progress. Long work reports through it.
progress_reporter: contextvars.ContextVar[Callable[[float, float, str], None] | None] = (
    contextvars.ContextVar("emx_progress_reporter", default=None)
)


def report_progress(done: float, total: float, message: str) -> None:
    """Tell the tool call's caller how far the work is, if it asked (from a worker thread)."""
    reporter = progress_reporter.get()
    if reporter is not None:
        reporter(done, total, message)


class Cancelled(Exception):
    """The request was cancelled before its vectors were ready."""


@dataclass(eq=False)
class Pending:
    """One caller's texts, the rows encoded so far, and how it ended."""

    texts: Sequence[str]
    rows: Vectors | None = None
    next: int = 0  # index of the first text not yet taken into a batch
    left: int = 0  # texts not yet encoded
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False

    def cancel(self) -> None:
        """Give up on this request: it leaves the queue; its batch-mates are not affected."""
        self.cancelled = True
        self.error = self.error or Cancelled("the request was cancelled")
        self.done.set()


@dataclass(frozen=True, slots=True)
class CoalescingStats:
    requests: int
    batches: int
    texts: int

    @property
    def mean_batch(self) -> float:
        return round(self.texts / self.batches, 2) if self.batches else 0.0


class CoalescingEncoder:
    """An Encoder whose concurrent callers share batches of one inner encoder."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self._queue: deque[Pending] = deque()
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._active = 0  # encoder calls running (inline or in a worker), at most WORKERS
        self._requests = self._batches = self._texts = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def stats(self) -> CoalescingStats:
        return CoalescingStats(self._requests, self._batches, self._texts)

    def encode(self, texts: Sequence[str]) -> Vectors:
        """The vectors of `texts` (len(texts), dim), encoded together with whatever else is waiting."""
        with self._cond:
            inline = bool(texts) and not self._queue and self._active < WORKERS and len(texts) <= MAX_TEXTS
            if inline:
                self._active += 1
                self._requests += 1
                self._batches += 1
                self._texts += len(texts)
        if inline:
            try:
                return self.inner.encode(texts)
            finally:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()
        request = self.submit(texts)
        token = cancel_token.get()
        while not request.done.wait(POLL_S if token is not None else None):
            if token is not None and token.is_set():
                request.cancel()
        if request.error is not None:
            raise request.error
        assert request.rows is not None
        return request.rows

    def submit(self, texts: Sequence[str]) -> Pending:
        """Queue `texts`; the returned request completes (or fails) on its own."""
        request = Pending(texts, left=len(texts))
        if not texts:
            request.rows = np.zeros((0, self.inner.dim), dtype=np.float32)
            request.done.set()
            return request
        with self._cond:
            self._requests += 1
            self._queue.append(request)
            self._cond.notify_all()
            self._workers = [w for w in self._workers if w.is_alive()]
            if len(self._workers) < WORKERS:
                worker = threading.Thread(target=self._work, name="emx-encoder", daemon=True)
                worker.start()
                self._workers.append(worker)
        return request

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            texts = [t for request, start, stop in batch for t in request.texts[start:stop]]
            try:
                rows = self.inner.encode(texts)
            except BaseException as exc:  # reaches only the requests in this batch
                log.warning(
                    "encoder failed; the requests in its batch fail", error=f"{type(exc).__name__}: {exc}"
                )
                self._fail(batch, exc)
                continue
            finally:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()
            self._deliver(batch, rows)

    def _next_batch(self) -> list[tuple[Pending, int, int]]:
        """Slices (request, start, stop) of waiting requests, in turns, within the batch limits."""
        with self._cond:
            while not self._live() or self._active >= WORKERS:
                self._cond.wait()
            self._active += 1
            batch: list[tuple[Pending, int, int]] = []
            count = chars = 0
            while count < MAX_TEXTS and chars < MAX_CHARS:
                live = self._live()
                if not live:
                    break
                share = max(1, (MAX_TEXTS - count) // len(live))
                for request in live:
                    stop = min(len(request.texts), request.next + share, request.next + MAX_TEXTS - count)
                    taken = request.texts[request.next : stop]
                    if not taken:
                        continue
                    batch.append((request, request.next, stop))
                    request.next = stop
                    count += len(taken)
                    chars += sum(len(t) for t in taken)
                    if request.next >= len(request.texts):
                        self._queue.remove(request)
                    if count >= MAX_TEXTS or chars >= MAX_CHARS:
                        break
            self._batches += 1
            self._texts += count
            return batch

    def _live(self) -> list[Pending]:
        for request in [r for r in self._queue if r.cancelled]:
            self._queue.remove(request)
        return list(self._queue)

    def _deliver(self, batch: list[tuple[Pending, int, int]], rows: Vectors) -> None:
        at = 0
        for request, start, stop in batch:
            part = rows[at : at + stop - start]
            at += stop - start
            if request.cancelled or request.error is not None:
                continue
            if request.rows is None:
                request.rows = np.empty((len(request.texts), rows.shape[1]), dtype=np.float32)
            request.rows[start:stop] = part
            request.left -= stop - start
            if request.left == 0:
                request.done.set()

    def _fail(self, batch: list[tuple[Pending, int, int]], exc: BaseException) -> None:
        with self._cond:
            for request, _, _ in batch:
                if request.error is None:
                    request.error = exc
                if request in self._queue:
                    self._queue.remove(request)
                request.done.set()


async def off_loop(fn: Callable[..., T], /, *args: Any) -> T:
    """Run a service call in a worker thread, off the event loop.

    If the tool call is cancelled meanwhile, the call's token fires: a request still waiting for
    the encoder leaves its queue and fails (nothing is stored), and the thread is free at once.
    """
    token = threading.Event()

    async def watch() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            token.set()

    context = contextvars.copy_context()
    context.run(cancel_token.set, token)
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            result = await anyio.to_thread.run_sync(functools.partial(context.run, fn, *args))
        except Exception as exc:  # raised below, outside the group, as itself (not in a group)
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        if isinstance(failure, Cancelled):
            await anyio.lowlevel.checkpoint()  # the call's own cancellation, not a tool error
        raise failure
    return result
