"""The prediction/webhook lanes (server/offload.py): results, errors, the bound, the time budget."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from labelpilot.server.offload import Busy, Lane


def _lane(threads: int = 1, max_queued: int = 1) -> Lane:
    return Lane("test", threads, max_queued, "LABELPILOT_TEST_QUEUED")


def test_a_job_returns_its_result_and_frees_its_slot() -> None:
    lane = _lane()

    async def main() -> tuple[int, str]:
        out = await lane.run(lambda a, b: a * b, 6, 7, timeout=5)
        await asyncio.sleep(0)
        return out, threading.current_thread().name

    try:
        result, loop_thread = asyncio.run(main())
        names = asyncio.run(lane.run(lambda: threading.current_thread().name))
    finally:
        lane.shutdown()
    assert result == 42
    assert lane.inflight == 0
    assert names.startswith("labelpilot-test") and names != loop_thread


def test_a_job_error_reaches_the_caller_and_frees_the_slot() -> None:
    lane = _lane()

    def boom() -> None:
        raise ValueError("bad task 3")

    try:
        with pytest.raises(ValueError, match="bad task 3"):
            asyncio.run(lane.run(boom, timeout=5))
    finally:
        lane.shutdown()
    assert lane.inflight == 0


def test_a_full_lane_refuses_at_once_and_serves_again_when_free() -> None:
    lane = _lane(threads=1, max_queued=1)
    gate = threading.Event()

    async def main() -> tuple[list[object], int]:
        held = [asyncio.ensure_future(lane.run(gate.wait, 10)) for _ in range(2)]  # one running, one waiting
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        with pytest.raises(Busy) as info:
            await lane.run(lambda: 1)
        refused_in = time.perf_counter() - t0
        assert refused_in < 0.5 and "LABELPILOT_TEST_QUEUED" in info.value.message
        assert info.value.status_code == 503
        gate.set()
        done = list(await asyncio.gather(*held))
        return [*done, await lane.run(lambda: "again")], lane.inflight

    try:
        results, inflight = asyncio.run(main())
    finally:
        lane.shutdown()
    assert results == [True, True, "again"]
    assert inflight == 0


def test_an_overrun_is_a_503_and_keeps_its_slot_until_the_job_ends() -> None:
    lane = _lane(threads=1, max_queued=0)
    gate = threading.Event()
    ran_late: list[bool] = []

    async def main() -> None:
        with pytest.raises(Busy) as info:
            await lane.run(gate.wait, 10, timeout=0.1)
        assert info.value.retry_after == 30 and "budget" in info.value.message
        assert lane.inflight == 1  # the thread cannot be stopped: it still holds the lane
        with pytest.raises(Busy):
            await lane.run(lambda: ran_late.append(True))
        gate.set()
        for _ in range(200):
            if lane.inflight == 0:
                break
            await asyncio.sleep(0.01)
        assert lane.inflight == 0
        assert await lane.run(lambda: "free again", timeout=5) == "free again"

    try:
        asyncio.run(main())
    finally:
        lane.shutdown()
    assert ran_late == []


def test_a_waiting_job_whose_request_gave_up_never_runs() -> None:
    lane = _lane(threads=1, max_queued=1)
    gate = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = asyncio.ensure_future(lane.run(gate.wait, 10))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):  # queued behind the first job; its budget passes before it starts
            await lane.run(ran.append, "late", timeout=0.1)
        gate.set()
        assert await first is True
        for _ in range(200):
            if lane.inflight == 0:
                break
            await asyncio.sleep(0.01)
        assert lane.inflight == 0

    try:
        asyncio.run(main())
    finally:
        lane.shutdown()
    assert ran == []
