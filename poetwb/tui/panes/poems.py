"""Poems pane: the library of saved poems; search, mark, delete, export the marked (or shown) ones to Markdown."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, Static, Switch

from poetwb.core.runs import run_of_adapter


class PoemsPane(Vertical):
    BINDINGS = [
        Binding("space", "toggle_mark", "Mark"),
        Binding("delete", "delete", "Delete marked"),
        Binding("ctrl+e", "export", "Export"),
    ]

    def __init__(self) -> None:
        super().__init__(id="poems-pane")
        self.marked: set[int] = set()
        self.shown: list = []

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Input(placeholder="search poems, prompts, models", id="poem-search")
            yield Input(str(Path.home() / "poems"), id="export-dir")
            yield Label("one file", classes="switch-label")
            yield Switch(True, id="one-file")
            yield Button("Export", id="export", variant="primary")
            yield Button("Delete", id="delete", variant="error")
        with Horizontal():
            yield DataTable(id="poems-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(classes="poem-view"):
                yield Static("", id="poem-view")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(" ", "id", "first line", "model", "adapter", "seed", "saved")
        self.reload()

    def on_show(self) -> None:
        self.reload()

    @on(Input.Changed, "#poem-search")
    def reload(self) -> None:
        query = self.query_one("#poem-search", Input).value
        self.shown = self.app.library.search(query)
        table = self.query_one(DataTable)
        table.clear()
        for p in self.shown:
            run = run_of_adapter(p.adapter) if p.adapter else None
            source = run.name if run is not None else (Path(p.adapter).name if p.adapter else "base")
            table.add_row("✓" if p.id in self.marked else "", str(p.id), p.title, p.model[-30:], source,
                          str(p.seed), p.created, key=str(p.id))

    @on(DataTable.RowHighlighted, "#poems-table")
    def show_poem(self, event: DataTable.RowHighlighted) -> None:
        from rich.text import Text

        poem = next((p for p in self.shown if str(p.id) == str(event.row_key.value)), None)
        if poem:
            meta = f"prompt: {poem.prompt}\nmodel: {poem.model}\nadapter: {poem.adapter or 'base'}\n" \
                   f"sampling: {poem.sampling}\n\n"
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

    @on(Button.Pressed, "#delete")
    def action_delete(self) -> None:
        ids = sorted(self.marked) or ([i] if (i := self._current_id()) is not None else [])
        if not ids:
            self.app.notify("nothing to delete", severity="warning")
            return
        n = self.app.library.delete(ids)
        self.marked -= set(ids)
        self.reload()
        self.app.notify(f"deleted {n} poem(s)")

    @on(Button.Pressed, "#export")
    def action_export(self) -> None:
        from poetwb.core.errors import PoetError
        from poetwb.core.library import export_markdown

        folder = Path(self.query_one("#export-dir", Input).value.strip() or ".")
        try:
            written = export_markdown(self.app.library.get(self.selection()), folder,
                                      one_file=self.query_one("#one-file", Switch).value)
        except PoetError as exc:
            self.app.notify(str(exc), severity="error", timeout=8)
            return
        self.app.notify(f"exported {len(written)} file(s) to {folder}")
