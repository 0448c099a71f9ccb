"""Compare pane: one prompt, the base model and up to four fine-tuned runs side by side with the same seed,
sampling and form, on one copy of the base weights; blind A/B votes for any pair; save any column's poem.

The worker only calls core (`generate.columns`) and posts messages tagged with a generation id; the handlers on
the UI thread own every widget and drop chunks of a generation that a newer one replaced."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, SelectionList, Switch

from poetwb.tui.widgets.poem_column import PoemColumn
from poetwb.tui.widgets.slider import Slider
from poetwb.tui.workers import WorkerErrors

MAX_RUNS = 4
TORCH_FP32 = "torch-fp32"
"""The engine select's exact torch: fp32 weights, no int8 copies (core/int8.py)."""
SEED_MAX = 2**63 - 1
PAINT_EVERY = 0.2
"""Seconds between the worker's posts of streamed text (so between repaints of the columns); chunks that arrive in
between are shown together. Posting and painting every token (two columns at ~10 tokens/s each) re-laid the screen
~20 times a second, and on 2 cores that UI work took a core from the decode: measured here (AVX2-only EPYC, torch
int8, bundled model + adapter, one process) 7.0-7.3 tokens/s per column in the pane against 10.6-11.2 for the same
columns with no UI. benchmarks/bench_tui_stream.py prints both, side by side."""


class Batcher:
    """Streamed text per column, handed to `post` at most every PAINT_EVERY seconds. Text that arrives within
    PAINT_EVERY of the last post is posted at that deadline by a timer, not when the next chunk happens to come: the
    columns of a pair get their tokens a moment apart (the second would always wait a whole decode step, seconds
    while other work slows the decode), and a form's prompt lines all come at once, before its first written line.
    Thread-safe: the generation worker adds and flushes, the timer's thread posts."""

    def __init__(self, post: Callable[[int, str], None], every: float | None = None) -> None:
        self._post = post
        self._every = PAINT_EVERY if every is None else every  # read now: the stream benchmark sets it to 0
        self._held: dict[int, str] = {}
        self._lock = threading.Lock()
        self._posted = float("-inf")
        self._timer: threading.Timer | None = None

    def add(self, col: int, text: str) -> None:
        with self._lock:
            self._held[col] = self._held.get(col, "") + text
            wait = self._posted + self._every - time.monotonic()
            if wait <= 0:
                self._flush()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Post what is held now (the worker calls it before it says the generation ended)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._held:
            return
        for col, text in self._held.items():
            self._post(col, text)
        self._held.clear()
        self._posted = time.monotonic()


def load_prompt_set() -> list[dict[str, str]]:
    import tomllib

    from poetwb.core.paths import assets_dir

    return tomllib.loads((assets_dir() / "prompts.toml").read_text(encoding="utf-8"))["prompts"]


@dataclass
class ColumnChunk(Message):
    """Text for one model column of generation `gen`."""

    gen: int
    column: int
    text: str


@dataclass
class GenerationEnded(Message):
    """Generation `gen` finished, was cancelled, or failed (`error` says why)."""

    gen: int
    stats: list[Any] = field(default_factory=list)
    error: str | None = None
    engine: str = ""
    """The engine that wrote the poems (torch or llama.cpp), shown in the columns' footers."""


@dataclass
class ModelColumn:
    """One model column of the current comparison."""

    adapter: str | None
    """The adapter folder, or None for the base model."""
    label: str
    text: str = ""
    stats: Any = None


def parse_seed(raw: str) -> int | None:
    """The seed box: empty means a fresh random seed per generation; else a whole number torch accepts."""
    from poetwb.core.errors import PoetError

    raw = raw.strip()
    if not raw:
        return None
    try:
        seed = int(raw)
    except ValueError as exc:
        raise PoetError(f"seed must be a whole number (or empty for a random one), got {raw!r}") from exc
    if not 0 <= seed <= SEED_MAX:
        raise PoetError(f"seed must be in 0..{SEED_MAX} (or empty for a random one), got {raw}")
    return seed


def footer(stats: Any, form: bool, engine: str = "") -> str:
    """How a column's generation ended, in words, with its speed (and the engine that wrote it)."""
    from poetwb.core.text import tokens

    if stats is None:
        return ""
    speed = f"{tokens(stats.new_tokens)} in {stats.seconds:.1f} s · {stats.tokens_per_s:.1f} tok/s"
    by = stats.by(engine)
    by = f" · {by}" if by else ""
    if stats.reason == "max tokens":
        return f"stopped at max tokens (raise 'max new tokens' for longer poems) · {speed}{by}"
    if form:  # columns write their lines in turn: the seconds are this column's own, not the wait
        held = f" · rhymes {stats.rhymes[0]}/{stats.rhymes[1]}" if stats.rhymes and stats.rhymes[1] else ""
        return (f"{stats.reason}{held} · own {stats.seconds:.1f} s · {tokens(stats.new_tokens)}, "
                f"{stats.tokens_per_s:.1f}/s{by}")
    return f"{stats.reason} · {speed}{by}"


class ComparePane(WorkerErrors, Vertical):
    BINDINGS = [
        Binding("ctrl+s", "save('tuned')", "Save tuned poem"),
        Binding("ctrl+b", "save('base')", "Save base poem"),
        Binding("ctrl+g", "generate", "Generate"),
        Binding("escape", "stop", "Stop", show=False),
        # shown in the pane's own line when blind mode is on, so the footer keeps room for F1-F5
        Binding("f6", "vote('A')", "Vote A", show=False),
        Binding("f7", "vote('B')", "Vote B", show=False),
        Binding("f8", "vote('tie')", "Tie", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="compare-pane")
        self.prompts = load_prompt_set()
        self.cols: list[ModelColumn] = []
        self.order: list[int] = []
        """Display order of the model columns (a random permutation in blind mode)."""
        self.hidden = False
        """True while a blind pair's labels are hidden (until the vote)."""
        self.last: dict[str, Any] = {}
        self.gen = 0
        self._run_labels: list[str] = []
        self.streaming = False
        self.stop = threading.Event()
        self._engine_hint_shown = False

    def compose(self) -> ComposeResult:
        from poetwb.core import forms
        from poetwb.core.config import SamplingConfig

        d = SamplingConfig()
        with Horizontal(classes="row"):
            with Vertical(id="prompt-box"):
                yield Select([(f"{p['mode']}: {p['text']}", i) for i, p in enumerate(self.prompts)],
                             prompt="prompt set", id="prompt-set")
                yield Input(placeholder="type a first line (raw) or a request (instruction), or pick from the set",
                            id="compare-prompt")
            yield SelectionList[str](id="run-list")
        with Horizontal(classes="row", id="compare-switches"):
            yield Label("instruction", classes="switch-label")
            yield Switch(id="instruct")
            yield Label("seed", classes="switch-label")
            yield Input(placeholder="random", type="integer", id="seed", tooltip="empty: a fresh seed each time")
            yield Label("base column", classes="switch-label")
            yield Switch(True, id="with-base")
            yield Label("blind A/B", classes="switch-label")
            yield Switch(id="blind")
            yield Button("Generate", id="generate", variant="primary")
        with Horizontal(classes="row", id="form-row"):
            yield Select([(name, name) for name in forms.FORM_NAMES], value="free", allow_blank=False, id="form")
            yield Input(placeholder="scheme, e.g. ABAB CDCD", id="scheme", disabled=True)
            yield Input(placeholder="syllables: 10 or 8-9 …", id="syllables", disabled=True,
                        tooltip="syllables per line: one number (10), a range (8-9) or one per line (8,8,5,5,8)")
            yield Slider("candidates per line", 1, 16, 1, forms.DEFAULT_CANDIDATES, integer=True, id="candidates")
            yield Select([("engine: auto", "auto"), ("engine: torch", "torch"), ("engine: torch fp32", TORCH_FP32),
                          ("engine: llama.cpp", "llamacpp")],
                         value="auto", allow_blank=False, id="engine",
                         tooltip="auto: llama.cpp when installed (pip install 'poetwb[llamacpp]'), else torch; "
                                 "torch decodes on int8 copies of the weights on CPUs without native bf16, "
                                 "torch fp32 is exact")
        with Horizontal(id="sliders"):
            with Vertical():
                yield Slider("temperature", 0.0, 2.0, 0.05, d.temperature, id="temperature")
                yield Slider("top-p", 0.05, 1.0, 0.05, d.top_p, id="top_p")
                yield Slider("top-k (0 = off)", 0, 200, 1, d.top_k, integer=True, id="top_k")
            with Vertical():
                yield Slider("repetition penalty", 1.0, 2.0, 0.05, d.repetition_penalty, id="repetition_penalty")
                yield Slider("max new tokens", 16, 512, 16, d.max_new_tokens, integer=True, id="max_new_tokens")
        yield Label("", id="vote-tally")
        yield Horizontal(id="columns")

    def on_mount(self) -> None:
        self.refresh_adapters()
        self.show_columns([ModelColumn(None, "base model"), ModelColumn("", "fine-tuned")])

    def on_show(self) -> None:
        self.refresh_adapters()

    # --- choices ----------------------------------------------------------------------------------------------

    def refresh_adapters(self) -> None:
        """The runs list: each finished stage of each run; keeps the user's picks, else picks the newest."""
        from poetwb.core import runs

        options = []
        for r in runs.list_runs():
            folder = runs.paths.run_dir(r.run_id)
            poets = ""
            try:
                cfg = runs.read_config(folder)
                poets = ", ".join(cfg.corpus.poets) if cfg.corpus.kind == "bundled" else cfg.corpus.kind
            except Exception:  # a damaged config still lists the run
                poets = "?"
            for stage in (2, 1):
                if runs.has_adapter(folder, stage):
                    options.append((f"{r.run_id} · stage {stage} · {poets}", str(runs.adapter_dir(folder, stage))))
        lst = self.query_one("#run-list", SelectionList)
        picked = [v for v in lst.selected if any(v == o for _, o in options)]
        if [o for _, o in options] == [lst.get_option_at_index(i).value for i in range(lst.option_count)]:
            return
        lst.clear_options()
        if options and not picked:
            picked = [options[0][1]]
        self._run_labels = [label for label, _ in options]
        lst.add_options([(label, value, value in picked) for label, value in options])
        lst.border_title = "fine-tuned runs (space picks, up to 4)" if options else "no fine-tuned runs yet (F3)"
        self.mark_runs()

    @on(SelectionList.SelectedChanged, "#run-list")
    def mark_runs(self) -> None:
        """✓ before each picked run: the toggle's colour alone is easy to miss."""
        lst = self.query_one("#run-list", SelectionList)
        picked = set(lst.selected)
        for i, label in enumerate(self._run_labels):
            chosen = lst.get_option_at_index(i).value in picked
            lst.replace_option_prompt_at_index(i, f"{'✓' if chosen else ' '} {label}")

    @on(Select.Changed, "#prompt-set")
    def use_prompt(self, event: Select.Changed) -> None:
        if not isinstance(event.value, int):  # cleared
            return
        p = self.prompts[event.value]
        self.query_one("#compare-prompt", Input).value = p["text"]
        self.query_one("#instruct", Switch).value = p["mode"] == "instruct"

    @on(Select.Changed, "#form")
    def form_changed(self, event: Select.Changed) -> None:
        # another form starts from its own scheme and syllables: a value typed for the last one would carry over
        for name, disabled in (("#scheme", event.value != "custom"), ("#syllables", event.value == "free")):
            field = self.query_one(name, Input)
            field.value = ""
            field.disabled = disabled

    def sampling(self) -> Any:
        from poetwb.core.config import SamplingConfig

        values = {s.id: s.value for s in self.query(Slider)}
        seed = parse_seed(self.query_one("#seed", Input).value)
        if seed is None:
            seed = random.randrange(2**31)
        return SamplingConfig(temperature=values["temperature"], top_p=values["top_p"], top_k=int(values["top_k"]),
                              repetition_penalty=values["repetition_penalty"],
                              max_new_tokens=int(values["max_new_tokens"]), seed=seed)

    def form(self) -> Any:
        from poetwb.core import forms

        name = str(self.query_one("#form", Select).value)
        scheme = self.query_one("#scheme", Input).value.strip() if name == "custom" else None
        syllables = self.query_one("#syllables", Input).value.strip() or None
        return forms.make_form(name, scheme, syllables if name != "free" else None)

    # --- generating -------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#generate")
    @on(Input.Submitted, "#compare-prompt")
    def action_generate(self) -> None:
        from poetwb.core import llamacpp, runs
        from poetwb.core.errors import PoetError

        prompt = self.query_one("#compare-prompt", Input).value
        adapters = list(self.query_one("#run-list", SelectionList).selected)
        with_base = self.query_one("#with-base", Switch).value
        blind = self.query_one("#blind", Switch).value
        try:
            if not prompt.strip():
                raise PoetError("the prompt is empty: type a first line, or pick one from the prompt set")
            sampling = self.sampling()
            form = self.form()
            asked = str(self.query_one("#engine", Select).value)
            dtype = "fp32" if asked == TORCH_FP32 else "auto"
            asked = "torch" if asked == TORCH_FP32 else asked
            engine = llamacpp.choose(asked, form)
            if len(adapters) > MAX_RUNS:
                raise PoetError(f"pick at most {MAX_RUNS} runs to compare (now {len(adapters)})")
            bases = {runs.read_config(f).model for a in adapters if (f := runs.run_of_adapter(a)) is not None}
            if len(bases) > 1:
                raise PoetError("the picked runs were trained on different base models; pick runs of one model")
            if not with_base and not adapters:
                raise PoetError("nothing to compare: turn on the base column or pick a run")
            if blind and len(adapters) + with_base != 2:
                raise PoetError("blind A/B needs exactly two columns: the base and one run, or two runs "
                                "with the base column off")
        except PoetError as exc:
            self.app.notify(str(exc), severity="error")
            return
        if not adapters:
            self.app.notify("no fine-tuned run picked: showing the base model only (train one with F3)",
                            severity="warning")
        if blind and self.query_one("#seed", Input).value.strip():
            self.app.notify("blind A/B with a fixed seed repeats the same poems for a prompt, so a side can be "
                            "recognised; empty the seed box for a fresh seed each round", severity="warning")
        if asked == "auto" and not llamacpp.installed() and not self._engine_hint_shown:
            self._engine_hint_shown = True  # once per session: where the faster engine comes from
            self.app.notify(f"generating on torch; several times faster with llama.cpp: {llamacpp.INSTALL_HINT}",
                            timeout=8)
        model = bases.pop() if bases else self.app.base_model
        instruct = self.query_one("#instruct", Switch).value
        cols = ([ModelColumn(None, "base model")] if with_base else []) + [
            ModelColumn(a, self._label(a)) for a in adapters]
        self.stop.set()
        self.stop = threading.Event()
        self.gen += 1
        self.last = {"prompt": prompt, "mode": "instruct" if instruct else "raw", "sampling": sampling.to_dict(),
                     "seed": sampling.seed, "model": model, "form": form.describe() if form else "",
                     "gen": self.gen}
        self.hidden = blind
        self.show_columns(cols, shuffle=blind)
        from poetwb.core import bundled

        first = model in bundled.BUNDLED_ALIASES and not bundled.is_converted()
        note = "converting the bundled model once (about 40 s), then generating…" if first else "loading the model…"
        for i in range(len(cols)):
            if (widget := self._widget(i)) is not None:
                widget.set_text(note)
        self.query_one("#vote-tally", Label).update(
            f"seed {sampling.seed}" + (f" · {form.describe()}" if form else "")
            + (" · blind: vote with F6 (A), F7 (B) or F8 (tie) when both poems are done" if blind else ""))
        self.streaming = True
        candidates = int(self.query_one("#candidates", Slider).value)
        self.run_generation(self.gen, model, adapters, with_base, prompt, instruct, sampling, form, candidates,
                            self.stop, (asked, engine), dtype)

    def _label(self, adapter: str) -> str:
        from poetwb.core import runs

        folder = runs.run_of_adapter(adapter)
        if folder is None:
            return adapter
        stage = "stage 2" if adapter.rstrip("/").endswith("stage2") else "stage 1"
        try:
            cfg = runs.read_config(folder)
            poets = ", ".join(cfg.corpus.poets) if cfg.corpus.kind == "bundled" else cfg.corpus.kind
        except Exception:
            poets = "?"
        return f"{folder.name} · {stage} · {poets}"

    def show_columns(self, cols: list[ModelColumn], shuffle: bool = False) -> None:
        """Replace the columns: one per model, in display order (random while a blind pair hides its labels)."""
        self.cols = cols
        self.order = list(range(len(cols)))
        if shuffle:
            random.shuffle(self.order)
        box = self.query_one("#columns", Horizontal)
        box.remove_children()
        box.mount_all([PoemColumn(i, self._title(i), self.gen) for i in self.order])

    def _title(self, model_index: int) -> str:
        side = "AB"[self.order.index(model_index)] if len(self.order) == 2 else ""
        if self.hidden:
            return side
        label = self.cols[model_index].label
        return f"{side} · {label}" if side and self.last.get("voted") else label

    def _widget(self, model_index: int) -> PoemColumn | None:
        found = self.query(f"#column-{self.gen}-{model_index}")
        return found.first(PoemColumn) if found else None

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def run_generation(self, gen: int, model: str, adapters: list[str], with_base: bool, prompt: str,
                       instruct: bool, sampling: Any, form: Any, candidates: int, stop: threading.Event,
                       engine: tuple[str, str] = ("auto", "torch"), dtype: str = "auto") -> None:
        from poetwb.core import generate

        stats: list[Any] = []
        name = "llama.cpp" if engine[1] == "llamacpp" else "torch"
        # a few posts a second instead of one per token: the UI thread's work is the decode's loss on 2 cores
        batch = Batcher(lambda col, text: self.post_message(ColumnChunk(gen, col, text)))
        try:
            runner = self.app.load_engine(model, tuple(adapters), engine[0]) if engine[1] == "llamacpp" else None
            runner = runner or self.app.load_model(model, tuple(adapters), dtype)
            name = generate.engine_name(runner)
            for col, chunk in generate.runner_columns(runner, prompt, sampling, with_base, instruct, form,
                                                      candidates, cancel=stop, stats=stats):
                batch.add(col, chunk)
            batch.flush()
            self.post_message(GenerationEnded(gen, stats, engine=name))
        except Exception as exc:  # every failure reaches the user, whatever its type
            from poetwb.core.errors import first_line

            batch.flush()
            self.post_message(GenerationEnded(gen, stats, first_line(exc), engine=name))

    def shown(self, index: int) -> str:
        """A model column's whole poem as shown, voted on and saved: in raw mode the prompt is its first line. No
        control character a model emits reaches the screen or the library (core.text.safe_text)."""
        from poetwb.core.text import safe_text

        text = self.cols[index].text
        return safe_text(self.last["prompt"] + text if self.last.get("mode") == "raw" else text.strip("\n"))

    @on(ColumnChunk)
    def add_chunk(self, event: ColumnChunk) -> None:
        if event.gen != self.gen or event.column >= len(self.cols):
            return  # a replaced generation's late text
        self.cols[event.column].text += event.text
        if (widget := self._widget(event.column)) is not None:
            widget.set_text(self.shown(event.column))  # columns' messages that arrive together share one layout

    @on(GenerationEnded)
    def generation_ended(self, event: GenerationEnded) -> None:
        if event.gen != self.gen:
            return
        self.streaming = False
        self.last["sampling"]["engine"] = event.engine  # kept with a saved poem and a vote: which engine wrote it
        # what the decode itself says (a stop that came after the last token stopped nothing): a row it did not
        # finish is "cancelled", and one stopped while the model loaded has no stats at all
        stopped = any(st.reason == "cancelled" for st in event.stats) or len(event.stats) < len(self.cols)
        # a blind vote is on two whole poems: not on a pair stopped halfway, failed or with an empty side
        self.last["complete"] = not event.error and not stopped and all(c.text.strip() for c in self.cols)
        void = self.hidden and not self.last["complete"]  # it takes no vote, so nothing is hidden: show the sides
        if void:
            self.last["void"] = True
            self.query_one("#vote-tally", Label).update(
                f"seed {self.last['seed']} · this pair did not finish, so it takes no vote: generate a new one")
        if event.error:
            self.app.notify(f"generation failed: {event.error}", severity="error", timeout=10)
        elif (self.last.get("mode") == "raw" and not stopped
              and any(st.reason == "end of text" and st.new_tokens <= 2 for st in event.stats)):
            # raw mode continues the text as a poem's first line: a request ("Write a poem about…") often ends it
            self.app.notify("a model ended the text at once: for a request such as \"Write a poem about the "
                            "sea\", turn on the 'instruction' switch; in raw mode, type a poem's first line",
                            severity="warning", timeout=10)
        for i, col in enumerate(self.cols):
            col.stats = event.stats[i] if i < len(event.stats) else None
            widget = self._widget(i)
            if widget is None:
                continue
            if event.error and not col.text:
                widget.set_text(f"(no poem: {event.error})")
            elif not col.text:  # the "loading…" note is not a poem (a raw column's poem is its first line)
                lead = self.shown(i) + "\n" if self.last.get("mode") == "raw" else ""
                cut = col.stats.reason == "cancelled" if col.stats is not None else stopped
                widget.set_text(lead + ("(stopped before the first word)" if cut else "(the model wrote nothing)"))
        if void:
            self._reveal()
        else:
            self._footers()

    def _reveal(self) -> None:
        """A blind pair's sides: titles re-set in place (the texts stay where they are), footers with speeds."""
        self.hidden = False
        for widget in self.query(PoemColumn):
            widget.set_title(self._title(widget.model_index))
        self._footers()

    def _footers(self) -> None:
        """Each column's ending and speed; while a blind pair hides its labels, the ending alone (a LoRA column
        decodes slower than the base: its speed would tell which poem is which)."""
        from poetwb.core.text import tokens

        for i, col in enumerate(self.cols):
            if (widget := self._widget(i)) is None:
                continue
            if self.hidden and col.stats is not None:
                widget.set_footer(f"{col.stats.reason} · {tokens(col.stats.new_tokens)} · speed shown after the vote")
            else:
                widget.set_footer(footer(col.stats, bool(self.last.get("form")), self.last["sampling"]["engine"]))

    def action_stop(self) -> None:
        if self.streaming:
            self.stop.set()
            self.app.notify("stopping the generation")

    # --- judging and keeping ----------------------------------------------------------------------------------

    def action_vote(self, choice: str) -> None:
        from poetwb.core.runs import run_of_adapter
        from poetwb.core.votes import Votes

        if not self.hidden:
            self.app.notify("you voted on this pair already; generate a new pair (ctrl+g) to vote again"
                            if self.last.get("voted") else
                            "this pair did not finish (stopped, failed or empty), so it takes no vote and its sides "
                            "are shown; generate a new pair (ctrl+g)" if self.last.get("void") else
                            "turn on blind A/B and generate a pair first", severity="warning")
            return
        if self.streaming:
            self.app.notify("wait until both poems are finished before voting", severity="warning")
            return
        a, b = self.order  # model columns shown as A and B
        challenger = 1  # the second model column is the tuned run (or the second run)

        def run_name(i: int) -> str:  # a run's adapter as run/stageN: stage 1 and stage 2 are tallied apart
            adapter = self.cols[i].adapter
            if adapter is None:
                return "base"
            folder = run_of_adapter(adapter)
            return f"{folder.name}/{Path(adapter).name}" if folder is not None else adapter

        run_id = run_name(1) if self.cols[0].adapter is None else f"{run_name(1)} vs {run_name(0)}"
        tuned_side = "A" if a == challenger else "B"
        votes = Votes()
        try:
            # the settings say under what the pair was written: sampling and engine, the form, raw or instruction
            settings = {**self.last["sampling"], "form": self.last["form"] or "free", "mode": self.last["mode"]}
            votes.add(run_id, self.last["prompt"], self.shown(a), self.shown(b), tuned_side, choice, settings,
                      seed=self.last["seed"])
            tally = votes.tally(run_id)
        finally:
            votes.close()
        lo, hi = tally.interval
        picked = a if choice == "A" else b
        chosen = "a tie" if choice == "tie" else "the base model" if self.cols[picked].adapter is None \
            else run_name(picked)  # short: the tally follows on the same line
        other = "base" if self.cols[0].adapter is None else run_name(0)
        self.query_one("#vote-tally", Label).update(
            f"You chose {chosen}. {run_id}: wins {tally.tuned}, {other} wins {tally.base}, ties {tally.ties}"
            f" — win rate {tally.win_rate:.0%} (95 % CI {lo:.0%}–{hi:.0%})")
        self.last["voted"] = True
        self._reveal()

    def action_save(self, which: str) -> None:
        index = next((i for i, c in enumerate(self.cols) if (c.adapter is None) == (which == "base")), None)
        if index is None:
            self.app.notify(f"there is no {which} column in this comparison", severity="warning")
            return
        self.save_column(index)

    @on(Button.Pressed, ".save-column")
    def save_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.save_column(int(str(event.button.id).rsplit("-", 1)[1]))

    def save_column(self, index: int) -> None:
        from poetwb.core.errors import PoetError
        from poetwb.core.library import Poem

        col = self.cols[index]
        if not col.text.strip() or not self.last:
            self.app.notify("nothing to save yet: generate first", severity="warning")
            return
        if self.hidden:
            self.app.notify("vote first (F6/F7/F8): saving now would tell which poem is which", severity="warning")
            return
        saved = self.last.setdefault("saved", {})
        if index in saved and self.app.library.get([saved[index]]):  # (deleted since: it is saved again)
            self.app.notify(f"this poem is in the library already (poem {saved[index]})", severity="warning")
            return
        poem = Poem(text=self.shown(index).rstrip(), prompt=self.last["prompt"], model=self.last["model"],
                    mode=self.last["mode"], adapter=col.adapter or "", sampling=self.last["sampling"],
                    seed=self.last["seed"], form=self.last["form"])
        try:
            saved[index] = self.app.library.add(poem).id
        except PoetError as exc:
            self.app.notify(str(exc), severity="error")
            return
        self.app.notify(f"saved the poem of {col.label} to the library (poem {saved[index]})")
