"""GroupCommit's writes waiting their turn (``write_waiting``, for an item ``Busy`` past its
``busy_patience``): they wait beside the writer, not in it, so the groups of other series go on
meanwhile, while the later items of their own series stay behind them.

GroupCommit is a scheduling component only, so a fake ``write`` and ``write_waiting`` stand in for
the database here: the series ``a`` is held by another writer (a large upload) until ``release``
is set, and ``write_waiting`` blocks on it as a lock that queues would."""

import asyncio
import threading
import time

import pytest

from pefm.serving.group_commit import Busy, GroupCommit

PATIENCE = 0.05


class Upload:
    """A large write holding series ``a`` until ``release``; the fake ``write`` answers ``Busy``
    for its items meanwhile, and ``write_waiting`` waits for it. ``log`` records each call."""

    def __init__(self, fail_waiting: bool = False):
        self.release = threading.Event()
        self.waiting = threading.Event()  # write_waiting has begun
        self.fail_waiting = fail_waiting
        self.log: list[tuple[str, list[str]]] = []

    def write(self, items):
        self.log.append(("write", list(items)))
        held = not self.release.is_set()
        return [Busy() if held and item.startswith("a") else f"wrote {item}" for item in items]

    def write_waiting(self, items):
        self.log.append(("waiting", list(items)))
        self.waiting.set()
        assert self.release.wait(10), "never released"
        if self.fail_waiting:
            raise ValueError("a value the database rejects")
        return [f"waited for {item}" for item in items]

    def group(self) -> GroupCommit:
        return GroupCommit(
            self.write,
            max_events=10,
            max_wait=0.005,
            busy_wait=0.01,
            write_waiting=self.write_waiting,
            busy_patience=PATIENCE,
        )

    def written(self, item: str) -> list[int]:
        """The indexes in ``log`` of the calls that held ``item``."""
        return [i for i, (_, items) in enumerate(self.log) if item in items]


def submit(group: GroupCommit, name: str, series: str) -> asyncio.Task:
    return asyncio.ensure_future(group.submit(name, frozenset({(series, name)}), frozenset({series})))


async def waiting_write_begun(upload: Upload) -> None:
    deadline = time.monotonic() + 5
    while not upload.waiting.is_set():
        assert time.monotonic() < deadline, "no write waiting its turn began"
        await asyncio.sleep(0.005)


def test_other_series_are_written_while_a_write_waits_its_turn():
    upload = Upload()

    async def run():
        group = upload.group()
        a1 = submit(group, "a1", "a")
        try:
            await waiting_write_begun(upload)
            others = [submit(group, "b1", "b"), submit(group, "c1", "c"), submit(group, "b2", "b")]
            # normally a few milliseconds; before, they waited for the upload to commit
            answers = await asyncio.wait_for(asyncio.gather(*others), 2)
            assert not a1.done()
        finally:
            upload.release.set()
        return answers, await a1

    answers, a1 = asyncio.run(run())
    assert answers == ["wrote b1", "wrote c1", "wrote b2"]
    assert a1 == "waited for a1"


def test_a_later_item_of_its_series_stays_behind_a_write_waiting_its_turn():
    upload = Upload()

    async def run():
        group = upload.group()
        a1 = submit(group, "a1", "a")
        try:
            await waiting_write_begun(upload)
            a2 = submit(group, "a2", "a")
            b1 = submit(group, "b1", "b")
            assert await asyncio.wait_for(b1, 2) == "wrote b1"
            await asyncio.sleep(3 * PATIENCE)  # long enough for a2 to have been tried, were it free to
            assert not a2.done() and not upload.written("a2")
        finally:
            upload.release.set()
        return await a1, await asyncio.wait_for(a2, 2)

    assert asyncio.run(run()) == ("waited for a1", "wrote a2")
    assert [upload.log[i] for i in upload.written("a1")][-1] == ("waiting", ["a1"])
    # not tried while a1 waited (it would have been Busy), then once, a1 in, with the try-lock
    assert [upload.log[i] for i in upload.written("a2")] == [("write", ["a2"])]


def test_a_failing_write_waiting_its_turn_fails_only_its_own_item():
    upload = Upload(fail_waiting=True)

    async def run():
        group = upload.group()
        a1 = submit(group, "a1", "a")
        try:
            await waiting_write_begun(upload)
            a2, b1 = submit(group, "a2", "a"), submit(group, "b1", "b")
            assert await asyncio.wait_for(b1, 2) == "wrote b1"
        finally:
            upload.release.set()
        return await asyncio.gather(a1, asyncio.wait_for(a2, 2), return_exceptions=True)

    a1, a2 = asyncio.run(run())
    assert isinstance(a1, ValueError)
    assert a2 == "wrote a2"


def test_cancelling_the_writer_answers_the_write_waiting_its_turn():
    """Cancelled, the writer cancels the write waiting its turn too, which answers its item; what
    is still queued stays queued, for the writer the next item starts."""
    upload = Upload()

    async def run():
        group = upload.group()
        a1 = submit(group, "a1", "a")
        await waiting_write_begun(upload)
        a2 = submit(group, "a2", "a")  # held behind a1: the writer waits for it
        await asyncio.sleep(3 * PATIENCE)
        group._task.cancel()
        upload.release.set()  # a thread cannot be stopped: its task ends once it returns
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(a1, 2)
        assert not group._waiting and not group._held and not a2.done()
        return await asyncio.wait_for(asyncio.gather(a2, submit(group, "b1", "b")), 2)

    assert asyncio.run(run()) == ["wrote a2", "wrote b1"]
