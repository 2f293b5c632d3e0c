"""The offline parts of bench/bench_peers.py: records, the adapters' protocol, the venv cache, the tables.

The peer benchmark itself needs the package registry and minutes: its quick
run is tests/backends/test_bench_peers_quick.py, marked ``peers``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, ModuleType]]:
    """The bench modules, imported as the scripts import each other (bench/ and bench/peers/ on the path)."""
    sys.path[:0] = [str(BENCH), str(BENCH / "peers")]
    try:
        import _adapter
        import _harness
        import bench_peers
        import fifo_record
        import peer_envs

        yield {
            "adapter": _adapter,
            "harness": _harness,
            "peers": bench_peers,
            "record": fifo_record,
            "envs": peer_envs,
        }
    finally:
        del sys.path[:2]


def test_a_record_is_16_bytes_and_reads_back(bench: dict[str, ModuleType]) -> None:
    fr = bench["record"]
    for kind in fr.KINDS:
        data = fr.encode(kind, 12345)
        assert len(data) == fr.RECORD == 16
        assert fr.decode(data) == (kind, 12345)
    with pytest.raises(ValueError):
        fr.encode("nn", 1)
    with pytest.raises(ValueError):
        fr.encode("n", -1)
    with pytest.raises(ValueError):
        fr.decode(b"n123\n")


def test_tasks_write_their_records_to_the_fifo(
    bench: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task the adapters wrap writes one record of its kind (a plain file stands in for the FIFO)."""
    fr = bench["record"]
    path = tmp_path / "records"
    path.touch()
    monkeypatch.setenv("JOBCHAIN_FLOOR_FIFO", str(path))
    monkeypatch.setattr(fr, "_fd", [])
    fr.noop(1)
    assert fr.step1(2) == 2
    assert fr.step2(3) == 3
    assert fr.step3(4) == 4
    fr.sleeper(5, 1)
    data = path.read_bytes()
    records = [fr.decode(data[i : i + 16]) for i in range(0, len(data), 16)]
    assert records == [("n", 1), ("a", 2), ("b", 3), ("c", 4), ("z", 5)]


class FakePeer:
    bulk_mode = "fake bulk"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.closed = False

    def enqueue(self, i: int) -> None:
        self.calls.append(("enqueue", i, 0))

    def bulk(self, start: int, count: int) -> None:
        self.calls.append(("bulk", start, count))

    def chain(self, i: int) -> None:
        if i < 0:
            raise RuntimeError("no such\nchain")
        self.calls.append(("chain", i, 0))

    def sleep(self, i: int, ms: int) -> None:
        self.calls.append(("sleep", i, ms))

    def close(self) -> None:
        self.closed = True


def test_the_adapter_protocol_runs_each_command_and_answers_one_line(
    bench: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    peer = FakePeer()
    lines = ["enqueue 3 2\n", "bulk 5 4\n", "\n", "chain 7\n", "sleeps 10 15,60\n", "chain -1\n", "bogus\n"]
    bench["adapter"].serve(peer, [*lines, "quit\n", "chain 99\n"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ready fake bulk"
    assert out[1].startswith("ok ")
    assert float(out[1][3:]) >= 0  # the enqueue's own seconds
    assert out[2].startswith("ok ")
    assert float(out[2][3:]) >= 0
    assert out[3:5] == ["ok", "ok"]
    assert out[5] == "err RuntimeError: no such chain"  # one line, whatever the message
    assert out[6].startswith("err ValueError: unknown command")
    assert len(out) == 7  # nothing after quit
    assert peer.calls == [
        ("enqueue", 3, 0),
        ("enqueue", 4, 0),
        ("bulk", 5, 4),
        ("chain", 7, 0),
        ("sleep", 10, 15),
        ("sleep", 11, 60),
    ]
    assert peer.closed


def test_a_venv_is_reused_only_with_the_same_pins(
    bench: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs = bench["envs"]
    monkeypatch.setattr(envs, "CACHE", tmp_path)
    env = envs.PeerEnv("demo", "1.0", ("demo==1.0",))
    assert env.path == tmp_path / "demo-1.0"
    assert not env.ready()
    env.path.mkdir()
    (env.path / ".jobchain-bench-ok").write_text(env.pins + "\n")
    assert env.ready()
    assert {"demo==1.0", "hiredis==3.5.0", "redis==8.1.0"} <= set(env.pins.split())
    changed = envs.PeerEnv("demo", "1.0", ("demo==1.0", "extra==2"))
    assert not changed.ready()  # a changed pin makes the venv again


def test_every_peer_has_a_pinned_venv_an_adapter_and_8_way_workers(bench: dict[str, ModuleType]) -> None:
    peers, envs = bench["peers"], bench["envs"]
    assert set(peers.PEERS) >= {"huey", "dramatiq", "rq", "taskiq", "arq", "saq"}
    for spec in peers.PEERS.values():
        env = envs.ENVS[spec.env]
        assert all("==" in r for r in (*env.requirements, env.redis, *envs.COMMON))
        assert spec.adapter.exists(), spec.adapter
        argvs = spec.workers(env, "redis://127.0.0.1:1/0", "q")
        assert argvs
        assert all(str(env.path) in argv[0] for argv in argvs)


def summary_of(bench: dict[str, ModuleType]) -> dict[str, dict[str, dict[str, float | list[float]]]]:
    runs = {
        "floor": [
            {"drain": 100.0, "chain_p50_ms": 2.0},
            {"drain": 300.0, "chain_p50_ms": 1.0},
            {"drain": 200.0},
        ],
        "huey": [{"drain": 50.0, "chain_p50_ms": 4.0, "sleep_eff": 95.0}],
        "rq": [{"drain": 10.0, "chain_p50_ms": 30.0}],
    }
    summary: dict[str, dict[str, dict[str, float | list[float]]]] = bench["harness"].summarize(runs)
    return summary


def test_medians_and_ratios_to_the_floor(bench: dict[str, ModuleType]) -> None:
    summary = summary_of(bench)
    assert summary["floor"]["drain"]["median"] == 200.0
    assert summary["floor"]["drain"]["runs"] == [100.0, 300.0, 200.0]
    assert summary["floor"]["drain"]["ratio"] == 1.0
    assert summary["huey"]["drain"]["ratio"] == 0.25
    assert summary["floor"]["chain_p50_ms"]["median"] == 1.5  # only the runs that have the figure
    assert summary["rq"]["chain_p50_ms"]["ratio"] == 20.0
    assert "ratio" not in summary["huey"]["sleep_eff"]  # the floor has no figure to divide by


def test_a_floor_figure_of_zero_gives_no_ratio(bench: dict[str, ModuleType]) -> None:
    """A tiny run can measure the floor's worker CPU as 0 (below the clock's tick): no division by it."""
    runs = {"floor": [{"worker_cpu_ms": 0.0}], "huey": [{"worker_cpu_ms": 0.1}]}
    summary = bench["harness"].summarize(runs)
    assert "ratio" not in summary["huey"]["worker_cpu_ms"]
    assert "-" in bench["harness"].render(summary, ["floor", "huey"])
    assert "bulk" not in summary["huey"]


def test_the_tables_show_every_system_with_its_ratio(bench: dict[str, ModuleType]) -> None:
    summary = summary_of(bench)
    text = bench["harness"].render(summary, ["floor", "huey", "rq"])
    rows = {tuple(line.split()[-4:]) for line in text.splitlines()}
    assert ("huey", "50", "jobs/s", "0.25x") in rows
    assert ("rq", "30.00", "ms", "20.00x") in rows
    md = bench["peers"].markdown(summary, ["rq", "floor", "huey"], {"huey": "8 process workers"})
    lines = md.splitlines()
    assert lines[0].startswith("| system (8-way) | enqueue 1-by-1 | bulk enqueue | drain")
    names = [line.split("|")[1].strip() for line in lines[2:]]
    assert names == ["floor", "huey (8 process workers)", "rq"]  # the floor first, then by drain
    assert "| 50 jobs/s (0.25) |" in lines[3]
    assert "| 95.0% |" in lines[3]  # an efficiency, not a ratio
    assert lines[4].count("| - ") == 6  # figures rq did not record


def test_the_plot_is_a_png(bench: dict[str, ModuleType], tmp_path: Path) -> None:
    path = tmp_path / "img" / "peers.png"
    bench["peers"].plot(summary_of(bench), ["floor", "huey", "rq"], path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
