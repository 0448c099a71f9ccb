"""Poems pane: the library of saved poems; search, mark, delete the marked ones (asked first, undoable for a few
seconds), export the marked (or shown) ones to Markdown in a folder under the current directory by default."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Button, DataTable, Input, Label, Static, Switch

from poetwb.core.runs import run_of_adapter

DEFAULT_EXPORT = "./poems-export"
UNDO_SECONDS = 10.0


def adapter_label(adapter: str) -> str:
    """'run 20261130-smollm2-ab12 · stage 2' for a run's adapter, not its absolute (often temporary) path."""
    if not adapter:
        return "base model"
    path = Path(adapter)
    stage = path.name.replace("stage", "stage ") if path.name.startswith("stage") else path.name
    run = run_of_adapter(path)
    if run is not None:
        return f"run {run.name} · {stage}"
    if path.parent.name == "adapters":
        return f"run {path.parent.parent.name} · {stage} (run deleted)"
    return f"adapter {path.name}"


class PoemsPane(Vertical):
    BINDINGS = [
        Binding("space", "toggle_mark", "Mark"),
        Binding("delete", "delete", "Delete marked"),
        Binding("ctrl+e", "export", "Export", priority=True),  # an Input binds ctrl+e (end of line) otherwise
        Binding("ctrl+z", "undo", "Undo delete"),
    ]

    def __init__(self) -> None:
        super().__init__(id="poems-pane")
        self.marked: set[int] = set()
        self.shown: list = []
        self.pending: set[int] = set()
        """Deleted poems that ctrl+z can still bring back; removed from the library when the undo time is up."""
        self.pending_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Input(placeholder="search poems, prompts, models", id="poem-search")
            yield Label("export to", classes="switch-label")
            yield Input(DEFAULT_EXPORT, id="export-dir",
                        tooltip=f"a folder; relative paths are under the current directory ({Path.cwd()}). "
                                "Enter or ctrl+e exports")
            yield Label("one file", classes="switch-label")
            yield Switch(True, id="one-file")
            yield Button("Export", id="export", variant="primary")
            yield Button("Delete", id="delete", variant="error")
        yield Label("space marks a poem · Delete removes the marked ones · ctrl+e exports the marked ones (none "
                    "marked: all shown)", classes="hint", id="poems-hint")
        with Horizontal():
            yield DataTable(id="poems-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(classes="poem-view"):
                yield Static("", id="poem-view")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("mark", "id", "from", "run", "first line")  # the date: in the view
        self.reload()

    def on_show(self) -> None:
        self.reload()

    def on_unmount(self) -> None:
        self.commit_pending()

    @on(Input.Changed, "#poem-search")
    def reload(self) -> None:
        query = self.query_one("#poem-search", Input).value
        self.shown = [p for p in self.app.library.search(query) if p.id not in self.pending]
        table = self.query_one(DataTable)
        table.clear()
        for p in self.shown:
            run = run_of_adapter(p.adapter) if p.adapter else None
            run_name = run.name if run is not None else (Path(p.adapter).parent.parent.name if p.adapter else "")
            title = p.title if len(p.title) <= 40 else p.title[:39] + "…"
            table.add_row(Text("[x]" if p.id in self.marked else "[ ]"), str(p.id),
                          Text("tuned", style="bold") if p.adapter else Text("base"), run_name, title,
                          key=str(p.id))

    @on(DataTable.RowHighlighted, "#poems-table")
    def show_poem(self, event: DataTable.RowHighlighted) -> None:
        from poetwb.core.config import describe_sampling

        poem = next((p for p in self.shown if str(p.id) == str(event.row_key.value)), None)
        if poem:
            meta = (f"prompt: {poem.prompt} ({poem.mode})\nmodel: {poem.model}\n"
                    f"adapter: {adapter_label(poem.adapter)}\nform: {poem.form or 'free verse'}\n"
                    f"sampling: {describe_sampling(poem.sampling) or '—'}\nsaved: {poem.created.replace('T', ' ')}"
                    "\n\n")
            self.query_one("#poem-view", Static).update(Text(meta, style="dim") + Text(poem.text))

    def _current_id(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_toggle_mark(self) -> None:
        pid = self._current_id()
        if pid is not None:
            self.marked ^= {pid}
            row = self.query_one(DataTable).cursor_row
            self.reload()
            self.query_one(DataTable).move_cursor(row=row)

    def selection(self) -> list[int]:
        return sorted(self.marked) or [p.id for p in self.shown]

    # --- delete, undo -----------------------------------------------------------------------------------------

    @on(Button.Pressed, "#delete")
    def action_delete(self) -> None:
        from poetwb.tui.widgets.confirm import Confirm

        ids = sorted(self.marked & {p.id for p in self.shown})
        if not ids:
            self.app.notify("nothing is marked, so nothing was deleted: mark poems with space first",
                            severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.remove(ids)

        self.app.push_screen(Confirm(f"Delete {len(ids)} marked poem{'s' * (len(ids) != 1)} from the library? "
                                     f"ctrl+z undoes it for {UNDO_SECONDS:.0f} s."), answered)

    def remove(self, ids: list[int]) -> None:
        self.commit_pending()  # an earlier deletion becomes final
        self.pending = set(ids)
        self.marked -= self.pending
        self.pending_timer = self.set_timer(UNDO_SECONDS, self.commit_pending)
        self.reload()
        self.app.notify(f"deleted {len(ids)} poem{'s' * (len(ids) != 1)} — ctrl+z to undo", timeout=UNDO_SECONDS)

    def action_undo(self) -> None:
        if not self.pending:
            self.app.notify("nothing to undo", severity="warning")
            return
        if self.pending_timer is not None:
            self.pending_timer.stop()
        n, self.pending = len(self.pending), set()
        self.reload()
        self.app.notify(f"restored {n} poem{'s' * (n != 1)}")

    def commit_pending(self) -> None:
        if self.pending_timer is not None:
            self.pending_timer.stop()
            self.pending_timer = None
        if self.pending:
            ids, self.pending = sorted(self.pending), set()
            self.app.library.delete(ids)

    # --- export -----------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#export")
    @on(Input.Submitted, "#export-dir")
    def action_export(self) -> None:
        from poetwb.core.errors import PoetError
        from poetwb.core.library import export_markdown

        folder = Path(self.query_one("#export-dir", Input).value.strip() or DEFAULT_EXPORT).expanduser()
        ids = self.selection()
        if not ids:
            self.app.notify("no poems to export: save some in the Compare pane (F4)", severity="warning")
            return
        try:
            written = export_markdown(self.app.library.get(ids), folder,
                                      one_file=self.query_one("#one-file", Switch).value)
        except PoetError as exc:
            self.app.notify(str(exc), severity="error", timeout=8)
            return
        what = f"{len(ids)} marked poem{'s' * (len(ids) != 1)}" if self.marked else f"all {len(ids)} shown"
        where = written[0].resolve() if len(written) == 1 else f"{folder.resolve()} ({len(written)} files)"
        self.app.notify(f"exported {what} to {where}")
