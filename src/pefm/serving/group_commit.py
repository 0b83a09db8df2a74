"""Group commit: small writes that arrive together are committed together.

Streamed events (one observation per request, thousands a second) cost a transaction each if
written one by one; the commit, not the row, is what the database pays for. Here each request is
parsed and checked on its own, then queued; one writer task takes what is queued (at most
``max_events``: what queued while the last group was written, and, lingering ``max_wait``
seconds for more once one is there, like Kafka's ``linger.ms``, what joins it) and hands the
group to ``write``, which runs on a worker thread and commits it in one transaction. Every
request is answered from its own result, after the commit that holds its rows. Groups are
written one after another in arrival order, and two events that touch the same (series, ts)
never share a group (the later one, and every later event of its series, waits for the next), so
a series' events are applied in the order they came and each keeps its own vintage.

``write`` returns a result or an exception per item: an event it refuses fails alone. An item
answered ``Busy`` (its series are being written by another transaction, a large upload's COPY)
goes back to the queue, ahead of the later items of its series, and is tried again ``busy_wait``
seconds later; the groups of other series go on meanwhile. One ``Busy`` for ``busy_patience`` is
written alone by ``write_waiting``, which waits for its series' lock (behind an upload, seconds):
that write is a task of its own, and while it waits its series are held (their later items stay
queued behind it) while the groups of other series go on. A group holds at most ``max_orders``
distinct orders (series: the database takes a lock for each). When the group as a whole fails
(the database is away), every item gets that error; when it fails for a reason the group cannot
say (a bug, a value the database rejects, a lock table too full for the whole group), each item
is written again on its own, so only the one at fault fails; if the database goes away midway,
the items written keep their results and only the rest get the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from pefm.serving.http import in_thread

log = logging.getLogger(__name__)
T = TypeVar("T")
WHOLE_GROUP_ERRORS = (psycopg.OperationalError, PoolTimeout)
"""Errors that say nothing about an item: every item of the group gets them (but see ``_whole``)."""


class Busy(Exception):
    """``write``'s answer for an item it cannot write now, without waiting: try it again later."""


def _whole(exc: BaseException) -> bool:
    """Whether ``exc`` fails a whole group. Not a lock table out of room (53200): a group of
    thousands of series can fill it where each of its items alone fits."""
    return isinstance(exc, WHOLE_GROUP_ERRORS) and not isinstance(exc, psycopg.errors.OutOfMemory)


@dataclass
class _Queued(Generic[T]):
    item: T
    keys: frozenset[Hashable]
    """What the item writes, e.g. {(series, ts)}: no two items of a group share one."""
    orders: frozenset[Hashable]
    """What orders it, e.g. {series}: an item waits when one before it with a shared order waits."""
    ready_at: float = 0.0
    """The loop's time before which it waits (it was ``Busy``)."""
    busy_since: float | None = None
    """When it was first ``Busy``: past ``busy_patience``, it is written alone, waiting its turn."""
    future: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]


class GroupCommit(Generic[T]):
    """Queue items, write them in groups with ``write(items) -> [result or exception, ...]``."""

    def __init__(
        self,
        write: Callable[[list[T]], Sequence[Any]],
        *,
        max_events: int,
        max_wait: float,
        max_orders: int | None = None,
        busy_wait: float = 0.05,
        write_waiting: Callable[[list[T]], Sequence[Any]] | None = None,
        busy_patience: float = 1.0,
        on_group: Callable[[int], None] | None = None,
    ):
        self.write = write
        self.max_events = max_events
        self.max_wait = max_wait
        self.max_orders = max_orders
        self.busy_wait = busy_wait
        self.write_waiting = write_waiting
        """Writes items waiting for their turn (never ``Busy``): for one ``Busy`` for ``busy_patience``
        seconds, which a try-lock could otherwise miss for ever while readers overlap, where a lock
        that queues is served in its turn."""
        self.busy_patience = busy_patience
        self.on_group = on_group
        self._queue: list[_Queued[T]] = []
        self._task: asyncio.Task | None = None
        self._waiting: set[asyncio.Task] = set()
        """The writes under way with ``write_waiting``, one item each, beside ``_run``."""
        self._held: set[Hashable] = set()
        """Their orders: no later item sharing one is written before them."""
        self._wakeup: asyncio.Future | None = None
        """Set when ``_run``, with nothing it can write now, may have something again."""

    async def submit(self, item: T, keys: frozenset[Hashable], orders: frozenset[Hashable]) -> Any:
        """The item's result once the group holding it has committed (or its exception)."""
        queued = _Queued(item, keys, orders, future=asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        self._wake()
        return await queued.future

    def _wake(self, start: bool = True) -> None:
        """Wake ``_run`` where it waits for what it holds back; start it where it is not running."""
        if start and self._queue and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run())
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        try:
            await self._write_queued()
        except asyncio.CancelledError:  # the writes waiting their turn are its own: they stop with it
            for task in list(self._waiting):
                task.cancel()
            raise

    async def _write_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if len(self._queue) < self.max_events and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
            group, waiting = self._take(loop.time())
            if not group:  # every item waits for a busy series, or for a write waiting its turn
                self._wakeup = loop.create_future()
                later = [q.ready_at for q in self._queue if q.ready_at > loop.time()]
                await asyncio.wait([self._wakeup], timeout=min(later) - loop.time() if later else None)
                continue
            if self.on_group:
                self.on_group(len(group))
            if waiting:  # seconds, maybe: written beside this loop, its orders held meanwhile
                self._held |= group[0].orders
                task = asyncio.create_task(self._write_waiting(group[0]))
                self._waiting.add(task)
                task.add_done_callback(self._waiting.discard)
                continue
            try:
                results = await in_thread(self._write_group, group, waiting)
            except BaseException as exc:  # the whole group failed, or the task was cancelled
                for queued in group:
                    _settle(queued.future, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            later = []
            for queued, result in zip(group, results, strict=True):
                if isinstance(result, Busy) and not queued.future.done():
                    queued.ready_at = loop.time() + self.busy_wait
                    queued.busy_since = queued.busy_since or loop.time()
                    later.append(queued)
                else:
                    _settle(queued.future, result)
            # ahead of what is queued: what shares an order with them came after them
            self._queue = later + self._queue

    async def _write_waiting(self, queued: _Queued[T]) -> None:
        """Write ``queued`` alone with ``write_waiting`` (never ``Busy``) and answer it; then let
        go of its orders, so that ``_run`` writes the items of its series queued behind it."""
        try:
            [result] = await in_thread(self._write_group, [queued], True)
        except BaseException as exc:  # it failed, or the task was cancelled
            result = exc
        _settle(queued.future, result)
        self._held -= queued.orders
        cancelled = isinstance(result, BaseException) and not isinstance(result, Exception)
        self._wake(start=not cancelled)  # cancelled (with _run, or the loop closing): start nothing
        if cancelled:
            raise result

    def _take(self, now: float) -> tuple[list[_Queued[T]], bool]:
        """The next group: in arrival order, skipping what must wait for the next; and whether it
        is to be written waiting its turn (an item ``Busy`` for ``busy_patience``, alone)."""
        before: set[Hashable] = set(self._held)  # the orders of items still waiting ahead of it
        for queued in self._queue:
            if queued.ready_at > now or queued.orders & self._held:
                before |= queued.orders
                continue
            patience_over = queued.busy_since is not None and now - queued.busy_since >= self.busy_patience
            if self.write_waiting and patience_over and not queued.orders & before:
                self._queue.remove(queued)
                return [queued], True
            break
        group: list[_Queued[T]] = []
        rest: list[_Queued[T]] = []
        keys: set[Hashable] = set()
        orders: set[Hashable] = set()
        waiting: set[Hashable] = set(self._held)
        for queued in self._queue:
            if (
                len(group) < self.max_events
                and queued.ready_at <= now
                and not (queued.keys & keys)
                and not (queued.orders & waiting)
                and (self.max_orders is None or not group or len(orders | queued.orders) <= self.max_orders)
            ):
                group.append(queued)
                keys |= queued.keys
                orders |= queued.orders
            else:
                rest.append(queued)
                waiting |= queued.orders
        self._queue = rest
        return group, False

    def _write_group(self, group: list[_Queued[T]], waiting: bool) -> Sequence[Any]:
        write = self.write_waiting if waiting and self.write_waiting else self.write
        try:
            return write([q.item for q in group])
        except Exception as exc:
            if _whole(exc) or len(group) == 1:
                raise
            log.warning("a group of %d writes failed; writing each on its own", len(group), exc_info=True)
            results: list[Any] = []
            busy: set[Hashable] = set()  # the orders of an item answered Busy: none after it may overtake it
            for queued in group:
                if queued.orders & busy:
                    results.append(Busy())
                    continue
                try:
                    [result] = write([queued.item])
                except Exception as exc:
                    if _whole(exc):  # the items written keep their results: they committed
                        return results + [exc] * (len(group) - len(results))
                    result = exc
                if isinstance(result, Busy):
                    busy |= queued.orders
                results.append(result)
            return results


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # its request was cancelled (the client went away)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
