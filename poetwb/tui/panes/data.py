"""Data pane: choose stage 1's corpus and stage 2's instructions; preview poems and pairs with counts, token
totals and a length histogram."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, SelectionList, Sparkline, Static

from poetwb.tui.messages import DataChosen

CORPUS_KINDS = [("Bundled poets (offline)", "bundled"), ("Local file or folder", "local"),
                ("Hugging Face dataset id", "hf")]
INSTRUCTION_KINDS = [("Synthesised from the corpus (offline)", "synth"),
                     ("poetry-instructions format (User: … Assistant: …)", "conversations"),
                     ("Local .jsonl with prompt/completion", "local"), ("None: stage 1 only", "none")]


class DataPane(Horizontal):
    def __init__(self) -> None:
        super().__init__(id="data-pane")

    def compose(self) -> ComposeResult:
        from poetwb.core.data import BUNDLED_POETS

        with Vertical(classes="form"):
            yield Label("Stage 1 corpus", classes="section")
            yield Select(CORPUS_KINDS, value="bundled", allow_blank=False, id="corpus-kind")
            yield SelectionList[str](*[(desc, name, name == "shakespeare") for name, (_, _, desc)
                                       in BUNDLED_POETS.items()], id="poets")
            yield Input(placeholder="path to .txt/.md/folder/.csv/.jsonl/.parquet, or dataset id", id="corpus-path")
            yield Input(placeholder="poet filter (optional), e.g. Emily Dickinson", id="poet-filter")
            yield Label("Stage 2 instructions", classes="section")
            yield Select(INSTRUCTION_KINDS, value="synth", allow_blank=False, id="instr-kind")
            yield Input(placeholder="instructions file or dataset id", id="instr-path")
            yield Button("Preview", id="preview", variant="primary")
        with VerticalScroll(classes="preview"):
            yield Label("", id="data-counts")
            yield Label("poem length in lines (histogram)", classes="hint")
            yield Sparkline([], id="length-hist")
            yield Static("", id="data-preview")

    def specs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        kind = self.query_one("#corpus-kind", Select).value
        path = self.query_one("#corpus-path", Input).value.strip()
        corpus: dict[str, Any] = {"kind": kind}
        if kind == "bundled":
            corpus["poets"] = list(self.query_one("#poets", SelectionList).selected) or ["shakespeare"]
        elif kind == "local":
            corpus["path"] = path
        else:
            corpus["dataset"] = path
        if flt := self.query_one("#poet-filter", Input).value.strip():
            corpus["poet_filter"] = flt
        ikind = self.query_one("#instr-kind", Select).value
        ipath = self.query_one("#instr-path", Input).value.strip()
        instructions: dict[str, Any] = {"kind": ikind}
        if ikind == "local":
            instructions["path"] = ipath
        elif ikind == "conversations":
            from pathlib import Path

            instructions["path" if Path(ipath).expanduser().exists() else "dataset"] = ipath
        return corpus, instructions

    @on(Select.Changed)
    @on(SelectionList.SelectedChanged)
    @on(Input.Changed)
    def _changed(self) -> None:
        self.query_one("#poets").display = self.query_one("#corpus-kind", Select).value == "bundled"
        corpus, instructions = self.specs()
        self.post_message(DataChosen(corpus, instructions))

    @on(Button.Pressed, "#preview")
    def preview(self) -> None:
        self.query_one("#data-counts", Label).update("loading…")
        self.load_preview(*self.specs(), self.app.base_model)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data")
    def load_preview(self, corpus: dict[str, Any], instructions: dict[str, Any], model: str) -> None:
        from poetwb.core import data, models
        from poetwb.core.config import CorpusSpec, InstructionSpec
        from poetwb.core.errors import PoetError

        try:
            poems = data.load_poems(CorpusSpec(**corpus))
            split = data.split_poems_dataset(poems, 42)
            pairs_text, n_pairs = "", 0
            if instructions["kind"] != "none":
                pairs, report = data.load_pairs(InstructionSpec(**instructions), split, 42)
                n_pairs = report.pairs
                sample = pairs["train"][:2]
                from rich.markup import escape

                pairs_text = "\n\n".join(f"[b]Request:[/b] {escape(p['prompt'])}\n[b]Poem:[/b] "
                                         f"{escape(p['completion'][:300])}" for p in sample)
            from transformers import AutoTokenizer

            _, path = models.resolve(model)
            tok = AutoTokenizer.from_pretrained(path)
            tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in poems["text"])
        except PoetError as exc:
            self.app.call_from_thread(self._error, str(exc))
            return
        lengths = [t.count("\n") + 1 for t in poems["text"]]
        self.app.call_from_thread(self._show, len(poems), len(split["train"]), len(split["val"]), tokens, n_pairs,
                                  lengths, poems["text"][:3], pairs_text)

    def _error(self, message: str) -> None:
        self.query_one("#data-counts", Label).update(f"[red]{message}[/red]")
        self.app.notify(message, severity="error", timeout=8)

    def _show(self, n: int, n_train: int, n_val: int, tokens: int, n_pairs: int, lengths: list[int],
              sample: list[str], pairs_text: str) -> None:
        self.query_one("#data-counts", Label).update(
            f"{n} poems ({n_train} train / {n_val} val), {tokens:,} tokens, {n_pairs} instruction pairs")
        top = max(lengths)
        width = max(1, top // 30 + 1)
        hist = [0] * (top // width + 1)
        for length in lengths:
            hist[length // width] += 1
        self.query_one("#length-hist", Sparkline).data = hist
        from rich.markup import escape

        body = "\n\n".join(f"[b]Poem {i + 1}[/b]\n{escape(t[:400])}" for i, t in enumerate(sample))
        self.query_one("#data-preview", Static).update(body + ("\n\n" + pairs_text if pairs_text else ""))
