"""One progress account over both stages, from status.json and metric records (no training needed)."""

import pytest

from poetwb.core import progress
from poetwb.core.config import describe_sampling


def _records(stage: int, steps: range, seconds_per_step: float, start: float = 0.0) -> list[dict]:
    return [{"stage": stage, "step": s, "loss": 3.0 - s / 100, "tokens_per_s": 80.0,
             "elapsed_s": start + s * seconds_per_step} for s in steps]


def test_steps_and_eta_cover_both_stages():
    status = {"state": "running", "stage": 1, "step": 10, "total_steps": 20, "plan": {"1": 20, "2": 30},
              "phase": "stage 1: training"}
    p = progress.summarize(status, _records(1, range(1, 11), 2.0))
    assert (p.done, p.total) == (10, 50)
    assert p.eta_s == pytest.approx(40 * 2.0)
    assert p.phase == "stage 1: training" and p.loss == pytest.approx(2.9)
    # between the stages: stage 2's counter is at 0, the overall count does not go back
    between = {**status, "stage": 2, "step": 0, "total_steps": 30, "phase": "preparing stage 2: tokenising 12 pairs"}
    q = progress.summarize(between, _records(1, range(1, 21), 2.0))
    assert (q.done, q.total) == (20, 50) and q.phase.startswith("preparing stage 2")
    assert q.eta_s == pytest.approx(30 * 2.0)
    done = progress.summarize({**between, "state": "finished"}, [])
    assert done.done == done.total == 50 and done.phase == ""


def test_a_resumed_job_restarting_its_clock_does_not_spoil_the_speed():
    records = _records(1, range(1, 6), 3.0, start=100.0) + _records(1, range(6, 11), 3.0, start=-15.0)
    assert progress.seconds_per_step(records, 1) == pytest.approx(3.0)


def test_durations_and_sampling_read_as_words():
    assert progress.format_duration(42) == "0:42"
    assert progress.format_duration(3723) == "1:02:03"
    assert describe_sampling({"top_p": 0.95, "temperature": 0.7, "seed": 3}) == "temperature 0.7 · top-p 0.95 · seed 3"
