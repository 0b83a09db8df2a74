"""The monitor's drift checks under a burst of requests: at most one running and one waiting."""

import asyncio

import pytest

from pefm.serving.monitor import Coalesced


def test_a_burst_costs_two_runs_and_every_answer_comes_from_a_run_begun_after_its_request():
    async def scenario():
        runs, release = [], asyncio.Event()

        async def job():
            runs.append(len(runs) + 1)
            number = runs[-1]
            await release.wait()
            return number

        checks = Coalesced(job)
        first = asyncio.ensure_future(checks())
        await asyncio.sleep(0)  # the first run starts
        await asyncio.sleep(0)
        burst = [asyncio.ensure_future(checks()) for _ in range(6)]  # while it runs
        await asyncio.sleep(0)
        assert runs == [1]
        release.set()
        answers = await asyncio.gather(first, *burst)
        later = await checks()  # nothing runs: a run of its own
        return runs, answers, later

    runs, answers, later = asyncio.run(scenario())
    assert runs == [1, 2, 3]
    assert answers == [1, 2, 2, 2, 2, 2, 2] and later == 3


def test_a_failed_run_fails_its_callers_only_and_a_caller_gone_cancels_nothing():
    async def scenario():
        calls = 0

        async def job():
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            if calls == 1:
                raise RuntimeError("database away")
            return calls

        checks = Coalesced(job)
        failing = asyncio.ensure_future(checks())
        await asyncio.sleep(0)
        gone, waiting = asyncio.ensure_future(checks()), asyncio.ensure_future(checks())
        await asyncio.sleep(0)
        gone.cancel()  # its client hung up: the run the other waits on goes on
        with pytest.raises(RuntimeError, match="database away"):
            await failing
        return await waiting, calls

    assert asyncio.run(scenario()) == (2, 2)
