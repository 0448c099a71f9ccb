"""PoetApp: the workbench's frame. Heavy work runs in workers that call poetwb.core; nothing here imports torch."""

from __future__ import annotations

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Header, Input, Static

from poetwb import __version__


class PoetApp(App[None]):
    """A minimal workbench: the default model and a prompt box that generates with it."""

    TITLE = "poetwb"
    SUB_TITLE = f"poetry workbench {__version__}"
    CSS_PATH = "app.tcss"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="main"):
            yield Static("Model: bundled SmolLM2-135M-Instruct (offline)", id="model-line")
            yield Input(placeholder="The sea is blue, the sky is red", id="prompt")
            yield Static("", id="poem")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#poem", Static).update("…")
        self.generate_poem(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def generate_poem(self, prompt: str) -> None:
        from poetwb.core import generate, models
        from poetwb.core.config import SamplingConfig
        from poetwb.core.errors import PoetError

        poem = self.query_one("#poem", Static)
        try:
            loaded = models.load(None)
            text = prompt
            for chunk in generate.stream(loaded, prompt, SamplingConfig()):
                text += chunk
                self.call_from_thread(poem.update, text)
        except PoetError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
