"""Sampling poems without a UI: prompt formatting, and a streaming iterator of text chunks that any front end
(CLI, TUI worker, script) can consume. Several rows can stream from one batched generate call."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from poetwb.core import cpu_share
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError

ON_TORCH_THREAD = True
"""Streamed generation runs on core.torch_thread; False: on a new thread each time (the path before, for benchmarks)."""

# The plain instruction format for models without a chat template; stage 2 trains on the same one.
PLAIN_INSTRUCTION = "User: {prompt}\nAssistant:"


def format_prompt(tokenizer: Any, prompt: str, instruct: bool) -> str:
    """Raw continuation returns the prompt as is; instruction mode goes through the chat template when the
    tokenizer has one, else the report's plain 'User: … Assistant:' format."""
    if not prompt or not prompt.strip():
        raise PoetError("the prompt is empty; type a first line to continue or a request such as 'Write a poem…'")
    if not instruct:
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt.strip()}], tokenize=False, add_generation_prompt=True
        )
    return PLAIN_INSTRUCTION.format(prompt=prompt.strip())


@dataclass
class Generation:
    """A finished generation."""

    text: str
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RowStats:
    """How one row (column) of a generation went: for scripts (--json) and the columns' footers."""

    new_tokens: int = 0
    seconds: float = 0.0
    """Decode time until this row ended (model loading not included)."""
    reason: str = "running"
    """end of text | max tokens | context full | cancelled | form complete | running."""
    rhymes: tuple[int, int] | None = None
    """A form poem: (rhyme pairs that held, rhyme pairs the form required) among its written lines, by the
    generator's own check; None for free verse."""
    threads: cpu_share.Threads | None = None
    """The cpu_share.Threads the decode ran on (fewer than alone while other processes keep CPUs busy); None when
    not measured (a GPU)."""

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def by(self, engine: str) -> str:
        """The engine for a footer, with the threads' note when other work kept CPUs busy: "torch int8 · 1/2
        threads, CPU busy"."""
        note = self.threads.note() if self.threads is not None else ""
        return " · ".join(part for part in (engine, note) if part)

    def to_dict(self) -> dict[str, Any]:
        out = {"new_tokens": self.new_tokens, "seconds": round(self.seconds, 6),
               "tokens_per_s": round(self.tokens_per_s, 2), "stop_reason": self.reason}
        if self.rhymes is not None:
            out["rhymes_held"], out["rhymes_required"] = self.rhymes
        if self.threads is not None:
            out.update(self.threads.to_dict())
        return out


def generate_kwargs(tokenizer: Any, model: Any, sampling: SamplingConfig, processors: tuple[Any, ...] = ()
                    ) -> dict[str, Any]:
    """model.generate's keyword arguments for these sampling settings, with extra logits processors (run before
    the sampling ones). With top-k on, sampling is core.sampler's processor on the k best logits, taken by generate's
    greedy argmax; top-k off keeps transformers' own sampling over the whole vocabulary."""
    from transformers import LogitsProcessorList

    from poetwb.core import sampler

    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "repetition_penalty": sampling.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    chain = list(processors)
    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") else None
    top_k = min(sampling.top_k, vocab) if vocab and sampling.top_k else sampling.top_k
    own = model.generation_config
    others = [a for a in _OTHER_WARPERS if getattr(own, a, None) not in (None, 1.0, 0.0)]
    if sampling.temperature == 0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    elif top_k and FAST_SAMPLER and not others:  # a model asking for other warpers keeps transformers' sampling
        chain.append(sampler.make(sampling.temperature, top_k, sampling.top_p))
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=top_k or None)
    if chain:
        kwargs["logits_processor"] = LogitsProcessorList(chain)
    return kwargs


FAST_SAMPLER = True
"""False: transformers' own sampling over the whole vocabulary (the path before, for benchmarks)."""
_OTHER_WARPERS = ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")
"""Sampling settings a model's generation_config may carry that core.sampler does not apply."""


def stream_rows(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    sampling: SamplingConfig,
    cancel: threading.Event | None = None,
    stats: list[RowStats] | None = None,
    **extra: Any,
) -> Iterator[tuple[int, str]]:
    """Yield (row, text chunk) as tokens arrive, for a batch of already formatted prompt texts.

    One generate call runs in a helper thread; extra keyword arguments go to model.generate (for example
    peft's adapter_names for mixed batches). Closing the iterator early stops the generation.
    stats, when given, is filled with one RowStats per row (new tokens, decode seconds, why it ended).
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    stop = cancel or threading.Event()
    tokens: queue.Queue[Any] = queue.Queue()

    class _Streamer(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate() first hands over the prompt ids
                self.prompt_seen = True
                return
            tokens.put(value.detach().reshape(-1).cpu().tolist())

        def end(self) -> None:
            tokens.put(None)

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=_adds_special(tokenizer, texts))
    enc = {k: v.to(device) for k, v in enc.items()}
    kwargs = generate_kwargs(tokenizer, model, sampling)
    steps = kwargs["max_new_tokens"] = room(model, enc["input_ids"].shape[1], sampling.max_new_tokens)
    full = "max tokens" if steps == sampling.max_new_tokens else "context full"
    # how many threads the decode gets: measured here, before the decode's clock starts, not on the torch thread
    fitted = cpu_share.free_torch_threads(device)

    def run() -> None:
        try:
            torch.manual_seed(sampling.seed)
            with cpu_share.torch_threads(fitted), torch.inference_mode(), FewRows(model):
                model.generate(
                    **enc, **kwargs, **extra, streamer=_Streamer(), stopping_criteria=StoppingCriteriaList([_Cancel()])
                )
        except BaseException as exc:  # handed to the consumer, raised there
            tokens.put(exc)
            tokens.put(None)

    from poetwb.core import torch_thread

    if torch_thread.here() or not ON_TORCH_THREAD:  # a consumer on the torch thread: generate beside it
        worker = threading.Thread(target=run, name="poetwb-generate", daemon=True)
        worker.start()
        join = worker.join
    else:
        join = torch_thread.submit(run).result
    eos = set(_as_list(tokenizer.eos_token_id))
    ids: list[list[int]] = [[] for _ in texts]
    rows = [RowStats() for _ in texts]
    if stats is not None:
        stats[:] = rows
    shown = [0] * len(texts)
    done = [False] * len(texts)
    started = time.perf_counter()
    ended = False
    try:
        while (step := tokens.get()) is not None:
            if isinstance(step, BaseException):
                raise PoetError(f"generation failed: {type(step).__name__}: {step}") from step
            for row, token in enumerate(step):
                if done[row]:
                    continue
                rows[row].seconds = time.perf_counter() - started
                if token in eos:
                    done[row] = True
                    rows[row].reason = "end of text"
                    continue
                ids[row].append(token)
                rows[row].new_tokens += 1
                if rows[row].new_tokens >= steps:
                    rows[row].reason = full
                if piece := unseen(tokenizer.decode(ids[row], skip_special_tokens=True), shown[row]):
                    yield row, piece
                    shown[row] += len(piece)
        ended = True
    finally:
        cancelled = stop.is_set() or not ended
        stop.set()
        join()
        for row in rows:
            row.threads = fitted
            if row.reason == "running":
                row.reason = "cancelled" if cancelled else full


def positions(model: Any) -> int | None:
    """The model's trained context in tokens (None when its config does not say); a multimodal model's is its
    text model's."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)


def room(model: Any, prompt_tokens: int, wanted: int) -> int:
    """How many new tokens a generation can take: `wanted`, or fewer where the model's trained context ends (past it
    GPT-2's position table has no row, an IndexError mid-poem; other models drift). A one-line PoetError when the
    prompt alone fills the context."""
    limit = positions(model)
    if limit is None:
        return wanted
    if prompt_tokens >= limit:
        raise PoetError(f"the prompt takes {prompt_tokens} tokens, the model's whole context is {limit}; shorten it")
    return min(wanted, limit - prompt_tokens)


def unseen(text: str, shown: int) -> str:
    """What a row's decoded text adds past the `shown` characters already streamed; nothing while it ends in half a
    multi-byte character (U+FFFD), which the next token completes. Both engines stream by this rule."""
    return "" if text.endswith("\ufffd") else text[shown:]


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _adds_special(tokenizer: Any, texts: list[str]) -> bool:
    """Chat-templated text already holds its special tokens; do not add a second BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and all(t.startswith(bos) for t in texts))


def stream(loaded: Any, prompt: str, sampling: SamplingConfig, instruct: bool = False,
           cancel: threading.Event | None = None, stats: list[RowStats] | None = None) -> Iterator[str]:
    """Yield text chunks of one generation from a LoadedModel."""
    text = format_prompt(loaded.tokenizer, prompt, instruct)
    for _, chunk in stream_rows(loaded.model, loaded.tokenizer, [text], sampling, cancel, stats):
        yield chunk


def generate(loaded: Any, prompt: str, sampling: SamplingConfig, instruct: bool = False) -> Generation:
    """Generate one poem and return it whole."""
    start = time.perf_counter()
    stats: list[RowStats] = []
    text = "".join(stream(loaded, prompt, sampling, instruct, stats=stats))
    return Generation(text, stats[0].new_tokens if stats else 0, time.perf_counter() - start)


ALL = object()
"""RowMask's rank mask when every row uses every loaded adapter component (one adapter on all rows)."""


class RowMask:
    """Which rows of a batch each loaded adapter applies to, on one copy of the base weights.

    For the time of a generation every LoRA linear layer gets a lean forward: the base layer, then one product with
    all adapters' A matrices stacked (rank r1+…+rN), a 0/1 mask per row and rank component, and one product with the
    B matrices side by side (each scaled by its adapter's scale), added to the base result in the same kernel. Per
    layer and decode step that is two or three small kernels whatever the number of adapters (no mask product when
    every row uses every adapter), instead of peft's module calls per adapter (its mixed-batch sub-batch indexing is
    2x slower than two sequential calls on a 2-core CPU). A row whose mask is 0 adds an exact zero, so it is exactly
    the base model; a tuned row equals peft's forward to float rounding (the scale is folded into B).

    On a model with int8 copies (core/int8.py), decode steps of a batch whose rows all use one adapter read copies
    with that adapter merged in, and compute no LoRA products on those layers (prompts still do, on fp32 weights).

    `rows` sets the batch's layout (one entry per row: an adapter name or None); `whole` makes every row of any
    batch use one adapter (or none: the base layers alone), for form generation whose batches vary in size.
    Layers this cannot handle (DoRA and other variants, embeddings, a merged adapter) keep peft's forward with a
    row mask multiplied into their output.
    """

    LEAN = True
    """False keeps peft's forward on every layer (with the output mask): the path before, for benchmarks."""
    MERGE = True
    """False: batches of one adapter read the base int8 copies plus LoRA products (the path before, for
    benchmarks)."""

    def __init__(self, model: Any, names: list[str]) -> None:
        self.model = model
        self.names = names
        params = next(model.parameters())
        self.device, self.dtype = params.device, params.dtype
        self.masks: dict[str, Any] = {}  # fallback hooks: adapter -> row mask, or 0./1. for the whole batch
        self.rank_masks: dict[tuple[int, ...], Any] = {}  # fast layers, by their ranks per adapter
        self.patched: list[Any] = []
        self.hooks: list[Any] = []
        if names:
            model.base_model.set_adapter(names) if len(names) > 1 else model.set_adapter(names[0])
        used: set[str] = set()
        for layer in [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]:
            present = [n for n in names if n in layer.lora_A]
            used.update(present)
            if not present:
                continue
            if self.LEAN and _lean_ok(layer, present):
                self._patch(layer, present)
            else:
                for n in present:
                    self.hooks.append(layer.lora_B[n].register_forward_hook(self._hook(n)))
        missing = [n for n in names if n not in used]
        if missing:
            raise PoetError(f"the adapter {missing[0]} has no LoRA layers to compare against the base model")

    def _patch(self, layer: Any, present: list[str]) -> None:
        import torch
        import torch.nn.functional as F

        from poetwb.core.int8 import is_step

        ranks = tuple(layer.lora_A[n].out_features if n in present else 0 for n in self.names)
        a_all = torch.cat([layer.lora_A[n].weight for n in present], dim=0)
        # each adapter's scale folded into its B columns (peft scales after the B product: equal to float rounding)
        b_all = torch.cat([layer.lora_B[n].weight * layer.scaling[n] for n in present], dim=1)
        b_t = b_all.t()
        base, masks = layer.base_layer, self.rank_masks

        def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
            # the base layer's forward (its int8 or few-row one when patched) without Module.__call__'s bookkeeping
            result = base.forward(x, *args, **kwargs)
            mask = masks.get(ranks)
            if mask is None:
                return result
            copies = vars(base).get("poetwb_int8")
            if copies is not None and copies.key is not None and is_step(x):  # the merged copy holds the adapter
                return result
            u = F.linear(x if x.dtype == a_all.dtype else x.to(a_all.dtype), a_all)
            if mask is not ALL:
                if mask.dim() == 2:  # one row of the mask per batch row
                    mask = mask.view(mask.shape[0], *([1] * (u.dim() - 2)), mask.shape[1])
                u = u * mask
            if result.dtype == b_t.dtype:  # result + u @ Bᵀ in one kernel
                out = torch.addmm(result.reshape(-1, result.shape[-1]), u.reshape(-1, u.shape[-1]), b_t)
                return out.view(result.shape)
            return (result + F.linear(u, b_all)).to(result.dtype)

        layer.forward = forward
        self.patched.append(layer)
        self.rank_masks.setdefault(ranks, None)

    def _hook(self, name: str) -> Any:
        def apply(module: Any, args: Any, output: Any) -> Any:
            mask = self.masks.get(name)
            if mask is None:
                return output
            if isinstance(mask, float):
                return output if mask else output * 0.0
            return output * mask.to(output.dtype).view(-1, *([1] * (output.dim() - 1)))
        return apply

    def _components(self, ranks: tuple[int, ...], name: str | None) -> list[float]:
        return [float(n == name) for n, r in zip(self.names, ranks, strict=True) for _ in range(r)]

    def _rank_mask(self, rows: list[list[float]] | list[float]) -> Any:
        """A 0/1 tensor, (rows, rank) or (rank,) for every row alike; ALL when every component is on (no product
        needed), None when none is (no LoRA product at all)."""
        import torch

        mask = torch.tensor(rows, device=self.device, dtype=self.dtype)
        if not mask.any():
            return None  # no row uses an adapter: the base layers alone
        return ALL if mask.all() else mask

    def rows(self, layout: list[str | None]) -> None:
        import torch

        self.masks = {n: torch.tensor([float(r == n) for r in layout], device=self.device) for n in self.names}
        for ranks in self.rank_masks:
            self.rank_masks[ranks] = self._rank_mask([self._components(ranks, r) for r in layout])
        self._merged(layout[0] if len(set(layout)) == 1 else None)

    def whole(self, name: str | None) -> None:
        self.masks = {n: float(n == name) for n in self.names}
        for ranks in self.rank_masks:
            self.rank_masks[ranks] = self._rank_mask(self._components(ranks, name))
        self._merged(name)

    def _merged(self, name: str | None) -> None:
        """Decode steps of a batch whose rows all use one adapter read int8 copies with that adapter merged in
        (core/int8.merge: no LoRA products); any other batch reads the base copies. Models without int8 copies
        keep the LoRA products (exact)."""
        from poetwb.core import int8

        key = name if self.MERGE else None
        for layer in self.patched:
            copies = int8.merge(layer, key) if key is not None and key in layer.lora_A \
                else vars(layer.base_layer).get("poetwb_int8")
            if copies is not None:
                copies.use(key)

    def close(self) -> None:
        self._merged(None)
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        for layer in self.patched:
            del layer.forward
        self.patched.clear()


def _lean_ok(layer: Any, present: list[str]) -> bool:
    """Whether a peft LoRA layer is plain LoRA on a linear layer, unmerged, in eval: what RowMask's lean forward
    computes."""
    import torch

    variants = getattr(layer, "lora_variant", {})
    return (
        type(layer).__name__ == "Linear"
        and not getattr(layer, "merged_adapters", [])
        and not any(n in variants for n in present)
        and all(isinstance(layer.lora_A[n], torch.nn.Linear) and layer.lora_A[n].bias is None
                and layer.lora_B[n].bias is None and not layer.lora_A[n].training for n in present)
    )


class FewRows:
    """Every plain linear layer computes W @ xᵀ while a decode step has 2-16 rows (a side-by-side pair, k candidate
    lines).

    x @ Wᵀ with a few rows takes a slow small-M GEMM path on CPUs; the same product as W @ xᵀ reads the weights
    once at the speed of one row. Measured here (AMD EPYC, AVX2, fp32, 2 threads, the bundled model's shapes):
    2-8 rows at 0.4-0.7x the time (0.3x for the 49k-row output head), one row the same. Only decode steps (one
    new token per row) of 2-16 rows take this path; one row, prefill and training keep the plain layer, so a single
    stream is bit-identical to plain `generate` and a batch differs only in float rounding order.
    A context manager: the layers' own forward comes back on exit; nested uses are no-ops; GPUs keep their kernels.
    It also gives a Llama-family model core.lean_step's decode step (bit-identical logits, no per-layer module
    calls) for the same time.
    """

    MAX_ROWS = 16

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers: list[Any] = []
        self.undo_step: Any = None

    def __enter__(self) -> FewRows:
        import torch
        import torch.nn.functional as F

        from poetwb.core import lean_step

        first = next(self.model.parameters(), None)
        if first is None or first.device.type != "cpu":
            return self
        self.undo_step = lean_step.patch(self.model)  # decode steps of Llama models without per-layer module calls
        if self.MAX_ROWS < 2:
            return self
        limit = self.MAX_ROWS
        for layer in self.model.modules():
            if not _is_plain_linear(layer) or "forward" in vars(layer):
                continue

            def forward(x: Any, weight: Any = layer.weight, bias: Any = layer.bias) -> Any:
                if x.dim() != 3 or x.shape[1] != 1 or not 1 < x.shape[0] <= limit:  # not a few-row decode step
                    return F.linear(x, weight, bias)
                out = torch.mm(weight, x.reshape(x.shape[0], x.shape[-1]).t()).t()
                if bias is not None:
                    out = out + bias
                return out.reshape(*x.shape[:-1], weight.shape[0])

            layer.forward = forward
            self.layers.append(layer)
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer in self.layers:
            vars(layer).pop("forward", None)
        self.layers.clear()
        if self.undo_step is not None:
            self.undo_step()
            self.undo_step = None


def _is_plain_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) and type(module) is torch.nn.Linear


def adapter_names(loaded: Any) -> list[str]:
    """The names of the LoRA adapters loaded on a model (empty for a plain model)."""
    if getattr(loaded, "adapter", None) is None and not getattr(loaded, "adapters", None):
        return []
    return list(getattr(loaded.model, "peft_config", {}).keys())


def columns(loaded: Any, prompt: str, sampling: SamplingConfig, layout: list[str | None], instruct: bool = False,
            form: Any = None, candidates: int = 8, cancel: threading.Event | None = None,
            stats: list[RowStats] | None = None) -> Iterator[tuple[int, str]]:
    """Yield (column, text chunk) for several columns of one prompt and seed, each column the base model (None)
    or one loaded adapter (its name), on one copy of the base weights.

    Free verse: every column is a row of one batched generate call. With a form: the columns write their poems
    line by line in turn, each line's k candidates in one batched call with that column's adapter; a chunk is
    then a whole line (with its newline, two at a stanza break). stats gets one RowStats per column.
    """
    text = format_prompt(loaded.tokenizer, prompt, instruct)
    unknown = [n for n in layout if n is not None and n not in adapter_names(loaded)]
    if unknown:
        raise PoetError(f"no adapter named {unknown[0]!r} is loaded")
    # one generation at a time per model: a new one (the workbench's next Generate) waits for the one it replaced
    # to stop at its next step, so their row masks and patched layers never overlap
    with _model_lock(loaded.model):
        yield from _columns(loaded, text, prompt, sampling, layout, instruct, form, candidates, cancel, stats)


_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _model_lock(model: Any) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.Lock()
        return lock


def _columns(loaded: Any, text: str, prompt: str, sampling: SamplingConfig, layout: list[str | None],
             instruct: bool, form: Any, candidates: int, cancel: threading.Event | None,
             stats: list[RowStats] | None) -> Iterator[tuple[int, str]]:
    from poetwb.core import forms, torch_thread
    from poetwb.core.forms_torch import TorchLines

    mask = RowMask(loaded.model, adapter_names(loaded))
    head = FewRows(loaded.model).__enter__()
    own: list[RowStats] = [RowStats() for _ in layout] if stats is None else stats
    try:
        if form is None:
            torch_thread.call(mask.rows, layout)  # merging an adapter into int8 copies computes: the torch thread
            yield from stream_rows(loaded.model, loaded.tokenizer, [text] * len(layout), sampling, cancel, own)
            return
        form_stats = [forms.FormStats() for _ in layout]
        # measured once, here; set for each line's job on the torch thread
        fitted = cpu_share.free_torch_threads(next(loaded.model.parameters()).device)
        prefilled = None if instruct else forms.prompt_lines(prompt)
        writers = [forms.write(TorchLines(loaded.model, loaded.tokenizer), text, form, sampling,
                               candidates=candidates, prefilled=prefilled, cancel=cancel, stats=form_stats[c])
                   for c in range(len(layout))]

        def step(c: int, writer: Iterator[Any]) -> Any:
            def run() -> Any:
                with cpu_share.torch_threads(fitted):
                    mask.whole(layout[c])
                    return next(writer, None)
            return torch_thread.call(run)

        yield from forms.interleave(writers, form_stats, own, cancel, step, fitted)
    finally:
        head.__exit__()
        mask.close()


def runner_columns(runner: Any, prompt: str, sampling: SamplingConfig, with_base: bool, instruct: bool = False,
                   form: Any = None, candidates: int = 8, cancel: threading.Event | None = None,
                   stats: list[RowStats] | None = None) -> Iterator[tuple[int, str]]:
    """`columns` on whichever engine loaded the model: the base model first (when with_base), then every adapter
    loaded on it, in order: a llama.cpp Engine or a LoadedModel (torch), free verse or a form."""
    from poetwb.core import llamacpp

    if isinstance(runner, llamacpp.Engine):
        layout: list[Any] = ([None] if with_base else []) + list(range(len(runner.adapters)))
        return llamacpp.columns(runner, prompt, sampling, layout, instruct, cancel, stats, form, candidates)
    layout = ([None] if with_base else []) + adapter_names(runner)
    return columns(runner, prompt, sampling, layout, instruct, form, candidates, cancel, stats)


def engine_name(runner: Any) -> str:
    """How footers, --json and saved poems name the engine of a loaded model: llama.cpp, torch, or torch int8 /
    int4 / int4/int8 (decode steps on int8 or 4-bit copies of the weights, core/int8.py)."""
    from poetwb.core import int8, llamacpp

    if isinstance(runner, llamacpp.Engine):
        return runner.name
    widths = int8.bits(runner.model)
    return "torch " + "/".join(f"int{b}" for b in sorted(widths)) if widths else "torch"


def side_by_side(loaded: Any, prompt: str, sampling: SamplingConfig, instruct: bool = False,
                 cancel: threading.Event | None = None, stats: list[RowStats] | None = None,
                 form: Any = None, candidates: int = 8) -> Iterator[tuple[int, str]]:
    """Base (row 0) and tuned (row 1) for the same prompt and seed: `columns` with the model's one adapter.
    Without an adapter both rows are the base model."""
    names = adapter_names(loaded)
    layout = [None, names[-1] if names else None]
    yield from columns(loaded, prompt, sampling, layout, instruct, form, candidates, cancel, stats)
