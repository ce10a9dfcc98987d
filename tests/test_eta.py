"""Start estimates: the batcher's rules played forward on measured step times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imaginebot.eta import StepTimes, Work, estimate_starts, joins_batch, play_forward

SQUARE, WIDE = (8, 8), (8, 16)


def test_one_job_at_a_time_waits_for_everything_ahead() -> None:
    running = [[Work(SQUARE, 8, steps_left=3)]]
    queued = [Work(SQUARE, 8, 10), Work(SQUARE, 8, 10)]
    starts = estimate_starts(running, queued, capacities=[8], line=(0.0, 0.1))  # 0.8 s a step
    assert starts == pytest.approx([3 * 0.8, 13 * 0.8])


def test_jobs_that_fit_start_at_the_next_step() -> None:
    running = [[Work(SQUARE, 8, steps_left=3)]]
    queued = [Work(SQUARE, 8, 10), Work(SQUARE, 8, 10), Work(SQUARE, 8, 10)]
    starts = estimate_starts(running, queued, capacities=[24], line=(0.5, 0.0))
    # two fit beside the running one at once; the third when it leaves after 3 steps
    assert starts == pytest.approx([0.0, 0.0, 1.5])


def test_groups_take_turns_and_workers_run_side_by_side() -> None:
    queued = [Work(SQUARE, 1, 2), Work(WIDE, 1, 2), Work(SQUARE, 1, 2)]
    one_worker = estimate_starts([[]], queued, capacities=[1], line=(1.0, 0.0))
    assert one_worker == pytest.approx([0.0, 0.0, 3.0])  # turns: square, wide, square; then the next square
    squares = [Work(SQUARE, 1, 2)] * 3
    two_workers = estimate_starts([[], []], squares, capacities=[1, 1], line=(1.0, 0.0))
    assert two_workers == pytest.approx([0.0, 0.0, 2.0])  # one on each, the third after two steps


def test_a_job_waits_for_a_worker_that_holds_its_model() -> None:
    """Worker 0 holds a, worker 1 holds b: two b jobs queue behind each other on worker 1 while worker 0
    takes the a job behind them at once."""
    queued = [Work(SQUARE, 1, 2, "b"), Work(SQUARE, 1, 2, "b"), Work(SQUARE, 1, 2, "a")]
    models = [frozenset({"a"}), frozenset({"b"})]
    starts = estimate_starts([[], []], queued, capacities=[1, 1], line=(1.0, 0.0), models=models)
    assert starts == pytest.approx([0.0, 2.0, 0.0])
    anywhere = estimate_starts([[], []], queued, capacities=[1, 1], line=(1.0, 0.0))
    assert anywhere == pytest.approx([0.0, 0.0, 2.0])


def test_job_overhead_is_counted_for_each_joining_job() -> None:
    starts = estimate_starts(
        [[]], [Work(SQUARE, 1, 1)] * 2, capacities=[1], line=(1.0, 0.0), job_overhead=0.5
    )
    assert starts == pytest.approx([0.0, 1.5])


@given(
    costs=st.lists(st.integers(1, 8), min_size=1, max_size=12),
    steps=st.integers(1, 20),
    capacity=st.integers(1, 24),
)
def test_in_one_group_the_queue_order_is_the_start_order(costs: list[int], steps: int, capacity: int) -> None:
    queued = [Work(SQUARE, cost, steps) for cost in costs]
    starts = estimate_starts([[]], queued, capacities=[capacity], line=(0.2, 0.05))
    assert len(starts) == len(queued) and starts[0] == 0.0
    assert starts == sorted(starts)


def test_step_times_fit_a_line_in_the_cost() -> None:
    times = StepTimes()
    assert times.line() is None
    for cost in (2, 4, 8, 16):
        times.add_call(cost, 0.1 + 0.02 * cost)
    fixed, per_cost = times.line()  # type: ignore[misc]
    assert fixed == pytest.approx(0.1) and per_cost == pytest.approx(0.02)
    one_cost = StepTimes()
    one_cost.add_call(8, 0.4)
    assert one_cost.line() == pytest.approx((0.0, 0.05))  # proportional from one point


def test_the_admission_rule() -> None:
    assert joins_batch(load=0, cost=100, capacity=8)  # alone, whatever its size
    assert joins_batch(load=4, cost=4, capacity=8) and not joins_batch(load=6, cost=4, capacity=8)


def test_played_to_the_end_each_job_gets_its_end_too() -> None:
    queued = [Work(SQUARE, 1, 2)] * 2
    alone = play_forward([[]], queued, capacities=[1], line=(1.0, 0.0), to_the_end=True)
    assert [(f.start, f.end) for f in alone] == [(0.0, 2.0), (2.0, 4.0)]
    two = play_forward([[], []], queued, capacities=[1, 1], line=(1.0, 0.0), to_the_end=True)
    assert [(f.start, f.end) for f in two] == [(0.0, 2.0), (0.0, 2.0)]
    batched = play_forward([[]], queued, capacities=[2], line=(1.0, 0.5), to_the_end=True)
    assert [(f.start, f.end) for f in batched] == [(0.0, 4.0), (0.0, 4.0)]  # two steps of 1 + 0.5 × 2


def test_jobs_spread_over_workers_in_the_forecast_as_in_the_executor() -> None:
    queued = [Work(SQUARE, 1, 2)] * 4
    spread = play_forward([[], []], queued, capacities=[100, 100], line=(1.0, 0.5), to_the_end=True)
    # w0 takes job 0, leaves job 1 to the idle w1, which takes jobs 1 and 2; w0 then takes job 3
    assert [f.end for f in spread] == [3.5, 4.0, 4.0, 5.0]
    one = play_forward([[]], queued, capacities=[100], line=(1.0, 0.5), to_the_end=True)
    assert [f.end for f in one] == [6.0] * 4  # all four in one batch: two steps of 1 + 0.5 × 4
