"""GroupCommit under contention: items another writer holds up (``Busy``), groups of many series,
a lock table out of room, the database lost midway through a group written item by item."""

import psycopg
import psycopg.errors

from pefm.serving.group_commit import Busy, GroupCommit
from tests.unit.test_group_commit import submit_all


def test_a_busy_item_is_tried_again_later_while_other_series_go_on_and_its_own_keep_their_order():
    groups: list[list[str]] = []
    busy_until = {"x": 2}  # x is held by another writer for the first two groups

    def write(items):
        groups.append(list(items))
        held = busy_until["x"] >= len(groups)
        return [Busy() if held and item.startswith("x") else f"wrote {item}" for item in items]

    group = GroupCommit(write, max_events=10, max_wait=0.01, busy_wait=0.01)
    items = [("x1", {("x", 1)}, {"x"}), ("y1", {("y", 1)}, {"y"}), ("x1-again", {("x", 1)}, {"x"})]
    assert submit_all(group, items) == ["wrote x1", "wrote y1", "wrote x1-again"]
    # y1 went first, not held up by x; x1 was tried again (once more busy) and x1-again stayed behind it
    assert groups == [["x1", "y1"], ["x1"], ["x1"], ["x1-again"]]


def test_a_group_holds_at_most_max_orders_distinct_series():
    groups: list[list[int]] = []

    def write(items):
        groups.append(list(items))
        return items

    group = GroupCommit(write, max_events=100, max_wait=0.01, max_orders=5)
    items = [(i, {i}, {f"s{i}a", f"s{i}b"}) for i in range(5)]  # two series each
    assert submit_all(group, items) == list(range(5))
    assert groups == [[0, 1], [2, 3], [4]]
    alone = GroupCommit(write, max_events=100, max_wait=0.01, max_orders=1)
    assert submit_all(alone, [("big", {"k"}, {"a", "b"})]) == ["big"]  # over the cap alone: still written


def test_a_lock_table_out_of_room_fails_the_group_not_its_items():
    calls: list[list[int]] = []

    def write(items):
        calls.append(list(items))
        if len(items) > 1:
            raise psycopg.errors.OutOfMemory("out of shared memory; increase max_locks_per_transaction")
        return [f"wrote {item}" for item in items]

    group = GroupCommit(write, max_events=10, max_wait=0.01)
    assert submit_all(group, [(i, {i}, {i}) for i in range(3)]) == ["wrote 0", "wrote 1", "wrote 2"]
    assert calls == [[0, 1, 2], [0], [1], [2]]


def test_the_database_lost_midway_fails_only_the_items_not_yet_written():
    def write(items):
        if len(items) > 1:
            raise ValueError("a value the database rejects")
        if items == [1]:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return [f"wrote {item}" for item in items]

    group = GroupCommit(write, max_events=10, max_wait=0.01)
    outcomes = submit_all(group, [(i, {i}, {i}) for i in range(3)])
    assert outcomes[0] == "wrote 0"  # committed (and announced) before the outage: not a 503
    assert all(isinstance(o, psycopg.OperationalError) for o in outcomes[1:])


def test_written_one_by_one_a_busy_item_is_not_overtaken_by_its_series_later_one():
    """A group failing for one bad item is written item by item: x@1 came back Busy, the upload
    holding x committed, and x@2, written next, overtook it."""
    writes: list[str] = []
    held = {"x": True}

    def write(items):
        if len(items) > 1:
            raise ValueError("a value the database rejects")
        [item] = items
        if item == "bad":
            raise ValueError("bad")
        if item.startswith("x") and held["x"]:
            held["x"] = False  # the upload commits right after this answer
            return [Busy()]
        writes.append(item)
        return [f"wrote {item}"]

    group = GroupCommit(write, max_events=10, max_wait=0.01, busy_wait=0.01)
    items = [("x@1", {("x", 1)}, {"x"}), ("bad", {("b", 1)}, {"b"}), ("x@2", {("x", 2)}, {"x"})]
    outcomes = submit_all(group, items)
    assert outcomes[0] == "wrote x@1" and outcomes[2] == "wrote x@2" and isinstance(outcomes[1], ValueError)
    assert writes == ["x@1", "x@2"]


def test_an_item_busy_for_its_patience_is_written_waiting_its_turn():
    """A try-lock can miss its turn for ever while readers overlap: past ``busy_patience`` the
    item is written alone by ``write_waiting``, which queues for the lock as a large write does."""
    waited: list[str] = []

    def write(items):
        return [Busy() for _ in items]  # a series some reader always holds

    def write_waiting(items):
        waited.extend(items)
        return [f"waited for {item}" for item in items]

    group = GroupCommit(
        write, max_events=10, max_wait=0.01, busy_wait=0.01, write_waiting=write_waiting, busy_patience=0.1
    )
    items = [("x@1", {("x", 1)}, {"x"}), ("x@2", {("x", 2)}, {"x"})]
    assert submit_all(group, items) == ["waited for x@1", "waited for x@2"]
    assert waited == ["x@1", "x@2"]  # each alone, in their order
