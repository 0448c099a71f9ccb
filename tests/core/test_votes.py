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


def test_wilson_interval_narrows_with_more_votes():
    small, large = Tally("r", 7, 3, 0), Tally("r", 70, 30, 0)
    assert small.win_rate == large.win_rate == 0.7
    assert (large.interval[1] - large.interval[0]) < (small.interval[1] - small.interval[0])
    assert math.isnan(Tally("r", 0, 0, 0).win_rate)
