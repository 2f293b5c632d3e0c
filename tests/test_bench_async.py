"""bench/bench_async.py without the package registry: the maths, the tables, the marks, the adapters'
``naps`` command, the peers' layouts, and the floor and jobchain in ``--quick`` on a real redis-server.

The peers' quick run needs their venvs (package registry): tests/backends/test_bench_peers_quick.py,
marked ``peers``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, ModuleType]]:
    """The bench modules, imported as the scripts import each other (bench/ and bench/peers/ on the path)."""
    sys.path[:0] = [str(BENCH), str(BENCH / "peers")]
    try:
        import _adapter
        import _harness
        import bench_async
        import fifo_record
        import peer_envs

        yield {
            "adapter": _adapter,
            "harness": _harness,
            "async": bench_async,
            "record": fifo_record,
            "envs": peer_envs,
        }
    finally:
        del sys.path[:2]


def test_efficiency_is_the_ideal_time_over_the_wall_time(bench: dict[str, ModuleType]) -> None:
    """ideal = jobs x 0.05 s / concurrency; efficiency, rate and CPU per job follow from the wall time."""
    ba = bench["async"]
    assert ba.ideal_seconds(10_000, 500) == pytest.approx(1.0)
    assert ba.ideal_seconds(10_000, 1000) == pytest.approx(0.5)
    got = ba.figures(10_000, 500, 50, wall=1.25, cpu=2.0, enqueue=0.3, twice=3)
    assert got["efficiency"] == pytest.approx(80.0)
    assert got["rate"] == pytest.approx(8000.0)
    assert got["worker_cpu_ms"] == pytest.approx(0.2)
    assert got["wall_s"] == 1.25
    assert got["enqueue_s"] == 0.3
    assert got["twice"] == 3.0
    assert set(got) == {key for key, *_ in ba.ASYNC_METRICS}


def summary_of(bench: dict[str, ModuleType]) -> dict[str, dict[str, dict[str, float | list[float]]]]:
    ba = bench["async"]
    runs = {
        "floor": [ba.figures(1000, 100, 50, wall=0.55, cpu=0.1, enqueue=0.01, twice=0)],
        "redis-streams": [
            ba.figures(1000, 100, 50, wall=1.0, cpu=0.2, enqueue=0.05, twice=0),
            ba.figures(1000, 100, 50, wall=0.6, cpu=0.2, enqueue=0.05, twice=0),
            ba.figures(1000, 100, 50, wall=0.8, cpu=0.2, enqueue=0.05, twice=0),
        ],
        "saq": [
            ba.figures(1000, 100, 50, wall=2.2, cpu=1.0, enqueue=0.5, twice=3),
            ba.figures(1000, 100, 50, wall=2.2, cpu=1.0, enqueue=0.5, twice=0),
            ba.figures(1000, 100, 50, wall=2.2, cpu=1.0, enqueue=0.5, twice=2),
        ],
        "arq": [ba.figures(1000, 100, 50, wall=1.1, cpu=1.0, enqueue=0.4, twice=0)],
    }
    summary: dict[str, dict[str, dict[str, float | list[float]]]] = bench["harness"].summarize(
        runs, metrics=ba.ASYNC_METRICS
    )
    return summary


def test_the_table_has_a_row_per_system_the_floor_first_then_by_wall(bench: dict[str, ModuleType]) -> None:
    """Medians of the repetitions, ratios to the floor on wall, jobs/s and CPU, every doubled job counted."""
    ba = bench["async"]
    summary = summary_of(bench)
    assert summary["redis-streams"]["wall_s"]["median"] == 0.8
    assert summary["redis-streams"]["wall_s"]["ratio"] == pytest.approx(0.8 / 0.55)
    assert "ratio" not in summary["saq"]["twice"]  # the floor ran nothing twice: no ratio to 0
    md = ba.markdown(
        summary, ["floor", "redis-streams", "arq", "saq"], {"saq": "1 process, concurrency = 100"}
    )
    lines = md.splitlines()
    head = (
        "| system (layout) | wall | efficiency | jobs/s | worker CPU/job | enqueue | ran twice (all runs) |"
    )
    assert lines[0] == head
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "floor",
        "redis-streams",
        "arq",
        "saq (1 process, concurrency = 100)",
    ]
    assert lines[2].split("|")[2].strip() == "0.55 s"  # the floor has no ratio to itself
    assert lines[3].split("|")[2].strip() == "0.80 s (1.45)"
    assert lines[3].split("|")[3].strip() == "62.5%"
    assert lines[5].split("|")[7].strip() == "5"  # every run's doubles, not their median (2)
    text = bench["harness"].render(summary, ["floor", "saq"], catalog=ba.ASYNC_METRICS)
    assert "efficiency (ideal / wall)" in text
    assert "jobs run twice" in text


def test_jobchain_is_compared_with_the_best_peer_by_wall(bench: dict[str, ModuleType]) -> None:
    ba = bench["async"]
    summary = summary_of(bench)
    assert ba.versus(summary, "redis-streams", ["arq", "saq", "taskiq"]) == (
        "redis-streams: ahead of every peer; 1.38x faster than arq, the best of them"
    )
    summary["redis-streams"]["wall_s"]["median"] = 2.2
    assert ba.versus(summary, "redis-streams", ["arq", "saq"]) == (
        "redis-streams: behind arq by 2.00x on wall (2.20 s vs 1.10 s)"
    )
    assert ba.versus(summary, "redis-lists", ["arq"]) == ""  # no figures: no line


def test_each_peer_runs_one_worker_process_at_the_asked_concurrency(bench: dict[str, ModuleType]) -> None:
    ba, envs = bench["async"], bench["envs"]
    peers = ba.async_peers(750)
    assert set(peers) == {"arq", "saq", "taskiq"}
    for spec in peers.values():
        env = envs.ENVS[spec.env]
        argvs = spec.workers(env, "redis://127.0.0.1:1/0", "q")
        assert len(argvs) == 1, spec.name  # one root process
        assert dict(spec.environ)["BENCH_CONCURRENCY"] == "750"
        assert "750" in spec.layout
        assert "async def nap(" in spec.adapter.read_text()  # the adapter declares the asyncio job
    assert argvs_of(peers["saq"], envs)[-3:] == ["--workers", "1", "-q"]
    taskiq = argvs_of(peers["taskiq"], envs)
    assert taskiq[taskiq.index("-w") + 1] == "1"
    assert taskiq[taskiq.index("--max-async-tasks") + 1] == "750"


def argvs_of(spec: object, envs: ModuleType) -> list[str]:
    argv: list[str] = spec.workers(envs.ENVS[spec.env], "redis://127.0.0.1:1/0", "q")[0]  # type: ignore[attr-defined]
    return argv


class FakeAsyncPeer:
    bulk_mode = "fake"

    def __init__(self) -> None:
        self.naps: list[tuple[int, int]] = []
        self.in_flight = self.most = 0

    async def open(self) -> None:
        pass

    async def nap(self, i: int, ms: int) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0)
        self.naps.append((i, ms))
        self.in_flight -= 1

    async def close(self) -> None:
        pass


def test_the_naps_command_submits_every_job_with_at_most_50_in_flight(
    bench: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = bench["adapter"]
    fake = FakeAsyncPeer()
    adapter.serve(adapter.SyncOverAsync(fake), ["naps 10 120 50\n", "quit\n"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ready fake"
    assert out[1].startswith("ok ")
    assert float(out[1][3:]) >= 0  # the adapter's own seconds
    assert sorted(fake.naps) == [(i, 50) for i in range(10, 130)]
    assert fake.most == adapter.GATHER


def test_a_peer_without_asyncio_jobs_answers_naps_with_one_error_line(
    bench: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    class SyncPeer:
        bulk_mode = "none"

        def close(self) -> None:
            pass

    bench["adapter"].serve(SyncPeer(), ["naps 0 10 50\n"])
    assert capsys.readouterr().out.splitlines()[1] == "err ValueError: this peer has no asyncio jobs (naps)"


def test_a_nap_records_its_start_then_its_end(
    bench: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fr = bench["record"]
    path = tmp_path / "records"
    path.touch()
    monkeypatch.setenv("JOBCHAIN_FLOOR_FIFO", str(path))
    monkeypatch.setattr(fr, "_fd", [])
    asyncio.run(fr.nap(7, 1))
    data = path.read_bytes()
    assert [fr.decode(data[i : i + 16]) for i in range(0, len(data), 16)] == [("y", 7), ("z", 7)]


def test_marks_of_any_kind_and_the_census_of_distinct_ids(
    bench: dict[str, ModuleType], tmp_path: Path
) -> None:
    """A mark is taken at the first start and at the last distinct end; a job ended twice is counted once
    and reported, one never ended is reported lost."""
    fr, harness = bench["record"], bench["harness"]
    tally = harness.Tally(str(tmp_path / "fifo"))
    tally.reset(marks=(("y", 1), ("z", 3)))
    tally.track([os.getpid()])
    fd = os.open(tally.path, os.O_WRONLY)
    try:
        for kind, i in [("y", 0), ("y", 1), ("z", 0), ("z", 0), ("y", 2), ("z", 2), ("z", 1), ("z", 9)]:
            os.write(fd, fr.encode(kind, i))
        tally.wait(lambda: tally.total == 8, "records")
    finally:
        os.close(fd)
    assert set(tally.at) == {("y", 1), ("z", 3)}  # ("z", 3): the third distinct id, not the third record
    assert tally.at["y", 1][0] <= tally.at["z", 3][0]
    assert tally.census("z", 4) == ([3], [0], [9])


def no_async_worker() -> bool:
    from jobchain.cli.worker_cmd import worker

    return not any("--async-concurrency" in param.opts for param in worker.params)


def run_quick(systems: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_async.py"),
            "--quick",
            "--systems",
            systems,
            "--redis-url",
            redis_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def rows_of(stdout: str) -> dict[str, str]:
    return {
        line.split("|")[1].strip().split(" ")[0]: line
        for line in stdout.splitlines()
        if line.startswith("| ")
    }


def test_quick_floor_run_ends_every_job_and_prints_its_row(redis_server_url: str) -> None:
    proc = run_quick("floor", redis_server_url)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " - |" not in rows_of(proc.stdout)["floor"]
    assert "verified: every one of the 500 jobs ended" in proc.stdout


@pytest.mark.skipif(no_async_worker(), reason="this jobchain's worker has no --async-concurrency (issue 17)")
def test_quick_jobchain_run_ends_every_job_once_on_both_layouts(redis_server_url: str) -> None:
    """Both layouts drain 500 asyncio jobs on one worker process: every figure in their row, none twice."""
    proc = run_quick("redis-lists,redis-streams", redis_server_url)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = rows_of(proc.stdout)
    for name in ("redis-lists", "redis-streams"):
        assert " - |" not in rows[name], rows[name]
        assert rows[name].rstrip().endswith("| 0 |"), rows[name]  # ran twice: none
    assert "jobs run twice, all repetitions: none" in proc.stdout
