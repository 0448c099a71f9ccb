"""Train pane: preset and hyperparameters, what the run will train on, Start (checked before a run exists), one
progress bar and ETA over both stages with the job's phase, live curves, evaluation tables, and the list of runs
(cancel, resume, delete). Reopening the app re-attaches to a running job from its files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from poetwb.core.runs import ACTIVE, RunState
from poetwb.tui.messages import EvalDone, EvalProgress, ExportDone, ExportProgress, RunsListed
from poetwb.tui.widgets.loss_chart import LossChart
from poetwb.tui.workers import WorkerErrors

# (input id, config path, label, type)
FIELDS = [
    ("s1-lr", ("stage1", "learning_rate"), "stage 1 learning rate", float),
    ("s1-steps", ("stage1", "max_steps"), "stage 1 max steps (-1: epochs)", int),
    ("s1-batch", ("stage1", "batch_size"), "stage 1 batch size", int),
    ("s1-seq", ("stage1", "seq_len"), "stage 1 sequence length", int),
    ("s2-lr", ("stage2", "learning_rate"), "stage 2 learning rate", float),
    ("s2-steps", ("stage2", "max_steps"), "stage 2 max steps (-1: epochs)", int),
    ("s2-batch", ("stage2", "batch_size"), "stage 2 batch size", int),
    ("lora-r", ("lora", "r"), "LoRA rank", int),
]


def plain_number(value: Any) -> str:
    """5e-05 -> '0.00005': a learning rate as people type it."""
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text if len(text) <= 12 else repr(value)
    return str(value)


class TrainPane(WorkerErrors, Vertical):
    BINDINGS = [Binding("delete", "delete_run", "Delete run")]  # an Input keeps Delete for its own text
    WORKER_WHAT = {"start": "starting the run", "eval": "the evaluation", "cancel": "cancelling the run",
                   "delete-run": "deleting the run", "runs": "reading the runs"}

    def worker_failed(self, group: str, message: str) -> None:
        if group == "start":
            self.query_one("#start", Button).disabled = False
            self.set_error(message)
        elif group == "eval":  # out of "evaluating…"; the notification said why
            self.evaluating = False
            self.query_one("#eval-progress-row").display = False
            self.show_saved_eval()

    def __init__(self) -> None:
        super().__init__(id="train-pane")
        self.run_folder: Path | None = None
        self.metrics_offset = 0
        self.last_state: str | None = None
        self.evaluating = False
        self.exporting = False
        self.error_text = ""
        self.cancelling: str | None = None
        """The run a Cancel was asked for, until its job has stopped (it saves a checkpoint first)."""

    def compose(self) -> ComposeResult:
        from poetwb.core.config import DEFAULT_PRESET, preset_names

        with Horizontal(classes="row"):
            yield Select([(n, n) for n in preset_names()], value=DEFAULT_PRESET, allow_blank=False,
                         id="preset")
            yield Button("Start", id="start", variant="success")
            yield Button("Cancel", id="cancel", variant="error")
            yield Button("Resume", id="resume")
            yield Button("Evaluate", id="evaluate")
            yield Button("Export", id="train-export")
            yield Button("Delete run", id="delete-run")
        yield Static("", id="train-inputs", classes="hint")
        with Grid(id="hyper"):
            for fid, _, label, kind in FIELDS:
                yield Label(label)
                yield Input(id=fid, type="number" if kind is float else "integer", compact=True)
        yield Label("", id="train-error", classes="error")
        with Horizontal(id="progress-row"):
            yield ProgressBar(id="train-progress", show_eta=False)
            yield Label("", id="train-figures")
        yield Label("", id="train-phase", classes="hint")
        yield LossChart(id="loss-chart")
        with Horizontal(id="eval-progress-row"):
            yield ProgressBar(id="eval-progress", show_eta=True)
            yield Label("", id="eval-status")
        with Horizontal(id="export-progress-row"):
            yield ProgressBar(id="export-progress", show_eta=False)
            yield Label("", id="export-status")
        with Horizontal(id="eval-row"):
            yield Static("", id="eval-table")
            yield Static("", id="metrics-table")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#runs-table", DataTable).add_columns("run", "state", "stage", "step",
                                                             "val loss (start → end)", "error")
        from poetwb.core.config import DEFAULT_PRESET

        self.fill_from_preset(DEFAULT_PRESET)
        self.query_one("#train-progress", ProgressBar).update(total=1, progress=0)  # idle, not "indeterminate"
        self.query_one("#eval-progress-row").display = False
        self.query_one("#export-progress-row").display = False
        self.set_error("")
        self.show_eval(None)
        self.refresh_runs()
        from poetwb.core import runs

        running = runs.running_run()
        if running is not None:  # re-attach to a job started before the app was (re)opened, and show it
            self.attach(running.run_id)
            self.call_after_refresh(self.app.action_show, "train")
        elif newest := self._runs():  # else the newest run's curves, not an empty chart
            self.attach(newest[0].run_id)
        self.set_interval(0.5, self.poll)
        self.set_interval(2.0, self.refresh_runs)

    def on_show(self) -> None:
        self.show_inputs()

    def _runs(self) -> list[Any]:
        from poetwb.core import runs

        return runs.list_runs()

    # --- the form ---------------------------------------------------------------------------------------------

    def fill_from_preset(self, name: str) -> None:
        from poetwb.core.config import load_preset

        cfg = load_preset(name).to_dict()
        for fid, (section, key), _, _ in FIELDS:
            self.query_one(f"#{fid}", Input).value = plain_number(cfg[section][key])
        self.show_inputs()

    @on(Select.Changed, "#preset")
    def preset_changed(self, event: Select.Changed) -> None:
        self.fill_from_preset(str(event.value))

    def overrides(self, with_fields: bool = True) -> dict[str, Any]:
        """What the pane adds on top of the preset: the Models and Data panes' choices, then (optionally) the
        boxes. The core's builder merges them by its one rule (config.MERGE_RULE), as it does the CLI's flags."""
        from poetwb.core.errors import PoetError

        over: dict[str, Any] = {"model": self.app.base_model}
        if self.app.corpus:
            over["corpus"] = dict(self.app.corpus)
        if self.app.instructions:
            over["instructions"] = dict(self.app.instructions)
        if with_fields:
            for fid, (section, key), label, kind in FIELDS:
                raw = self.query_one(f"#{fid}", Input).value.strip()
                try:  # "5" stays 5 in a float field, so messages repeat what was typed ("got 5")
                    value = int(raw) if kind is float and raw.lstrip("+-").isdigit() else kind(raw)
                except ValueError as exc:
                    raise PoetError(f"{label}: {raw!r} is not a valid {kind.__name__}") from exc
                over.setdefault(section, {})[key] = value
        return over

    def build_config(self, with_fields: bool = True) -> Any:
        """The TrainConfig from preset + the Models and Data panes + the boxes; raises PoetError on bad values."""
        from poetwb.core.config import build_train_config

        return build_train_config(str(self.query_one("#preset", Select).value), None, self.overrides(with_fields))

    def show_inputs(self) -> None:
        """Say which model, corpus and instructions Start will use (they are picked in the Models and Data panes)."""
        from rich.markup import escape

        from poetwb.core.errors import PoetError
        from poetwb.core.preflight import describe_inputs

        try:
            said = describe_inputs(self.build_config(with_fields=False))
        except PoetError as exc:
            text = f"[red]data: {escape(str(exc))}[/red] (Data pane, F2)"
        else:
            text = " · ".join(f"[b]{k}[/b] {escape(v)}" for k, v in said.items()) + "  (change: F1, F2)"
        self.query_one("#train-inputs", Static).update(text)

    def set_error(self, text: str) -> None:
        """The line under the form: a bad value, a failed check, a failed run (hidden when there is nothing)."""
        self.error_text = text
        label = self.query_one("#train-error", Label)
        label.update(text)
        label.display = bool(text)

    def clear_stale_error(self) -> None:
        """A bad value or a failed check goes once the user changes a field or the data: the line said what to
        fix, not what is still wrong (Start checks again). A failed run's line stays."""
        if self.error_text and not self.error_text.startswith(("run failed", "checking the corpus")):
            self.set_error("")

    @on(Input.Changed, "#hyper Input")
    def field_changed(self) -> None:
        self.clear_stale_error()

    # --- start ------------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#start")
    def start(self) -> None:
        from poetwb.core import runs
        from poetwb.core.errors import PoetError

        try:
            runs.check_can_start()
        except PoetError as exc:
            self.app.notify(str(exc), severity="warning")
            return
        try:
            config = self.build_config()
        except PoetError as exc:
            self._start_failed(str(exc))
            return
        self.set_error("checking the corpus and instructions…")
        self.query_one("#start", Button).disabled = True
        self.launch(config)

    @work(thread=True, exclusive=True, exit_on_error=False, group="start")
    def launch(self, config: Any) -> None:
        """Check the inputs, then create the run and start its job; no run exists when a check fails."""
        from poetwb.core import runs
        from poetwb.core.errors import PoetError

        try:
            launched = runs.start_run(config)
        except PoetError as exc:
            self.app.call_from_thread(self._start_failed, str(exc))
            return
        self.app.call_from_thread(self._started, launched.run_id)

    def _start_failed(self, message: str) -> None:
        self.query_one("#start", Button).disabled = False
        self.set_error(message)
        self.app.notify(message, severity="error", timeout=8)

    def _started(self, run_id: str) -> None:
        self.query_one("#start", Button).disabled = False
        self.set_error("")
        self.attach(run_id)
        self.refresh_runs()
        self.app.notify(f"training {run_id} in the background")

    # --- watching a run ---------------------------------------------------------------------------------------

    def attach(self, run_id: str) -> None:
        from poetwb.core import paths

        self.run_folder = paths.run_dir(run_id)
        self.metrics_offset = 0
        self.last_state = None
        self.query_one(LossChart).reset()
        self.show_saved_eval()
        self.poll()

    def detach(self) -> None:
        self.run_folder = None
        self.last_state = None
        self.query_one(LossChart).reset()
        self.query_one("#train-progress", ProgressBar).update(total=1, progress=0)
        for wid in ("#train-figures", "#train-phase"):
            self.query_one(wid, Label).update("")
        self.set_error("")
        self.show_eval(None)

    def poll(self) -> None:
        from poetwb.core import progress, runs

        if self.run_folder is None:
            return
        if not self.run_folder.is_dir():  # deleted elsewhere (CLI)
            self.detach()
            return
        chart = self.query_one(LossChart)
        records, self.metrics_offset = runs.read_metrics(self.run_folder, self.metrics_offset)
        status = runs.read_status(self.run_folder)
        p = progress.summarize(status, chart.records + records)
        chart.plan(p.total)
        if records:
            chart.add(records)
        bar = self.query_one("#train-progress", ProgressBar)
        if p.total:
            bar.update(total=p.total, progress=p.done)
        elif p.active:
            bar.update(total=None)  # a job that has not planned its steps yet: an indeterminate bar
        else:
            bar.update(total=1, progress=0)  # ended before it planned any step (a failed start): idle, not spinning
        figures = [f"{self.run_folder.name} {p.state}"]
        if p.stage:
            figures.append(f"stage {p.stage}: {p.step}/{p.stage_total}")
        if p.total:
            figures.append(f"all: {p.done}/{p.total} steps")
        if p.loss is not None:
            figures.append(f"loss {p.loss:.3f}")
        if p.tokens_per_s:
            figures.append(f"{p.tokens_per_s:.0f} tok/s")
        if p.active:
            figures.append(f"ETA {progress.format_duration(p.eta_s)}" if p.eta_s is not None else "ETA …")
        self.query_one("#train-figures", Label).update(" · ".join(figures))
        stopping = p.active and self.cancelling == self.run_folder.name
        if not p.active and self.cancelling == self.run_folder.name:
            self.cancelling = None
        self.query_one("#train-phase", Label).update(
            "cancelling: the job stops after its current step and saves a checkpoint…" if stopping
            else p.phase or ("starting the training process (loading libraries)" if p.active else ""))
        if p.state == RunState.FAILED:
            self.set_error(f"run failed ({status.get('cause', '')}): {status.get('error', '')}")
        elif self.error_text.startswith("run failed"):
            self.set_error("")
        if self.last_state in ACTIVE and p.state not in ACTIVE:
            self.announce(self.run_folder.name, p.state, status)
            self.refresh_runs()
        self.last_state = p.state

    def announce(self, run_id: str, state: str, status: dict[str, Any]) -> None:
        """A notification when the watched run ends, however it ends."""
        from poetwb.core.progress import describe_losses

        if state == RunState.FINISHED:
            losses = describe_losses(status.get("eval_loss", {}))
            self.app.notify(f"run {run_id} finished" + (f": val loss {losses}" if losses else ""), timeout=15)
        elif state == RunState.FAILED:
            self.app.notify(f"run {run_id} failed: {status.get('error', '')}", severity="error", timeout=15)
        else:
            self.app.notify(f"run {run_id} {state} at stage {status.get('stage')} step {status.get('step')}",
                            severity="warning", timeout=10)

    # --- evaluation -------------------------------------------------------------------------------------------

    def show_saved_eval(self) -> None:
        from poetwb.core.evaluate import read_saved

        if self.run_folder is None:
            self.show_eval(None)
            return
        self.show_eval(read_saved(self.run_folder, "eval.json"), read_saved(self.run_folder, "metrics.json"))

    def show_eval(self, result: dict[str, Any] | None, metrics: dict[str, Any] | None = None) -> None:
        from poetwb.render import METRICS_CAPTION, loss_table, metrics_table

        table = self.query_one("#eval-table", Static)
        if not result:
            table.update("held-out loss: not evaluated yet (Evaluate)" if self.run_folder else "")
        else:
            table.update(loss_table(result))
        side = self.query_one("#metrics-table", Static)
        if metrics:
            side.update(metrics_table(metrics, caption=False))
            side.tooltip = METRICS_CAPTION
        else:
            side.update(f"poetic metrics: `poetwb eval {self.run_folder.name} --metrics`" if result and
                        self.run_folder else "")

    @on(Button.Pressed, "#evaluate")
    def evaluate(self) -> None:
        if self.run_folder is None:
            self.app.notify("select a run in the table first (Enter on a row)", severity="warning")
            return
        if self.evaluating:
            self.app.notify("an evaluation is already running", severity="warning")
            return
        self.evaluating = True
        self.query_one("#eval-progress-row").display = True
        self.query_one("#eval-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#eval-status", Label).update("evaluating…")
        self.run_eval(self.run_folder.name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval")
    def run_eval(self, run_id: str) -> None:
        from poetwb.core.errors import PoetError
        from poetwb.core.evaluate import evaluate_run

        try:
            result = evaluate_run(run_id, progress=lambda d, t, what: self.post_message(EvalProgress(d, t, what)))
        except PoetError as exc:
            self.post_message(EvalDone(None, str(exc)))
            return
        self.post_message(EvalDone(result))

    @on(EvalProgress)
    def eval_progress(self, event: EvalProgress) -> None:
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.update(total=event.total or None, progress=event.done)
        count = f" ({event.done}/{event.total} batches)" if event.total else ""
        self.query_one("#eval-status", Label).update(f"evaluating: {event.what}{count}")

    @on(EvalDone)
    def eval_done(self, event: EvalDone) -> None:
        self.evaluating = False
        self.query_one("#eval-progress-row").display = False
        if event.error:
            self.app.notify(event.error, severity="error", timeout=8)
            self.show_saved_eval()
            return
        self.show_saved_eval()
        self.app.notify("evaluation done")

    # --- export -----------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#train-export")
    def open_export(self) -> None:
        from poetwb.tui.widgets.export_dialog import ExportDialog

        run_id = self.run_folder.name if self.run_folder is not None else self.highlighted_run()
        if run_id is None:
            self.app.notify("no run to export yet: train one first", severity="warning")
            return
        if self.exporting:
            self.app.notify("an export is already running", severity="warning")
            return

        def answered(choice: dict[str, Any] | None) -> None:
            if choice:
                self.exporting = True
                self.query_one("#export-progress-row").display = True
                self.query_one("#export-progress", ProgressBar).update(total=None, progress=0)
                self.query_one("#export-status", Label).update(f"exporting {run_id} as {choice['format']}…")
                self.run_export(run_id, choice)

        self.app.push_screen(ExportDialog(run_id), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def run_export(self, run_id: str, choice: dict[str, Any]) -> None:
        from poetwb.core.errors import first_line
        from poetwb.core.export import export_run

        try:
            result = export_run(run_id, choice["format"], choice["output"], stage=choice["stage"],
                                quant=choice["quant"], force=choice["force"],
                                progress=lambda d, t, what: self.post_message(ExportProgress(d, t, what)))
        except Exception as exc:  # a bad choice (PoetError) or a failure (out of memory, disk): one line, no trace
            self.post_message(ExportDone(None, first_line(exc)))
            return
        self.post_message(ExportDone(result.to_dict()))

    @on(ExportProgress)
    def export_progress(self, event: ExportProgress) -> None:
        self.query_one("#export-progress", ProgressBar).update(total=event.total or None, progress=event.done)
        count = f" ({event.done}/{event.total})" if event.total else ""
        self.query_one("#export-status", Label).update(f"export: {event.what}{count}")

    @on(ExportDone)
    def export_done(self, event: ExportDone) -> None:
        self.exporting = False
        self.query_one("#export-progress-row").display = False
        if event.error or not event.result:
            self.app.notify(f"export failed: {event.error}", severity="error", timeout=10)
            return
        r = event.result
        size = r["total_bytes"] / 2**20
        message = f"exported {r['run_id']} stage {r['stage']} as {r['format']} ({r['quant']}, {size:,.1f} MiB) to " \
                  f"{r['path']}"
        if r["commands"]:
            message += "\nrun it with: " + " && ".join(r["commands"])
        self.app.notify(message, timeout=20)

    # --- the runs ---------------------------------------------------------------------------------------------

    def refresh_runs(self) -> None:
        """Re-read the runs in a worker: every run's status.json and config.toml are parsed off the UI thread."""
        self.read_runs()

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs")
    def read_runs(self) -> None:
        self.post_message(RunsListed(self._runs()))

    @on(RunsListed)
    def show_runs(self, event: RunsListed) -> None:
        from poetwb.core.progress import describe_losses

        table = self.query_one("#runs-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for r in event.runs:
            losses = describe_losses(r.eval_loss, "  ").replace("stage ", "s")
            table.add_row(r.run_id, r.state, str(r.stage), f"{r.step}/{r.total_steps}", losses, r.error[:60],
                          key=r.run_id)
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))

    @on(DataTable.RowSelected, "#runs-table")
    def select_run(self, event: DataTable.RowSelected) -> None:
        self.attach(str(event.row_key.value))

    def highlighted_run(self) -> str | None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        if self.run_folder is None:
            self.app.notify("no run selected", severity="warning")
            return
        if self.cancelling == self.run_folder.name:
            self.app.notify("already cancelling: the job stops after its current step", severity="warning")
            return
        self.cancelling = self.run_folder.name
        self.poll()  # its phase line says "cancelling…" now, not at the next tick
        self.cancel_run(self.run_folder.name)

    @work(thread=True, exit_on_error=False, group="cancel")
    def cancel_run(self, run_id: str) -> None:
        """Ask the job to stop and wait for it; the watched run's own end is announced by poll (one toast)."""
        from poetwb.core import runs
        from poetwb.core.errors import PoetError

        try:
            status = runs.request_cancel(run_id)
        except PoetError as exc:
            self.app.call_from_thread(self._cancel_ended, run_id, str(exc), True)
            return
        self.app.call_from_thread(self._cancel_ended, run_id, f"run {run_id} {status.state} at stage {status.stage} "
                                  f"step {status.step}", False)

    def _cancel_ended(self, run_id: str, message: str, failed: bool) -> None:
        """A failed cancel is always said; a stopped run is announced by poll while it is watched, here when the
        user has looked away from it."""
        if self.cancelling == run_id:
            self.cancelling = None
        if failed or self.run_folder is None or self.run_folder.name != run_id:
            self.app.notify(message, severity="warning", timeout=None if failed else 10)

    @on(Button.Pressed, "#resume")
    def resume(self) -> None:
        from poetwb.core import runs
        from poetwb.core.errors import PoetError

        if self.run_folder is None:
            self.app.notify("select a run in the table first", severity="warning")
            return
        try:
            runs.check_can_start()
            launched = runs.resume_run(self.run_folder.name)
        except PoetError as exc:
            self.app.notify(str(exc), severity="warning", timeout=8)
            return
        self.attach(launched.run_id)

    @on(Button.Pressed, "#delete-run")
    def action_delete_run(self) -> None:
        from poetwb.core import runs
        from poetwb.core.errors import PoetError
        from poetwb.tui.widgets.confirm import Confirm

        run_id = self.highlighted_run()
        if run_id is None:
            self.app.notify("no runs to delete", severity="warning")
            return
        try:
            runs.check_deletable(run_id)
        except PoetError as exc:
            self.app.notify(str(exc), severity="error", timeout=8)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete_run(run_id)

        self.app.push_screen(Confirm(f"Delete run {run_id} with its adapters, checkpoints and logs? "
                                     "Poems saved from it stay in the library."), answered)

    @work(thread=True, exit_on_error=False, group="delete-run")
    def delete_run(self, run_id: str) -> None:
        from poetwb.core import runs
        from poetwb.core.errors import PoetError

        try:
            runs.delete_run(run_id)
        except PoetError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="error", timeout=8)
            return
        self.app.call_from_thread(self._deleted, run_id)

    def _deleted(self, run_id: str) -> None:
        if self.run_folder is not None and self.run_folder.name == run_id:
            self.detach()
        self.refresh_runs()
        self.app.notify(f"deleted run {run_id}")
