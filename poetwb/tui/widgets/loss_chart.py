"""Loss curves in the terminal (textual-plotext): train and val loss for both stages against one step axis.

Readable on purpose: the legend is a line of its own under the plot (plotext draws its legend over the curves),
the axes have a sensible range even with one point (plotext would collapse it), train loss is a line and val loss
a marker per evaluation (a dotted line of val points smeared into a row of dots), and a vertical rule marks where
stage 2 starts."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

COLORS = {"stage 1 train": "blue", "stage 1 val": "cyan", "stage 2 train": "magenta", "stage 2 val": "yellow"}
VAL_MARKER = "◆"


def axis_range(values: list[float]) -> tuple[float, float]:
    """A range around values with a margin, never empty (one point, or equal points, still get a span)."""
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, abs(hi) * 0.02, 0.01)
    return lo - pad, hi + pad


class LossChart(Vertical):
    """Keeps the run's metric records and redraws from them; stage 2's steps continue after stage 1's."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; }
    LossChart > PlotextPlot { height: 1fr; }
    LossChart > #loss-legend { height: 1; padding: 0 2; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.records: list[dict[str, Any]] = []
        self.planned = 0
        """Steps planned over both stages (from the run's status), so the x axis spans the whole run."""

    def compose(self) -> ComposeResult:
        yield PlotextPlot()
        yield Static("", id="loss-legend")

    def on_mount(self) -> None:
        self.redraw()

    def reset(self) -> None:
        self.records = []
        self.planned = 0
        self.redraw()

    def plan(self, total: int) -> None:
        if total != self.planned:
            self.planned = total
            self.redraw()

    def add(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)
        self.redraw()

    @property
    def points(self) -> int:
        return sum(1 for r in self.records if "loss" in r or "eval_loss" in r)

    def stage2_offset(self) -> int:
        """Stage 1's last step: stage 2's step 0 sits there on the shared axis."""
        return max((r.get("total_steps") or r["step"] for r in self.records if r.get("stage") == 1), default=0)

    def series(self) -> dict[str, tuple[list[float], list[float]]]:
        offset = {1: 0, 2: self.stage2_offset()}
        out: dict[str, tuple[list[float], list[float]]] = {}
        for r in self.records:
            stage = r.get("stage", 1)
            for key, name in (("loss", "train"), ("eval_loss", "val")):
                if key in r:
                    xs, ys = out.setdefault(f"stage {stage} {name}", ([], []))
                    xs.append(r["step"] + offset.get(stage, 0))
                    ys.append(float(r[key]))
        return out

    def x_limit(self) -> int:
        """The last step of the whole run as planned (so the axis does not jump), at least the last point's."""
        seen = max((x for xs, _ in self.series().values() for x in xs), default=0)
        return max(self.planned, seen, 1)

    def redraw(self) -> None:
        if not self.is_mounted:
            return
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("optimizer step (stage 2 continues after stage 1)")
        plt.ylabel("loss")
        series = self.series()
        limit = self.x_limit()
        plt.xlim(0, limit)
        plt.xticks(list(range(0, limit + 1, max(1, -(-limit // 6)))))  # whole steps, about six ticks
        ys_all = [y for _, ys in series.values() for y in ys]
        if ys_all:
            plt.ylim(*axis_range(ys_all))
        if any(name.startswith("stage 2") for name in series):
            plt.vline(self.stage2_offset(), "gray")
        for name, (xs, ys) in series.items():
            color = COLORS.get(name, "white")
            if name.endswith("train") and len(xs) > 1:
                plt.plot(xs, ys, marker="braille", color=color)
            else:
                plt.scatter(xs, ys, marker=VAL_MARKER if name.endswith("val") else "●", color=color)
        plot.refresh()
        legend = Text()
        for name in COLORS if series else []:
            if name in series:
                legend.append("━━ " if name.endswith("train") else f"{VAL_MARKER}  ", style=COLORS[name])
                legend.append(f"{name} loss   ")
        if not series:
            legend.append("no loss recorded yet", style="dim")
        self.query_one("#loss-legend", Static).update(legend)
