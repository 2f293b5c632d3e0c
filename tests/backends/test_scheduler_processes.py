"""Three `jobchain scheduler` processes with skewed clocks over a real Redis: one job per 1 s slot."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forkserver
import pytest

from jobchain import App
from jobchain.capabilities import Browse, require
from jobchain.cli.schedules import CLOCK_OFFSET_ENV
from jobchain.model import JobState
from jobchain.schedules import slot_id

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(Path(__file__).with_name("schedule_app.py"))


@pytest.fixture(autouse=True)
def _empty(redis_server_url: str) -> None:
    """Each test starts on an empty database (the server is shared by the session)."""
    import redis

    redis.Redis.from_url(redis_server_url).flushdb()


def _schedulers(url: str, offsets: list[float]) -> list[subprocess.Popen[str]]:
    procs = []
    for offset in offsets:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
        env[CLOCK_OFFSET_ENV] = str(offset)
        procs.append(
            forkserver.popen(
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
        _first_slot_stored(url, procs)  # the schedulers are up (a loaded machine can take seconds)
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
        assert len(slots) >= seconds - 1, ids  # counted from the first slot stored
        expected = list(range(int(slots[0]), int(slots[-1]) + 1))
        assert [int(s) for s in slots] == expected, "a slot is missing or doubled"
        assert all(app.backend.get_job(slot_id("tick", s)) is not None for s in expected)
        stats = {s.queue: s for s in app.stats()}
        assert stats["default"].ready == len(expected)
    finally:
        app.close()


def _first_slot_stored(url: str, procs: list[subprocess.Popen[str]], timeout: float = 60.0) -> None:
    """Wait until a scheduler has stored its first slot's job (or one of them exited)."""
    import redis

    client = redis.Redis.from_url(url.replace("redis-lists://", "redis://", 1))
    deadline = time.monotonic() + timeout
    try:
        while not any(b"sched.tick." in key for key in client.keys("*")):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise AssertionError("no scheduler stored a slot's job")
            time.sleep(0.05)
    finally:
        client.close()


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


def test_schedules_list_pause_resume(redis_server_url: str) -> None:
    """`schedules list` shows the last run and its outcome; pause and resume flip the flag."""
    url = redis_server_url.replace("redis://", "redis-lists://", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "jobchain", "schedules", *args, "-c", CONFIG, "-b", url]
        return forkserver.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    app = App(url)
    try:
        from jobchain.cli.config import load_config
        from jobchain.scheduler import Scheduler

        loaded = load_config(CONFIG).app
        loaded.use_backend(url)
        Scheduler(loaded).tick()
        loaded.close()
    finally:
        app.close()
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr

    [row] = json.loads(listed.stdout)
    assert (row["name"], row["last_outcome"], row["paused"]) == ("tick", "queued", False)
    assert cli("pause", "tick").returncode == 0
    assert json.loads(cli("list", "--json").stdout)[0]["paused"] is True
    assert "paused" in cli("list").stdout
    assert cli("resume", "tick").returncode == 0
    assert json.loads(cli("list", "--json").stdout)[0]["paused"] is False
    unknown = cli("pause", "nope")
    assert unknown.returncode == 1
    assert "no schedule 'nope'" in unknown.stderr


def test_a_worker_with_schedules_submits_and_runs_the_slots(redis_server_url: str) -> None:
    """`jobchain worker --schedules`: its scheduler thread submits each slot, its threads run them."""
    url = redis_server_url.replace("redis://", "redis-lists://", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    command = [sys.executable, "-m", "jobchain", "worker", "-c", CONFIG, "-b", url, "--schedules"]
    proc = forkserver.popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    app = App(url)
    try:
        browse = require(app.backend, Browse)
        deadline = time.monotonic() + 20
        done: list[str] = []
        while time.monotonic() < deadline and len(done) < 2:
            page = browse.browse(queue="default", state=JobState.SUCCEEDED, limit=100)
            done = [r.job.id for r in page.records]
            time.sleep(0.2)
        assert len(done) >= 2, done
        assert all(job_id.startswith("sched.tick.") for job_id in done)
    finally:
        app.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
