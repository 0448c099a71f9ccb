"""Train pane: preset and validated hyperparameters, launch the two-stage job as its own process, live curves,
progress, cancel/resume, and the list of runs. Reopening the app re-attaches to a running job from its files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select

from poetwb.tui.widgets.loss_chart import LossChart

# (input id, config path, label, type)
FIELDS = [
    ("s1-lr", ("stage1", "learning_rate"), "stage 1 lr", float),
    ("s1-steps", ("stage1", "max_steps"), "stage 1 max steps (-1: epochs)", int),
    ("s1-batch", ("stage1", "batch_size"), "stage 1 batch", int),
    ("s1-seq", ("stage1", "seq_len"), "stage 1 seq len", int),
    ("s2-lr", ("stage2", "learning_rate"), "stage 2 lr", float),
    ("s2-steps", ("stage2", "max_steps"), "stage 2 max steps", int),
    ("s2-batch", ("stage2", "batch_size"), "stage 2 batch", int),
    ("lora-r", ("lora", "r"), "LoRA rank", int),
]


class TrainPane(Vertical):
    def __init__(self) -> None:
        super().__init__(id="train-pane")
        self.run_folder: Path | None = None
        self.metrics_offset = 0
        self.stage1_total = 0

    def compose(self) -> ComposeResult:
        from poetwb.core.config import preset_names

        with Horizontal(classes="row"):
            yield Select([(n, n) for n in preset_names()], value="cpu-quick", allow_blank=False, id="preset")
            yield Button("Start", id="start", variant="success")
            yield Button("Cancel", id="cancel", variant="error")
            yield Button("Resume", id="resume")
            yield Button("Evaluate", id="evaluate")
        with Grid(id="hyper"):
            for fid, _, label, _ in FIELDS:
                yield Label(label)
                yield Input(id=fid, type="number" if _ is float else "integer")
        yield Label("", id="train-error", classes="error")
        with Horizontal(classes="row"):
            yield ProgressBar(id="train-progress", show_eta=True)
            yield Label("", id="train-figures")
        yield LossChart(id="loss-chart")
        yield Label("", id="eval-table")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#runs-table", DataTable).add_columns("run", "state", "stage", "step", "held-out loss", "error")
        self.fill_from_preset("cpu-quick")
        self.query_one("#train-progress", ProgressBar).update(total=1, progress=0)  # idle, not "indeterminate"
        self.refresh_runs()
        running = [r for r in self._runs() if r.state == "running"]
        if running:  # re-attach to a job started before the app was (re)opened, and show it
            self.attach(running[0].run_id)
            self.call_after_refresh(self.app.action_show, "train")
        self.set_interval(0.5, self.poll)

    def _runs(self) -> list[Any]:
        from poetwb.core import runs

        return runs.list_runs()

    def fill_from_preset(self, name: str) -> None:
        from poetwb.core.config import load_preset

        cfg = load_preset(name).to_dict()
        for fid, (section, key), _, _ in FIELDS:
            self.query_one(f"#{fid}", Input).value = str(cfg[section][key])

    @on(Select.Changed, "#preset")
    def preset_changed(self, event: Select.Changed) -> None:
        self.fill_from_preset(str(event.value))

    def build_config(self) -> Any:
        """The TrainConfig from preset + fields + the Data and Models panes; raises PoetError on bad values."""
        from poetwb.core.config import TrainConfig, load_preset
        from poetwb.core.errors import PoetError

        data = load_preset(str(self.query_one("#preset", Select).value)).to_dict()
        for fid, (section, key), label, kind in FIELDS:
            raw = self.query_one(f"#{fid}", Input).value.strip()
            try:
                data[section][key] = kind(raw)
            except ValueError as exc:
                raise PoetError(f"{label}: {raw!r} is not a valid {kind.__name__}") from exc
        data["model"] = self.app.base_model
        data["corpus"] = {**data["corpus"], **self.app.corpus} if self.app.corpus else data["corpus"]
        if self.app.instructions:
            data["instructions"] = self.app.instructions
        data["preset"] = str(self.query_one("#preset", Select).value)
        return TrainConfig.from_dict(data)

    @on(Button.Pressed, "#start")
    def start(self) -> None:
        from poetwb.core import runs
        from poetwb.core.errors import PoetError

        error = self.query_one("#train-error", Label)
        if any(r.state == "running" for r in self._runs()):
            self.app.notify("a job is already running: wait for it or cancel it first", severity="warning")
            return
        try:
            config = self.build_config()
            folder = runs.create_run(config)
            runs.launch_detached(folder)
        except PoetError as exc:
            error.update(str(exc))
            self.app.notify(str(exc), severity="error")
            return
        error.update("")
        self.attach(folder.name)
        self.app.notify(f"training {folder.name} in the background")

    def attach(self, run_id: str) -> None:
        from poetwb.core import paths
        from poetwb.core.evaluate import read_saved

        self.run_folder = paths.run_dir(run_id)
        self.metrics_offset = 0
        self.query_one(LossChart).reset()
        self.show_eval(read_saved(self.run_folder, "eval.json"))
        self.poll()

    def show_eval(self, result: dict[str, Any] | None) -> None:
        label = self.query_one("#eval-table", Label)
        if not result:
            label.update("held-out loss: not evaluated yet (Evaluate)")
            return
        parts = []
        for name, row in result["models"].items():
            cells = ", ".join(f"{split} {v['loss']:.3f}" for split, v in row.items())
            parts.append(f"[b]{name}[/b]: {cells}")
        label.update("held-out loss — " + "   ".join(parts))

    @on(Button.Pressed, "#evaluate")
    def evaluate(self) -> None:
        if self.run_folder is None:
            self.app.notify("select a run in the table first", severity="warning")
            return
        self.query_one("#eval-table", Label).update("evaluating…")
        self.run_eval(self.run_folder.name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval")
    def run_eval(self, run_id: str) -> None:
        from poetwb.core.errors import PoetError
        from poetwb.core.evaluate import evaluate_run

        try:
            result = evaluate_run(run_id)
        except PoetError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="error", timeout=8)
            self.app.call_from_thread(self.show_eval, None)
            return
        self.app.call_from_thread(self.show_eval, result)

    def poll(self) -> None:
        from poetwb.core import runs

        if self.run_folder is None:
            return
        records, self.metrics_offset = runs.read_metrics(self.run_folder, self.metrics_offset)
        if records:
            self.query_one(LossChart).add(records)
        status = runs.read_status(self.run_folder)
        bar = self.query_one("#train-progress", ProgressBar)
        total, step = status.get("total_steps") or 0, status.get("step") or 0
        if total:
            bar.update(total=total, progress=step)
        last = next((r for r in reversed(self.query_one(LossChart).records) if "tokens_per_s" in r), {})
        figures = f"{self.run_folder.name}  {status.get('state')}  stage {status.get('stage', 0)}  " \
                  f"step {step}/{total}  {last.get('tokens_per_s', 0):.0f} tok/s"
        self.query_one("#train-figures", Label).update(figures)
        error = self.query_one("#train-error", Label)
        if status.get("state") == "failed":
            error.update(f"run failed ({status.get('cause', '')}): {status.get('error', '')}")
        elif status.get("state") != "failed" and str(error.render()).startswith("run failed"):
            error.update("")
        if int(time.monotonic() * 2) % 4 == 0:
            self.refresh_runs()

    def refresh_runs(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for r in self._runs():
            losses = " ".join(f"{k.replace('stage', 's')}={v:.3f}" for k, v in r.eval_loss.items())
            table.add_row(r.run_id, r.state, str(r.stage), f"{r.step}/{r.total_steps}", losses, r.error[:60],
                          key=r.run_id)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))

    @on(DataTable.RowSelected, "#runs-table")
    def select_run(self, event: DataTable.RowSelected) -> None:
        self.attach(str(event.row_key.value))

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        if self.run_folder is None:
            self.app.notify("no run selected", severity="warning")
            return
        self.cancel_run(self.run_folder.name)

    @work(thread=True, exit_on_error=False, group="cancel")
    def cancel_run(self, run_id: str) -> None:
        from poetwb.core import runs
        from poetwb.core.errors import PoetError

        try:
            status = runs.request_cancel(run_id)
            self.app.call_from_thread(self.app.notify, f"{run_id}: {status['state']} at step {status.get('step')}")
        except PoetError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="warning")

    @on(Button.Pressed, "#resume")
    def resume(self) -> None:
        from poetwb.core import runs

        if self.run_folder is None:
            self.app.notify("select a run in the table first", severity="warning")
            return
        state = runs.read_status(self.run_folder)["state"]
        if state in {"running", "finished"}:
            self.app.notify(f"run {self.run_folder.name} is {state}; nothing to resume", severity="warning")
            return
        runs.launch_detached(self.run_folder)
        self.attach(self.run_folder.name)
