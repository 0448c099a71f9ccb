"""Widgets and helpers without a running app: the loss chart's axes and series, the Data preview's clipping."""

from __future__ import annotations

from poetwb.tui.panes.data import clip_lines
from poetwb.tui.panes.poems import adapter_label
from poetwb.tui.panes.train import plain_number
from poetwb.tui.widgets.loss_chart import LossChart, axis_range


def test_one_point_still_gets_a_readable_axis():
    lo, hi = axis_range([4.2])
    assert lo < 4.2 < hi and hi - lo > 0.05
    lo, hi = axis_range([3.0, 5.0])
    assert lo < 3.0 and hi > 5.0


def test_stage_two_continues_the_step_axis_and_the_axis_spans_the_planned_run():
    chart = LossChart()
    chart.records = [
        {"stage": 1, "step": 0, "total_steps": 12, "eval_loss": 4.9},
        {"stage": 1, "step": 12, "total_steps": 12, "loss": 4.5},
        {"stage": 2, "step": 3, "total_steps": 10, "loss": 4.3},
    ]
    series = chart.series()
    assert series["stage 2 train"] == ([15], [4.3])
    assert series["stage 1 val"] == ([0], [4.9])
    chart.planned = 22
    assert chart.x_limit() == 22


def test_preview_cuts_poems_at_line_ends_not_mid_word():
    poem = "\n".join(f"line number {i} of a sonnet that goes on" for i in range(14))
    clipped = clip_lines(poem, 100)
    kept = clipped.splitlines()[:-1]
    assert kept and all(line in poem.splitlines() for line in kept)
    assert clipped.endswith(f"… ({14 - len(kept)} more lines)")
    assert clip_lines("short\npoem", 100) == "short\npoem"
    long_line = "word " * 50
    assert clip_lines(long_line, 30).endswith("word …")


def test_numbers_and_adapters_read_as_people_write_them(tmp_path):
    assert plain_number(5e-05) == "0.00005" and plain_number(0.0003) == "0.0003" and plain_number(12) == "12"
    assert adapter_label("") == "base model"
    (tmp_path / "r1" / "adapters" / "stage2").mkdir(parents=True)
    (tmp_path / "r1" / "config.toml").write_text("")
    assert adapter_label(str(tmp_path / "r1" / "adapters" / "stage2")) == "run r1 · stage 2"
    assert adapter_label("/gone/runs/r2/adapters/stage1") == "run r2 · stage 1 (run deleted)"


async def test_a_slider_with_a_long_label_still_draws_its_bar_on_its_one_line():
    """'candidates per line' is longer than the label column: the bar used to wrap onto a hidden second line."""
    from textual.app import App

    from poetwb.tui.widgets.slider import Slider

    class One(App):
        CSS = "Slider { width: 40; }"

        def compose(self):
            yield Slider("candidates per line", 1, 16, 1, 8, integer=True)

    async with One().run_test(size=(60, 5)) as pilot:
        slider = pilot.app.query_one(Slider)
        line = slider.render().plain
        assert line.startswith("candidates per line") and "●" in line and len(line) == 40
        await pilot.click(Slider, offset=(39, 0))  # the bar's right end is the maximum
        assert slider.value == 16
