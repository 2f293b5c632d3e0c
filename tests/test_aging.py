"""Priority aging: the static order key, the starvation bound and the memory backend's order.

Times are whole seconds and aging intervals powers of two, so every sum and
quotient below is exact in floating point and ties are real ties.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobchain import Job, ManualClock
from jobchain.aging import effective_priority, order_key
from jobchain.memory import MemoryBackend
from jobchain.model import ErrorInfo, Retried

START = 1_700_000_000.0
intervals = st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
priorities = st.integers(-5, 5)
offsets = st.integers(0, 600)


def job(index: int, priority: int, enqueued_at: float, queue: str = "default") -> Job:
    return Job(id=f"job-{index:04d}", task="t", priority=priority, enqueued_at=enqueued_at, queue=queue)


job_specs = st.lists(st.tuples(priorities, offsets), min_size=1, max_size=30)


@given(job_specs, intervals, st.integers(0, 10_000))
def test_order_key_ranks_like_effective_priority_at_any_time(
    specs: list[tuple[int, int]], interval: float, later: int
) -> None:
    """Sorting by the static key gives the effective-priority ranking at any moment t."""
    jobs = [job(i, p, START + off) for i, (p, off) in enumerate(specs)]
    now = START + max(off for _, off in specs) + later
    by_key = sorted(jobs, key=lambda j: (order_key(j, interval), j.id))
    by_effective = sorted(jobs, key=lambda j: (-effective_priority(j, now, interval), j.id))
    assert by_key == by_effective


def test_effective_priority_grows_with_waiting() -> None:
    """A job gains one priority level per aging interval it waits."""
    waiting = job(0, priority=2, enqueued_at=100.0)
    assert effective_priority(waiting, now=100.0, interval=10.0) == 2.0
    assert effective_priority(waiting, now=130.0, interval=10.0) == 5.0


@given(priorities, st.integers(1, 10), intervals, st.integers(0, 1000))
def test_waiting_job_outranks_newer_higher_priority_after_the_bound(
    low: int, gap: int, interval: float, late: int
) -> None:
    """A job that waited (p_high - p_low) * interval ranks ahead of any p_high job enqueued since."""
    high = low + gap
    old = job(0, low, START)
    newer = job(1, high, START + gap * interval + late)
    assert order_key(old, interval) <= order_key(newer, interval)


@given(priorities, st.integers(1, 10), intervals)
def test_starvation_bound_is_tight(low: int, gap: int, interval: float) -> None:
    """A p_high job enqueued just before the bound is reached still ranks ahead of the waiting job."""
    high = low + gap
    old = job(0, low, START)
    early = job(1, high, START + gap * interval - 0.25)
    assert order_key(early, interval) < order_key(old, interval)


# --- the memory backend ----------------------------------------------------------------


def reserve_all(backend: MemoryBackend, queues: tuple[str, ...] = ("default",)) -> list[str]:
    out: list[str] = []
    while batch := backend.reserve(queues, limit=3, lease=60.0, worker="w"):
        out.extend(d.job.id for d in batch)
    return out


@given(
    st.lists(st.tuples(priorities, offsets, st.sampled_from(["a", "b"])), min_size=1, max_size=25),
    intervals,
    st.integers(0, 5000),
)
def test_memory_backend_reserves_in_exact_aging_order(
    specs: list[tuple[int, int, str]], interval: float, later: int
) -> None:
    """Reservation across queues follows effective priority at reserve time, FIFO among equals."""
    clock = ManualClock(START)
    backend = MemoryBackend(clock=clock, aging_interval=interval)
    jobs = [job(i, p, START + off, queue) for i, (p, off, queue) in enumerate(specs)]
    backend.enqueue(jobs)
    now = clock.advance(max(off for _, off, _ in specs) + later)
    expected = sorted(jobs, key=lambda j: (-effective_priority(j, now, interval), j.id))
    assert reserve_all(backend, ("a", "b")) == [j.id for j in expected]


def test_memory_backend_is_fifo_among_equal_effective_priority() -> None:
    """Jobs with the same effective priority come out in the order they were submitted."""
    clock = ManualClock(START)
    backend = MemoryBackend(clock=clock)
    backend.enqueue([job(i, 0, START) for i in (3, 1, 2)])
    backend.enqueue([job(0, 0, START)])
    assert reserve_all(backend) == ["job-0003", "job-0001", "job-0002", "job-0000"]


def test_memory_backend_serves_starving_job_first_at_the_bound() -> None:
    """A priority-0 job that waited 2 intervals is served before a priority-2 job submitted then."""
    clock = ManualClock(START)
    backend = MemoryBackend(clock=clock, aging_interval=10.0)
    backend.enqueue([job(0, 0, START)])
    clock.advance(20.0)
    backend.enqueue([job(1, 2, START + 20.0), job(2, 3, START + 20.0)])
    assert reserve_all(backend) == ["job-0002", "job-0000", "job-0001"]


def test_retried_job_outranks_newer_arrivals_of_same_priority() -> None:
    """A retried job keeps its enqueue time, so it is served before jobs submitted while it waited."""
    clock = ManualClock(START)
    backend = MemoryBackend(clock=clock)
    backend.enqueue([job(0, 0, START)])
    (delivery,) = backend.reserve(["default"], limit=1, lease=60.0, worker="w")
    error = ErrorInfo(type="RuntimeError", message="boom")
    backend.settle([Retried(delivery=delivery, error=error, delay=5.0)])
    clock.advance(1.0)
    backend.enqueue([job(1, 0, START + 1.0)])
    clock.advance(5.0)
    backend.enqueue([job(2, 0, START + 6.0)])
    order = backend.reserve(["default"], limit=3, lease=60.0, worker="w")
    assert [d.job.id for d in order] == ["job-0000", "job-0001", "job-0002"]
    assert order[0].job.attempt == 2
