"""Compare pane: one prompt, base vs fine-tuned side by side with the same seed and sampling, streaming into both
columns from one batched generate call; sliders for the sampling settings; save a poem to the library."""

from __future__ import annotations

import threading
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static, Switch

from poetwb.tui.widgets.slider import Slider


def load_prompt_set() -> list[dict[str, str]]:
    import tomllib

    from poetwb.core.paths import assets_dir

    return tomllib.loads((assets_dir() / "prompts.toml").read_text(encoding="utf-8"))["prompts"]


class ComparePane(Vertical):
    BINDINGS = [
        Binding("ctrl+s", "save('tuned')", "Save tuned poem"),
        Binding("ctrl+b", "save('base')", "Save base poem"),
        Binding("ctrl+g", "generate", "Generate"),
        Binding("f6", "vote('A')", "Vote A"),
        Binding("f7", "vote('B')", "Vote B"),
        Binding("f8", "vote('tie')", "Tie"),
    ]

    def __init__(self) -> None:
        super().__init__(id="compare-pane")
        self.prompts = load_prompt_set()
        self.texts = {"base": "", "tuned": ""}
        self.last: dict[str, Any] = {}
        self.stop = threading.Event()
        self.blind_sides: tuple[str, str] | None = None

    def compose(self) -> ComposeResult:
        from poetwb.core.config import SamplingConfig

        d = SamplingConfig()
        with Horizontal(classes="row"):
            yield Select([(f"{p['mode']}: {p['text']}", i) for i, p in enumerate(self.prompts)], prompt="prompt set",
                         id="prompt-set")
            yield Select([], prompt="fine-tuned run", id="adapter-select")
        with Horizontal(classes="row"):
            yield Input(placeholder="The sea is blue, the sky is red", id="compare-prompt")
            yield Label("instruction", classes="switch-label")
            yield Switch(id="instruct")
            yield Input(str(d.seed), type="integer", id="seed")
            yield Label("blind A/B", classes="switch-label")
            yield Switch(id="blind")
            yield Button("Generate", id="generate", variant="primary")
        with Horizontal(id="sliders"):
            with Vertical():
                yield Slider("temperature", 0.0, 2.0, 0.05, d.temperature, id="temperature")
                yield Slider("top-p", 0.05, 1.0, 0.05, d.top_p, id="top_p")
                yield Slider("top-k (0 = off)", 0, 200, 1, d.top_k, integer=True, id="top_k")
            with Vertical():
                yield Slider("repetition penalty", 1.0, 2.0, 0.05, d.repetition_penalty, id="repetition_penalty")
                yield Slider("max new tokens", 16, 512, 16, d.max_new_tokens, integer=True, id="max_new_tokens")
        yield Label("", id="vote-tally")
        with Horizontal(id="columns"):
            with VerticalScroll(classes="column"):
                yield Label("base model", classes="column-title", id="base-title")
                yield Static("", id="base-text")
            with VerticalScroll(classes="column"):
                yield Label("fine-tuned", classes="column-title", id="tuned-title")
                yield Static("", id="tuned-text")

    def on_mount(self) -> None:
        self.refresh_adapters()

    def on_show(self) -> None:
        self.refresh_adapters()

    def refresh_adapters(self) -> None:
        from poetwb.core import runs

        options = []
        for r in runs.list_runs():
            folder = runs.paths.run_dir(r.run_id)
            for stage in (2, 1):
                if runs.has_adapter(folder, stage):
                    options.append((f"{r.run_id} · stage {stage}", str(runs.adapter_dir(folder, stage))))
        select = self.query_one("#adapter-select", Select)
        current = select.value
        select.set_options(options)
        if options:
            select.value = current if any(v == current for _, v in options) else options[0][1]

    @on(Select.Changed, "#prompt-set")
    def use_prompt(self, event: Select.Changed) -> None:
        if not isinstance(event.value, int):  # cleared
            return
        p = self.prompts[event.value]
        self.query_one("#compare-prompt", Input).value = p["text"]
        self.query_one("#instruct", Switch).value = p["mode"] == "instruct"

    def sampling(self) -> Any:
        from poetwb.core.config import SamplingConfig
        from poetwb.core.errors import PoetError

        values = {s.id: s.value for s in self.query(Slider)}
        seed_raw = self.query_one("#seed", Input).value.strip() or "0"
        try:
            seed = int(seed_raw)
        except ValueError as exc:
            raise PoetError(f"seed must be a whole number, got {seed_raw!r}") from exc
        return SamplingConfig(temperature=values["temperature"], top_p=values["top_p"], top_k=int(values["top_k"]),
                              repetition_penalty=values["repetition_penalty"],
                              max_new_tokens=int(values["max_new_tokens"]), seed=seed)

    @on(Button.Pressed, "#generate")
    @on(Input.Submitted, "#compare-prompt")
    def action_generate(self) -> None:
        from poetwb.core.errors import PoetError

        prompt = self.query_one("#compare-prompt", Input).value
        adapter = self.query_one("#adapter-select", Select).value
        try:
            sampling = self.sampling()
            if not prompt.strip():
                raise PoetError("the prompt is empty: type a first line, or pick one from the prompt set")
        except PoetError as exc:
            self.app.notify(str(exc), severity="error")
            return
        if not isinstance(adapter, str):  # nothing to pick: no run with an adapter yet
            self.app.notify("no fine-tuned run yet: train one in the Train pane (F3); showing the base model only",
                            severity="warning")
            adapter = None
        for key in ("base", "tuned"):
            self.texts[key] = ""
            self.query_one(f"#{key}-text", Static).update("…")
        self.stop.set()
        self.stop = threading.Event()
        instruct = self.query_one("#instruct", Switch).value
        model = self.app.base_model
        if adapter:  # a run's adapter goes with the base model that run trained
            from poetwb.core import runs

            if (folder := runs.run_of_adapter(adapter)) is not None:
                model = runs.read_config(folder).model
        self.last = {"prompt": prompt, "mode": "instruct" if instruct else "raw", "adapter": adapter or "",
                     "sampling": sampling.to_dict(), "seed": sampling.seed, "model": model}
        self.blind_sides = None
        if self.query_one("#blind", Switch).value and adapter:
            import random

            self.blind_sides = random.choice([("base", "tuned"), ("tuned", "base")])  # which model is A, B
        self._titles()
        self.run_generation(prompt, instruct, sampling, adapter, self.stop)

    def _titles(self) -> None:
        """Column titles: the models' names, or A / B in blind mode (the columns' order is then random)."""
        blind = self.blind_sides is not None
        self.query_one("#base-title", Label).update("A" if blind else "base model")
        self.query_one("#tuned-title", Label).update("B" if blind else "fine-tuned")

    def _column(self, key: str) -> str:
        """The widget column a model streams into: base left and tuned right, unless blind mode swapped them."""
        if self.blind_sides is None:
            return key
        return ("base", "tuned")[self.blind_sides.index(key)]

    def action_vote(self, choice: str) -> None:
        from poetwb.core.votes import Votes

        if self.blind_sides is None or not all(self.texts.values()):
            self.app.notify("turn on blind A/B and generate a pair first", severity="warning")
            return
        from poetwb.core.runs import run_of_adapter

        folder = run_of_adapter(self.last["adapter"])
        run_id = folder.name if folder is not None else self.last["adapter"]
        tuned_side = "A" if self.blind_sides[0] == "tuned" else "B"
        votes = Votes()
        texts = {side: self.texts[model] for side, model in zip("AB", self.blind_sides, strict=True)}
        votes.add(run_id, self.last["prompt"], texts["A"], texts["B"], tuned_side, choice, self.last["sampling"])
        tally = votes.tally(run_id)
        votes.close()
        lo, hi = tally.interval
        verdict = {"tie": "a tie"}.get(choice, "the fine-tuned poem" if choice == tuned_side else "the base poem")
        self.query_one("#vote-tally", Label).update(
            f"You chose {verdict}. Run {run_id}: tuned wins {tally.tuned}, base wins {tally.base}, ties {tally.ties}"
            f" — win rate {tally.win_rate:.0%} (95 % CI {lo:.0%}–{hi:.0%})")
        self.blind_sides = None
        self._titles()

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def run_generation(self, prompt: str, instruct: bool, sampling: Any, adapter: str | None,
                       stop: threading.Event) -> None:
        from poetwb.core import generate
        from poetwb.core.errors import PoetError

        try:
            loaded = self.app.load_model(self.last["model"], adapter)
            keys = ("base", "tuned") if adapter else ("base",)
            if adapter is None:
                self.app.call_from_thread(self.query_one("#tuned-text", Static).update, "(no fine-tuned run)")
                stream = ((0, c) for c in generate.stream(loaded, prompt, sampling, instruct, cancel=stop))
            else:
                stream = generate.side_by_side(loaded, prompt, sampling, instruct, cancel=stop)
            for row, chunk in stream:
                key = keys[row]
                self.texts[key] += chunk
                column = self._column(key)
                self.app.call_from_thread(self.query_one(f"#{column}-text", Static).update, self.texts[key])
        except PoetError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="error", timeout=8)

    def action_save(self, which: str) -> None:
        from poetwb.core.errors import PoetError
        from poetwb.core.library import Poem

        text = self.texts.get(which, "")
        if not text.strip() or not self.last:
            self.app.notify("nothing to save yet: generate first", severity="warning")
            return
        full = (self.last["prompt"] + text) if self.last["mode"] == "raw" else text.strip()
        poem = Poem(text=full, prompt=self.last["prompt"], model=self.last["model"], mode=self.last["mode"],
                    adapter=self.last["adapter"] if which == "tuned" else "", sampling=self.last["sampling"],
                    seed=self.last["seed"])
        try:
            self.app.library.add(poem)
        except PoetError as exc:
            self.app.notify(str(exc), severity="error")
            return
        self.app.notify(f"saved the {which} poem to the library")
