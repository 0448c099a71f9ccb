"""Sampling poems without a UI: prompt formatting, and a streaming iterator of text chunks that any front end
(CLI, TUI worker, script) can consume. Several rows can stream from one batched generate call."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError

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


def _generate_kwargs(tokenizer: Any, model: Any, sampling: SamplingConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "repetition_penalty": sampling.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if sampling.temperature == 0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") else None
        top_k = min(sampling.top_k, vocab) if vocab and sampling.top_k else sampling.top_k
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=top_k or None)
    return kwargs


def stream_rows(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    sampling: SamplingConfig,
    cancel: threading.Event | None = None,
    token_counts: list[int] | None = None,
    **extra: Any,
) -> Iterator[tuple[int, str]]:
    """Yield (row, text chunk) as tokens arrive, for a batch of already formatted prompt texts.

    One generate call runs in a helper thread; extra keyword arguments go to model.generate (for example
    peft's adapter_names for mixed batches). Closing the iterator early stops the generation.
    token_counts, when given, is filled with the number of new tokens of each row.
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
    kwargs = _generate_kwargs(tokenizer, model, sampling)

    def run() -> None:
        try:
            torch.manual_seed(sampling.seed)
            with torch.inference_mode():
                model.generate(
                    **enc, **kwargs, **extra, streamer=_Streamer(), stopping_criteria=StoppingCriteriaList([_Cancel()])
                )
        except BaseException as exc:  # handed to the consumer, raised there
            tokens.put(exc)
            tokens.put(None)

    worker = threading.Thread(target=run, name="poetwb-generate", daemon=True)
    worker.start()
    eos = set(_as_list(tokenizer.eos_token_id))
    ids: list[list[int]] = [[] for _ in texts]
    if token_counts is not None:
        token_counts[:] = [0] * len(texts)
    shown = [0] * len(texts)
    done = [False] * len(texts)
    try:
        while (step := tokens.get()) is not None:
            if isinstance(step, BaseException):
                raise PoetError(f"generation failed: {type(step).__name__}: {step}") from step
            for row, token in enumerate(step):
                if done[row]:
                    continue
                if token in eos:
                    done[row] = True
                    continue
                ids[row].append(token)
                if token_counts is not None:
                    token_counts[row] += 1
                text = tokenizer.decode(ids[row], skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    continue
                if len(text) > shown[row]:
                    yield row, text[shown[row]:]
                    shown[row] = len(text)
    finally:
        stop.set()
        worker.join()


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _adds_special(tokenizer: Any, texts: list[str]) -> bool:
    """Chat-templated text already holds its special tokens; do not add a second BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and all(t.startswith(bos) for t in texts))


def stream(loaded: Any, prompt: str, sampling: SamplingConfig, instruct: bool = False,
           cancel: threading.Event | None = None, token_counts: list[int] | None = None) -> Iterator[str]:
    """Yield text chunks of one generation from a LoadedModel."""
    text = format_prompt(loaded.tokenizer, prompt, instruct)
    for _, chunk in stream_rows(loaded.model, loaded.tokenizer, [text], sampling, cancel, token_counts):
        yield chunk


def generate(loaded: Any, prompt: str, sampling: SamplingConfig, instruct: bool = False) -> Generation:
    """Generate one poem and return it whole."""
    start = time.perf_counter()
    counts: list[int] = []
    text = "".join(stream(loaded, prompt, sampling, instruct, token_counts=counts))
    return Generation(text, counts[0] if counts else 0, time.perf_counter() - start)


def side_by_side(loaded: Any, prompt: str, sampling: SamplingConfig, instruct: bool = False,
                 cancel: threading.Event | None = None,
                 token_counts: list[int] | None = None) -> Iterator[tuple[int, str]]:
    """Base (row 0) and tuned (row 1) for the same prompt and seed in one batched generate call.

    One copy of the base weights. The base row has the adapter switched off by a row mask on every LoRA
    up-projection (its LoRA delta is multiplied by 0, so it is exactly the base model); the tuned row keeps it.
    This is what peft's mixed-adapter batches compute, without their per-layer sub-batch indexing, which made
    them 2x slower than two sequential calls on a 2-core CPU. Without an adapter both rows are the base model.
    """
    import torch

    text = format_prompt(loaded.tokenizer, prompt, instruct)
    hooks = []
    if loaded.adapter is not None:
        active = loaded.model.active_adapter
        name = active if isinstance(active, str) else active[0]
        mask = torch.tensor([0.0, 1.0], device=next(loaded.model.parameters()).device)

        def keep_tuned_row(module: Any, args: Any, output: Any) -> Any:
            return output * mask.to(output.dtype).view(-1, *([1] * (output.dim() - 1)))

        for module_name, module in loaded.model.named_modules():
            if module_name.endswith(f"lora_B.{name}"):
                hooks.append(module.register_forward_hook(keep_tuned_row))
        if not hooks:
            raise PoetError(f"the adapter {loaded.adapter} has no LoRA layers to compare against the base model")
    try:
        yield from stream_rows(loaded.model, loaded.tokenizer, [text, text], sampling, cancel, token_counts)
    finally:
        for hook in hooks:
            hook.remove()
