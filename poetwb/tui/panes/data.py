"""Data pane: choose stage 1's corpus and stage 2's instructions; preview poems and pairs with counts, token
totals and a length histogram with labelled axes. Previewed poems are cut at line ends, and the chosen poets are
marked in plain text (✓), not only by colour."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, SelectionList, Sparkline, Static

from poetwb.tui.messages import DataChosen
from poetwb.tui.workers import WorkerErrors

CORPUS_KINDS = [("Bundled poets (offline)", "bundled"), ("Local file or folder", "local"),
                ("Hugging Face dataset id", "hf")]
INSTRUCTION_KINDS = [("Synthesised from the corpus (offline)", "synth"),
                     ("poetry-instructions format (User: … Assistant: …)", "conversations"),
                     ("Local .jsonl with prompt/completion", "local"), ("None: stage 1 only", "none")]


def clip_lines(text: str, limit: int) -> str:
    """The first lines of text that fit in limit characters, cut at a line end (or, for one long line, at a word),
    with a note of how much is left out."""
    lines = text.splitlines()
    kept: list[str] = []
    used = 0
    for line in lines:
        if kept and used + len(line) > limit:
            break
        kept.append(line)
        used += len(line) + 1
    if len(kept[0] if kept else "") > limit:  # one long first line: cut it between words
        kept[0] = kept[0][:limit].rsplit(" ", 1)[0] + " …"
    rest = len(lines) - len(kept)
    return "\n".join(kept) + (f"\n… ({rest} more line{'s' * (rest != 1)})" if rest else "")


class DataPane(WorkerErrors, Horizontal):
    WORKER_WHAT = {"data": "the data preview"}

    def worker_failed(self, group: str, message: str) -> None:
        if group == "data":  # out of "loading…"; the notification has already said why
            from rich.markup import escape

            self.query_one("#data-counts", Label).update(f"[red]preview failed: {escape(message)}[/red]")

    def __init__(self) -> None:
        super().__init__(id="data-pane")

    def compose(self) -> ComposeResult:
        from poetwb.core.data import BUNDLED_POETS

        with Vertical(classes="form"):
            yield Label("Stage 1 corpus", classes="section")
            yield Select(CORPUS_KINDS, value="bundled", allow_blank=False, id="corpus-kind")
            yield SelectionList[str](*[(self.poet_prompt(desc, name == "shakespeare"), name, name == "shakespeare")
                                       for name, (_, _, desc) in BUNDLED_POETS.items()], id="poets")
            yield Label("", id="poets-chosen", classes="hint")
            yield Input(placeholder="path to .txt/.md/folder/.csv/.jsonl/.parquet, or dataset id", id="corpus-path")
            yield Input(placeholder="poet filter (optional), e.g. Emily Dickinson", id="poet-filter")
            yield Label("Stage 2 instructions", classes="section")
            yield Select(INSTRUCTION_KINDS, value="synth", allow_blank=False, id="instr-kind")
            yield Input(placeholder="instructions file or dataset id", id="instr-path")
            yield Button("Preview", id="preview", variant="primary")
        with VerticalScroll(classes="preview"):
            yield Label("", id="data-counts")
            yield Label("poems by length", classes="hint", id="hist-title")
            yield Sparkline([], id="length-hist")
            with Horizontal(id="hist-axis"):
                yield Label("", id="hist-min")
                yield Label("", id="hist-label")
                yield Label("", id="hist-max")
            yield Static("", id="data-preview")

    @staticmethod
    def poet_prompt(desc: str, chosen: bool) -> str:
        return f"{'✓' if chosen else ' '} {desc}"

    def on_mount(self) -> None:
        self.query_one("#hist-axis").display = False
        self.mark_poets()

    def mark_poets(self) -> None:
        """✓ before each chosen poet and their names spelled out below: the toggle's colour alone is easy to miss."""
        from poetwb.core.data import BUNDLED_POETS

        poets = self.query_one("#poets", SelectionList)
        chosen = set(poets.selected)
        for i, (name, (_, _, desc)) in enumerate(BUNDLED_POETS.items()):
            poets.replace_option_prompt_at_index(i, self.poet_prompt(desc, name in chosen))
        names = [BUNDLED_POETS[n][2] for n in BUNDLED_POETS if n in chosen]
        self.query_one("#poets-chosen", Label).update(
            "chosen: " + ", ".join(names) if names else "none chosen: Shakespeare's sonnets are used")

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
    def _changed(self, event: Select.Changed | SelectionList.SelectedChanged | Input.Changed) -> None:
        bundled = self.query_one("#corpus-kind", Select).value == "bundled"
        self.query_one("#poets").display = self.query_one("#poets-chosen").display = bundled
        if isinstance(event, SelectionList.SelectedChanged):
            self.mark_poets()
        corpus, instructions = self.specs()
        self.post_message(DataChosen(corpus, instructions))

    @on(Button.Pressed, "#preview")
    @on(Input.Submitted)  # Enter in a path or filter box previews what it names
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
                                         f"{escape(clip_lines(p['completion'], 300))}" for p in sample)
            from poetwb.core import bundled
            from poetwb.core.hf import load_tokenizer

            if model.strip() in bundled.BUNDLED_ALIASES and not bundled.is_converted():  # its tokenizer counts tokens
                self.app.call_from_thread(self._note, f"{bundled.CONVERT_NOTE} (its tokenizer counts the tokens)…")
            _, path = models.resolve(model)
            tok = load_tokenizer(path)
            tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in poems["text"])
        except PoetError as exc:
            self.app.call_from_thread(self._error, str(exc))
            return
        lengths = [t.count("\n") + 1 for t in poems["text"]]
        self.app.call_from_thread(self._show, len(poems), len(split["train"]), len(split["val"]), tokens, n_pairs,
                                  lengths, poems["text"][:3], pairs_text)

    def _note(self, message: str) -> None:
        self.query_one("#data-counts", Label).update(message)

    def _error(self, message: str) -> None:
        from rich.markup import escape

        self.query_one("#data-counts", Label).update(f"[red]{escape(message)}[/red]")
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
        self.query_one("#hist-title", Label).update(
            f"poems by length, {width} line{'s' * (width != 1)} per bar (tallest bar: {max(hist)} poems)")
        self.query_one("#hist-min", Label).update("0 lines")
        self.query_one("#hist-label", Label).update("poem length →")
        self.query_one("#hist-max", Label).update(f"{top} lines")
        self.query_one("#hist-axis").display = True
        from rich.markup import escape

        body = "\n\n".join(f"[b]Poem {i + 1}[/b]\n{escape(clip_lines(t, 400))}" for i, t in enumerate(sample))
        self.query_one("#data-preview", Static).update(body + ("\n\n" + pairs_text if pairs_text else ""))
