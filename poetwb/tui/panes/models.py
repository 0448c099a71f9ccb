"""Models pane: the catalogue (bundled, HF cache, hub list, local folders), pick the base model, download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, ProgressBar

from poetwb.tui.messages import ModelPicked
from poetwb.tui.workers import WorkerErrors


def _params(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _mem(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


class ModelsPane(WorkerErrors, Vertical):
    WORKER_WHAT = {"catalogue": "reading the model catalogue", "download": "the download"}

    def worker_failed(self, group: str, message: str) -> None:
        if group == "catalogue":
            self._catalogue_failed(message)
        elif group == "download":
            self._download_ended()

    def __init__(self) -> None:
        super().__init__(id="models-pane")
        self.entries: dict[str, Any] = {}
        self.local_dirs: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Label("Pick the base model (Enter on a row). Hub models download when online.", classes="hint")
        yield DataTable(id="model-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="row"):
            yield Input(placeholder="local model folder, e.g. ~/models/my-gpt2", id="local-path")
            yield Button("Add folder", id="add-local")
            yield Button("Download selected", id="download")
        yield ProgressBar(id="download-progress", total=1, show_eta=True)
        yield Label("", id="models-status")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("id", "source", "architecture", "params", "offline", "LoRA train mem")
        self.query_one("#download-progress").display = False
        self.query_one("#models-status", Label).update("reading the model catalogue…")
        # after the first paint: counting parameters imports torch, which would hold up the first screen
        self.set_timer(0.2, self.refresh_catalogue)

    def refresh_catalogue(self) -> None:
        self.read_catalogue(list(self.local_dirs))

    @work(thread=True, exclusive=True, exit_on_error=False, group="catalogue")
    def read_catalogue(self, local_dirs: list[Path]) -> None:
        from poetwb.core import models
        from poetwb.core.errors import PoetError

        try:
            entries = models.catalogue(local_dirs)
        except PoetError as exc:
            self.app.call_from_thread(self._catalogue_failed, str(exc), True)
            return
        self.app.call_from_thread(self._show, entries)

    def _catalogue_failed(self, message: str, notify: bool = False) -> None:
        """The folder just added is dropped again; before any catalogue was shown, the status says why."""
        if notify:
            self.app.notify(message, severity="error")
        self.local_dirs = self.local_dirs[:-1]
        if not self.entries:
            self.query_one("#models-status", Label).update(f"could not read the model catalogue: {message}")

    def _show(self, entries: list[Any]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.entries = {e.id: e for e in entries}
        for e in entries:
            mark = "● " if e.id == self.app.base_model or (e.source == "bundled" and self.app.base_model == "bundled") \
                else "  "
            table.add_row(mark + e.id, e.source, e.architecture or "?", _params(e.params),
                          "yes" if e.offline else "no", _mem(e.train_memory_bytes), key=e.id)
        self.query_one("#models-status", Label).update(f"{len(entries)} models; base: {self.app.base_model}")

    @on(DataTable.RowSelected, "#model-table")
    def pick(self, event: DataTable.RowSelected) -> None:
        model_id = str(event.row_key.value)
        entry = self.entries[model_id]
        if not entry.offline:
            self.app.notify(f"{model_id} is not available offline yet: press 'Download selected' while online",
                            severity="warning")
            return
        value = "bundled" if entry.source == "bundled" else (entry.path if entry.source == "local" else model_id)
        self.post_message(ModelPicked(value))
        self._show(list(self.entries.values()))

    @on(Button.Pressed, "#add-local")
    @on(Input.Submitted, "#local-path")
    def add_local(self) -> None:
        raw = self.query_one("#local-path", Input).value.strip()
        if not raw:
            self.app.notify("type a model folder first", severity="warning")
            return
        path = Path(raw).expanduser()
        if not path.exists():
            self.app.notify(f"{path} does not exist; give a folder with config.json and weights", severity="error")
            return
        self.local_dirs.append(path)
        self.refresh_catalogue()

    @on(Button.Pressed, "#download")
    def download(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return
        model_id = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        if self.entries[model_id].source != "hub":
            self.app.notify(f"{model_id} is already on this machine")
            return
        self.fetch(model_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="download")
    def fetch(self, model_id: str) -> None:
        from poetwb.core import models
        from poetwb.core.errors import PoetError

        self.app.call_from_thread(self._download_progress, 0, None)
        try:
            models.hub_snapshot(model_id, progress=lambda done, total: self.app.call_from_thread(
                self._download_progress, done, total))
        except PoetError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="error", timeout=10)
        else:
            self.app.call_from_thread(self.app.notify, f"{model_id} downloaded")
            self.app.call_from_thread(self.refresh_catalogue)
        finally:
            self.app.call_from_thread(self._download_ended)

    def _download_progress(self, done: int, total: int | None) -> None:
        bar = self.query_one("#download-progress", ProgressBar)
        bar.display = True
        bar.update(total=total, progress=done)

    def _download_ended(self) -> None:
        self.query_one("#download-progress", ProgressBar).display = False
