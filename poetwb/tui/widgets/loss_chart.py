"""Loss curves in the terminal (textual-plotext): train and val loss for both stages against a global step axis."""

from __future__ import annotations

from typing import Any

from textual_plotext import PlotextPlot


class LossChart(PlotextPlot):
    """Keeps the run's metric records and redraws from them; stage 2's steps continue after stage 1's."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.records = []
        self.redraw()

    def add(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)
        self.redraw()

    @property
    def points(self) -> int:
        return sum(1 for r in self.records if "loss" in r or "eval_loss" in r)

    def series(self) -> dict[str, tuple[list[float], list[float]]]:
        offset = {1: 0, 2: max((r["step"] for r in self.records if r.get("stage") == 1), default=0)}
        out: dict[str, tuple[list[float], list[float]]] = {}
        for r in self.records:
            stage = r.get("stage", 1)
            for key, name in (("loss", "train"), ("eval_loss", "val")):
                if key in r:
                    xs, ys = out.setdefault(f"stage {stage} {name}", ([], []))
                    xs.append(r["step"] + offset.get(stage, 0))
                    ys.append(float(r[key]))
        return out

    def redraw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss")
        plt.xlabel("step (stage 2 continues after stage 1)")
        for name, (xs, ys) in self.series().items():
            plt.plot(xs, ys, label=name, marker="braille" if "train" in name else "dot")
        self.refresh()
