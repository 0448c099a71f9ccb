"""PoetApp: the workbench's frame — five panes, key bindings, the command palette, and shared state (the picked
base model, the data choices, the poem library, loaded models). Nothing here imports torch at start-up.

F1–F5 are priority bindings: they switch panes whatever has focus (an Input would otherwise keep them), and focus
moves to the new pane's first useful control, so Enter on a row or typing a prompt needs no Tab first."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from poetwb import __version__
from poetwb.core.library import Library
from poetwb.tui.messages import DataChosen, ModelPicked

PANES = [("models", "Models", "f1"), ("data", "Data", "f2"), ("train", "Train", "f3"), ("compare", "Compare", "f4"),
         ("poems", "Poems", "f5")]
# the control that takes focus when a pane is shown
FIRST_CONTROL = {"models": "#model-table", "data": "#corpus-kind", "train": "#preset", "compare": "#compare-prompt",
                 "poems": "#poem-search"}


class PoetApp(App[None]):
    """The poetry workbench."""

    TITLE = "poetwb"
    SUB_TITLE = f"poetry workbench {__version__}"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        *(Binding(key, f"show('{pane}')", title, priority=True) for pane, title, key in PANES),
        Binding("escape", "hide_help_panel", "Close keys", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, base_model: str = "bundled") -> None:
        super().__init__()
        self.base_model = base_model
        self.corpus: dict[str, Any] = {}
        self.instructions: dict[str, Any] = {}
        self._library: Library | None = None
        self._models: dict[str, tuple[tuple[Any, ...], Any]] = {}
        """Per engine (torch, llamacpp), the one model kept loaded: ((model, adapters), LoadedModel or Engine)."""
        self._models_lock = threading.Lock()

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = Library()
        return self._library

    def compose(self) -> ComposeResult:
        from textual.lazy import Lazy

        from poetwb.tui.panes.compare import ComparePane
        from poetwb.tui.panes.data import DataPane
        from poetwb.tui.panes.models import ModelsPane
        from poetwb.tui.panes.poems import PoemsPane
        from poetwb.tui.panes.train import TrainPane

        yield Header()
        with TabbedContent(initial="models"):
            with TabPane("Models", id="models"):
                yield ModelsPane()
            # the hidden panes mount just after the first frame, so the first screen shows sooner
            with TabPane("Data", id="data"):
                yield Lazy(DataPane())
            with TabPane("Train", id="train"):
                yield Lazy(TrainPane())
            with TabPane("Compare", id="compare"):
                yield Lazy(ComparePane())
            with TabPane("Poems", id="poems"):
                yield Lazy(PoemsPane())
        yield Footer()

    def on_mount(self) -> None:
        self.focus_first_control("models")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show":  # not from inside a dialog or the command palette: they stay on top
            return len(self.screen_stack) == 1
        if action == "hide_help_panel":  # Escape closes the keys panel when it is open, else means nothing here
            return bool(self.screen.query("HelpPanel"))
        return True

    def action_show(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane
        self.focus_first_control(pane)

    def focus_first_control(self, pane: str, attempts: int = 50) -> None:
        """Focus the pane's first useful control once it exists (hidden panes mount lazily after the first frame)."""
        if self.query_one(TabbedContent).active != pane or len(self.screen_stack) > 1:
            return  # the user has moved on
        found = self.query(f"#{pane} {FIRST_CONTROL[pane]}")
        if found:
            found.first().focus()
        elif attempts:
            self.set_timer(0.05, lambda: self.focus_first_control(pane, attempts - 1))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for pane, title, key in PANES:
            yield SystemCommand(f"Show {title}", f"Switch to the {title} pane ({key.upper()})",
                                lambda p=pane: self.action_show(p))
        yield SystemCommand("Start training", "Launch the two-stage job with the Train pane's settings",
                            lambda: (self.action_show("train"), self.query_one("#start").press()))
        yield SystemCommand("Generate side by side", "Base vs fine-tuned for the Compare pane's prompt",
                            lambda: (self.action_show("compare"), self.query_one("#generate").press()))
        yield SystemCommand("Export poems", "Export the marked poems to Markdown",
                            lambda: (self.action_show("poems"), self.query_one("#export").press()))

    @on(ModelPicked)
    def model_picked(self, event: ModelPicked) -> None:
        self.base_model = event.model_id
        self.sub_title = f"base model: {event.model_id}"
        self.notify(f"base model: {event.model_id}")
        self._inputs_changed()

    @on(DataChosen)
    def data_chosen(self, event: DataChosen) -> None:
        self.corpus, self.instructions = event.corpus, event.instructions
        self._inputs_changed()

    def _inputs_changed(self) -> None:
        for pane in self.query("#train-pane"):  # it says what Start will train on
            pane.show_inputs()  # type: ignore[attr-defined]
            pane.clear_stale_error()  # type: ignore[attr-defined]

    def say(self, message: str, **kwargs: Any) -> None:
        """notify() from the UI thread or from a worker thread."""
        if threading.get_ident() == self._thread_id:
            self.notify(message, **kwargs)
        else:
            self.call_from_thread(self.notify, message, **kwargs)

    def load_model(self, model: str, adapters: tuple[str, ...] = (), dtype: str = "auto") -> Any:
        """Load (once) and cache a model with its adapters (one copy of the base weights for all of them);
        called from worker threads. A first load says what it is doing first (converting the bundled model takes
        ~40 s once; a load takes seconds). dtype as models.load (fp32: the exact torch engine)."""
        from poetwb.core import models

        def load() -> Any:
            extra = "" if not adapters else " and its adapter" if len(adapters) == 1 else " and its adapters"
            self.say(models.loading_note(model) + extra + "…", timeout=8)
            return models.load(model, adapters=list(adapters), dtype=dtype)

        return self._kept("torch", (model, adapters, dtype), load)

    def load_engine(self, model: str, adapters: tuple[str, ...] = (), asked: str = "auto") -> Any:
        """The llama.cpp engine for a model and its adapters, loaded once and cached like load_model; None where
        auto falls back to torch (a model or adapter llama.cpp cannot run). Called from worker threads."""
        from pathlib import Path

        from poetwb.core import llamacpp

        def load() -> Any:
            self.say("loading the model for llama.cpp…", timeout=8)
            return llamacpp.engine_for(
                asked, model, [Path(a) for a in adapters], note=lambda text: self.say(text, timeout=10),
                on_fallback=lambda exc: self.say(f"llama.cpp cannot run this model ({exc}); using torch", timeout=8))

        # auto fell back to torch for this model before: asked for by name, llama.cpp is tried again
        return self._kept("llamacpp", (model, adapters), load, retry_none=asked == "llamacpp")

    def _kept(self, engine: str, key: tuple[Any, ...], load: Any, retry_none: bool = False) -> Any:
        """The one model kept in memory per engine: load's result for key, loaded once (a new key replaces it)."""
        with self._models_lock:
            held = self._models.get(engine)
            if held is None or held[0] != key or (retry_none and held[1] is None):
                self._models.pop(engine, None)  # the old one goes before the new one loads
                self._models[engine] = (key, load())
            return self._models[engine][1]

    def on_unmount(self) -> None:
        for pane in self.query("#poems-pane"):  # a deletion still undoable becomes final before the library closes
            pane.commit_pending()  # type: ignore[attr-defined]
        if self._library is not None:
            self._library.close()
