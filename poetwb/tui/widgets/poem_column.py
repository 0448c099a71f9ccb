"""One column of the Compare pane: a title (a model's name, or A/B while a blind test hides it), the poem as it
streams, a footer saying how and why the generation ended, and a Save button reachable by Tab."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Button, Label, Static

LAYOUT_ON_NEW_LINES_ONLY = True
"""False: every update of a streaming poem lays the screen out again (the path before, for benchmarks)."""


class PoemColumn(Vertical):
    """A poem column bound to one model column (`model_index`: 0 is the first model of the layout)."""

    DEFAULT_CSS = """
    PoemColumn { width: 1fr; border: round $primary; padding: 0 1; }
    PoemColumn .column-title { text-style: bold; color: $accent; width: 1fr; }
    PoemColumn .column-foot { color: $text-muted; width: 1fr; }
    PoemColumn VerticalScroll { height: 1fr; }
    PoemColumn Button.save-column { min-width: 8; width: 8; height: 1; border-top: none; border-bottom: none;
                                     margin: 0; padding: 0; }
    PoemColumn Horizontal { height: auto; }
    """

    def __init__(self, model_index: int, title: str, gen: int = 0) -> None:
        # ids carry the generation, so a new set of columns never clashes with the one being removed
        super().__init__(id=f"column-{gen}-{model_index}", classes="column")
        self.model_index = model_index
        self.gen = gen
        self._text = ""
        self._footer = ""
        self._title = title

    def compose(self) -> ComposeResult:
        from textual.containers import Horizontal

        with Horizontal():
            yield Label(self._title, classes="column-title", markup=False)
            yield Button("Save", id=f"save-{self.gen}-{self.model_index}", classes="save-column")
        with VerticalScroll():
            yield Static(self._text, classes="column-text", markup=False)
        yield Label(self._footer, classes="column-foot", markup=False)

    def set_title(self, title: str) -> None:
        self._title = title
        self._show(".column-title", title)

    @property
    def title_text(self) -> str:
        return self._title

    @property
    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        """Show the poem so far. While it streams, the screen is laid out again only when the poem takes another
        line: a layout re-flows every widget on the screen, and on 2 cores doing that for each token slowed the
        decode beside it (benchmarks/bench_tui_stream.py); a token that stays on its line only repaints."""
        self._text = text
        found = self.query(".column-text")
        if not found:
            return
        static = found.first(Static)
        width = static.content_region.width
        lines = static.visual.get_height(static.styles, width) if width else -1
        static.update(text, layout=False)
        if not (width and LAYOUT_ON_NEW_LINES_ONLY) or static.visual.get_height(static.styles, width) != lines:
            static.refresh(layout=True)

    def set_footer(self, text: str) -> None:
        self._footer = text
        self._show(".column-foot", text)

    def _show(self, selector: str, value: str) -> None:
        """Update a child if it is mounted; a column mounted later composes from the stored values."""
        found = self.query(selector)
        if found:
            found.first(Static).update(value)
