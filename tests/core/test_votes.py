import math

from poetwb.core.votes import Tally, Votes


def test_votes_survive_a_restart_and_tally_by_side(poet_home):
    v = Votes()
    v.add("run1", "The sea", "a", "b", tuned_side="A", choice="A")   # tuned wins
    v.add("run1", "The sea", "a", "b", tuned_side="B", choice="A")   # base wins
    v.add("run1", "The sea", "a", "b", tuned_side="B", choice="B")   # tuned wins
    v.add("run1", "The sea", "a", "b", tuned_side="A", choice="tie")
    v.add("run2", "x", "a", "b", tuned_side="A", choice="B")
    v.close()
    again = Votes()
    t = again.tally("run1")
    assert (t.tuned, t.base, t.ties, t.votes) == (2, 1, 1, 4)
    assert t.win_rate == 2.5 / 4
    lo, hi = t.interval
    assert 0 < lo < t.win_rate < hi < 1
    assert [x.run for x in again.tallies()] == ["run1", "run2"]


def test_a_runs_stages_are_tallied_apart(poet_home):
    v = Votes()
    v.add("run1/stage1", "The sea", "a", "b", tuned_side="A", choice="B")  # base beats stage 1
    v.add("run1/stage2", "The sea", "a", "b", tuned_side="A", choice="A")  # stage 2 beats base
    v.add("run10/stage2", "The sea", "a", "b", tuned_side="A", choice="A")  # another run, a longer id
    v.add("run1", "The sea", "a", "b", tuned_side="B", choice="tie")  # cast before stages were kept
    v.add("run1/stage2 vs run2/stage1", "The sea", "a", "b", tuned_side="A", choice="A")  # not against the base
    assert [(t.run, t.tuned, t.base, t.ties) for t in v.of_run("run1")] == [
        ("run1", 0, 0, 1), ("run1/stage1", 0, 1, 0), ("run1/stage2", 1, 0, 0)]
    v.close()


def test_wilson_interval_narrows_with_more_votes():
    small, large = Tally("r", 7, 3, 0), Tally("r", 70, 30, 0)
    assert small.win_rate == large.win_rate == 0.7
    assert (large.interval[1] - large.interval[0]) < (small.interval[1] - small.interval[0])
    assert math.isnan(Tally("r", 0, 0, 0).win_rate)
