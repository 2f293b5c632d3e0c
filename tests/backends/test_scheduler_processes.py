"""Three `jobchain scheduler` processes with skewed clocks over a real Redis: one job per 1 s slot."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobchain import App
from jobchain.capabilities import Browse, require
from jobchain.cli.schedules import CLOCK_OFFSET_ENV
from jobchain.model import JobState
from jobchain.schedules import slot_id

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(Path(__file__).with_name("schedule_app.py"))


def _schedulers(url: str, offsets: list[float]) -> list[subprocess.Popen[str]]:
    procs = []
    for offset in offsets:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
        env[CLOCK_OFFSET_ENV] = str(offset)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "jobchain", "scheduler", "-c", CONFIG, "-b", url, "--poll", "0.2"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _run(redis_server_url: str, seconds: float) -> None:
    url = redis_server_url.replace("redis://", "redis-lists://", 1)
    procs = _schedulers(url, [-0.4, 0.0, 0.35])
    try:
        time.sleep(seconds)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errors = [proc.communicate(timeout=10)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    app = App(url)
    try:
        records = require(app.backend, Browse).browse(queue="default", state=JobState.QUEUED, limit=1000)
        ids = [r.job.id for r in records.records]
        assert len(ids) == len(set(ids))
        slots = sorted(_slot_of(i) for i in ids)
        assert len(slots) >= seconds - 4, ids  # the schedulers start within a few seconds
        expected = list(range(int(slots[0]), int(slots[-1]) + 1))
        assert [int(s) for s in slots] == expected, "a slot is missing or doubled"
        assert all(app.backend.get_job(slot_id("tick", s)) is not None for s in expected)
        stats = {s.queue: s for s in app.stats()}
        assert stats["default"].ready == len(expected)
    finally:
        app.close()


def _slot_of(job_id: str) -> float:
    from datetime import datetime

    stamp = job_id.removeprefix("sched.tick.").removesuffix("Z")
    return math.floor(datetime.strptime(stamp + "+0000", "%Y%m%dT%H%M%S%z").timestamp())


def test_three_skewed_schedulers_submit_each_slot_once(redis_server_url: str) -> None:
    """About 10 s of 1-second slots, three schedulers 0.75 s apart: every slot once, none missing."""
    _run(redis_server_url, 10)


@pytest.mark.slow
@pytest.mark.soak
def test_three_skewed_schedulers_for_a_minute(redis_server_url: str) -> None:
    """The issue's minute of 1-second slots (soak)."""
    _run(redis_server_url, 60)
