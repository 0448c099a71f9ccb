"""The Train pane's Export dialog: which stage, which format and weights type, where, and whether to replace an
existing folder. It only asks; the pane runs the export (core.export) in a worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select

FORMAT_CHOICES = [("GGUF (llama.cpp, LM Studio)", "gguf"), ("Ollama (GGUF + Modelfile)", "ollama"),
                  ("Hugging Face folder (transformers)", "hf")]
QUANT_CHOICES = [("default (f16; hf: f32)", "default"), ("f16", "f16"), ("bf16", "bf16"), ("q8_0 (GGUF)", "q8_0"),
                 ("f32 (hf)", "f32")]
STAGE_CHOICES = [("newest", "newest"), ("stage 1", "1"), ("stage 2", "2")]


def default_output(run_id: str, fmt: str) -> str:
    return str(Path.home() / "poetwb-exports" / f"{run_id}-{fmt}")


class ExportDialog(ModalScreen[dict[str, Any] | None]):
    """Dismisses with {"format", "quant" (None: default), "stage" (None: newest), "output", "force"}, or None."""

    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog > Vertical { width: 84; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    ExportDialog Grid { grid-size: 2; grid-columns: 16 1fr; grid-rows: 3; height: auto; }
    ExportDialog Grid Label { padding: 1 0 0 0; }
    ExportDialog #export-title { margin-bottom: 1; text-style: bold; }
    ExportDialog Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ExportDialog Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Export run {self.run_id}: its adapter merged into the base model", id="export-title")
            with Grid():
                yield Label("format")
                yield Select(FORMAT_CHOICES, value="gguf", allow_blank=False, id="export-format")
                yield Label("weights")
                yield Select(QUANT_CHOICES, value="default", allow_blank=False, id="export-quant")
                yield Label("stage")
                yield Select(STAGE_CHOICES, value="newest", allow_blank=False, id="export-stage")
                yield Label("folder")
                yield Input(default_output(self.run_id, "gguf"), id="export-output")
            yield Checkbox("replace the folder if it exists", id="export-force")
            with Horizontal():
                yield Button("Cancel", id="export-cancel")
                yield Button("Export", id="export-go", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#export-format", Select).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "export-format":
            return
        field = self.query_one("#export-output", Input)
        if any(field.value == default_output(self.run_id, f) for _, f in FORMAT_CHOICES):
            field.value = default_output(self.run_id, str(event.value))  # follow the format unless edited

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "export-go":
            self.dismiss(None)
            return
        quant = str(self.query_one("#export-quant", Select).value)
        stage = str(self.query_one("#export-stage", Select).value)
        self.dismiss({
            "format": str(self.query_one("#export-format", Select).value),
            "quant": None if quant == "default" else quant,
            "stage": None if stage == "newest" else int(stage),
            "output": self.query_one("#export-output", Input).value.strip(),
            "force": self.query_one("#export-force", Checkbox).value,
        })
