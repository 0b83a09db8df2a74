"""GroupCommit's grouping rules, with a recording ``write`` in place of the database (the
database side is tests/functions/test_streaming_ingest.py)."""

import asyncio

import psycopg
import pytest

from pefm.serving.group_commit import GroupCommit


class Recorder:
    """A ``write`` that records each group it is given and answers each item with its result
    (an item that is an exception instance is answered with it)."""

    def __init__(self, fail_groups_over: int | None = None):
        self.groups: list[list] = []
        self.fail_groups_over = fail_groups_over

    def __call__(self, items):
        self.groups.append(list(items))
        if self.fail_groups_over is not None and len(items) > self.fail_groups_over and "poison" in items:
            raise ValueError("the group holds a poisoned item")
        if items == ["poison"]:
            raise ValueError("poisoned")
        return [f"wrote {item}" for item in items]


def submit_all(group: GroupCommit, items):
    """Submit (item, keys, orders) triples together, in order; each one's outcome."""

    async def run():
        tasks = [
            asyncio.ensure_future(group.submit(item, frozenset(keys), frozenset(orders)))
            for item, keys, orders in items
        ]
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(run())


def test_items_arriving_together_share_a_group_of_bounded_size():
    recorder = Recorder()
    group = GroupCommit(recorder, max_events=4, max_wait=0.01)
    outcomes = submit_all(group, [(i, {("s", i)}, {"s"}) for i in range(10)])
    assert outcomes == [f"wrote {i}" for i in range(10)]
    assert [len(g) for g in recorder.groups] == [4, 4, 2]
    assert [item for g in recorder.groups for item in g] == list(range(10))  # arrival order kept


def test_a_repeated_key_waits_for_the_next_group_and_so_does_the_rest_of_its_series():
    recorder = Recorder()
    group = GroupCommit(recorder, max_events=100, max_wait=0.01)
    items = [
        ("a1", {("a", 1)}, {"a"}),
        ("b1", {("b", 1)}, {"b"}),
        ("a1-again", {("a", 1)}, {"a"}),  # same (series, ts) as a1: next group
        ("a2", {("a", 2)}, {"a"}),  # a later event of series a: must not overtake a1-again
        ("b2", {("b", 2)}, {"b"}),  # series b is not held back
    ]
    outcomes = submit_all(group, items)
    assert outcomes == [f"wrote {name}" for name, _, _ in items]
    assert recorder.groups == [["a1", "b1", "b2"], ["a1-again", "a2"]]


def test_one_bad_item_fails_alone_when_its_group_fails_as_a_whole():
    recorder = Recorder(fail_groups_over=1)
    group = GroupCommit(recorder, max_events=10, max_wait=0.01)
    outcomes = submit_all(group, [(name, {name}, {name}) for name in ("x", "poison", "y")])
    assert outcomes[0] == "wrote x" and outcomes[2] == "wrote y"
    assert isinstance(outcomes[1], ValueError)
    assert recorder.groups[0] == ["x", "poison", "y"]  # tried together first, then one by one
    assert recorder.groups[1:] == [["x"], ["poison"], ["y"]]


def test_a_database_outage_fails_the_whole_group_without_retrying_each():
    calls = []

    def down(items):
        calls.append(list(items))
        raise psycopg.OperationalError("connection refused")

    group = GroupCommit(down, max_events=10, max_wait=0.01)
    outcomes = submit_all(group, [(i, {i}, {i}) for i in range(3)])
    assert all(isinstance(o, psycopg.OperationalError) for o in outcomes)
    assert calls == [[0, 1, 2]]


def test_per_item_results_and_errors_reach_their_own_callers():
    def write(items):
        return [LookupError(f"no {item}") if item.startswith("missing") else item.upper() for item in items]

    group = GroupCommit(write, max_events=10, max_wait=0.01)
    outcomes = submit_all(group, [(name, {name}, {name}) for name in ("ok", "missing-1", "fine")])
    assert outcomes[0] == "OK" and outcomes[2] == "FINE"
    assert isinstance(outcomes[1], LookupError) and str(outcomes[1]) == "no missing-1"


@pytest.mark.parametrize("wait", [0.0, 0.005])
def test_the_writer_stops_when_idle_and_starts_again_on_the_next_item(wait):
    recorder = Recorder()
    group = GroupCommit(recorder, max_events=10, max_wait=wait)

    async def run():
        first = await group.submit("one", frozenset({1}), frozenset({"s"}))
        await asyncio.sleep(0.01)
        assert group._task.done()  # nothing queued: no task spinning
        second = await group.submit("two", frozenset({2}), frozenset({"s"}))
        return first, second

    assert asyncio.run(run()) == ("wrote one", "wrote two")
    assert recorder.groups == [["one"], ["two"]]
