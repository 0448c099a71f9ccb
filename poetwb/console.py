"""Progress on the command line: one rich bar when the output is a terminal, plain lines when it is not (a log file,
a pipe, CI), so `poetwb train`, `poetwb eval` and the bundled model's first conversion tell the truth about what they
are doing in both places. Reads the same progress account as the TUI (core.progress)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from poetwb.core import progress as core_progress


def _rich_progress(stream: TextIO, *columns: Any) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=30), *columns,
                    TimeElapsedColumn(), console=Console(file=stream), transient=False)


class TrainView:
    """run_job's observer: one bar over both stages (steps, loss, tokens/s, ETA) and the phase between steps."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.status: dict[str, Any] = {}
        self.records: list[dict[str, Any]] = []
        self.last_phase = ""
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> TrainView:
        if self.tty:
            from rich.progress import TextColumn

            self.bar = _rich_progress(self.stream, TextColumn("{task.fields[steps]}"),
                                      TextColumn("{task.fields[figures]}"))
            self.bar.start()
            self.task = self.bar.add_task("starting", total=None, steps="", figures="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, status: dict[str, Any] | None, record: dict[str, Any] | None) -> None:
        if status is not None:
            self.status = status
        if record is not None:
            self.records.append(record)
        p = core_progress.summarize(self.status, self.records)
        if self.bar is not None:
            figures = []
            if p.loss is not None:
                figures.append(f"loss {p.loss:.3f}")
            if p.tokens_per_s:
                figures.append(f"{p.tokens_per_s:.0f} tok/s")
            figures.append(f"ETA {core_progress.format_duration(p.eta_s)}" if p.eta_s is not None else "ETA …")
            self.bar.update(self.task, description=p.phase or (f"stage {p.stage}" if p.active else p.state),
                            total=p.total or None,
                            completed=p.done, steps=f"{p.done}/{p.total} steps" if p.total else "",
                            figures=" · ".join(figures))
            return
        if p.phase and p.phase != self.last_phase and not p.phase.endswith(": training"):
            print(p.phase, file=self.stream, flush=True)
        self.last_phase = p.phase or self.last_phase
        if record is not None and any(k == "loss" or k.endswith("_loss") for k in record):
            p.stage, p.step = int(record.get("stage", p.stage)), int(record.get("step", p.step))
            extra = "".join(f" · {k.removesuffix('_loss')} loss {v:.3f}" for k, v in record.items()
                            if k.endswith("_loss") and k != "eval_loss")
            print(p.line() + extra, file=self.stream, flush=True)


class StepsView:
    """A callback progress(done, total, what) drawn as a bar (total 0: a phase without a count yet)."""

    def __init__(self, title: str, stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.bar: Any = None
        self.task: Any = None
        self.last_what = ""
        self.last_print = 0.0

    def __enter__(self) -> StepsView:
        if self.tty:
            from rich.progress import MofNCompleteColumn, TimeRemainingColumn

            self.bar = _rich_progress(self.stream, MofNCompleteColumn(), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task(self.title, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.title}: {what}", total=total or None, completed=done)
            return
        now = time.monotonic()
        if what != self.last_what or now - self.last_print > 10 or (total and done == total):
            count = f" ({done}/{total})" if total else ""
            print(f"{self.title}: {what}{count}", file=self.stream, flush=True)
            self.last_what, self.last_print = what, now
