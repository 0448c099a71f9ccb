"""The torch engine's side of form poems (forms.LineModel): k candidate lines in one batched `generate` call on the
poem's KV cache, the syllable rule as a LogitsProcessor, rhymed variants scored in one batched forward pass.

Why its own module: forms.py holds the method (plan, rhymes, scores, the line loop) for any engine; this is what
only torch does. It runs on the torch thread with the row masks generate.columns sets up.
"""

from __future__ import annotations

import copy
import threading
from functools import lru_cache
from typing import Any

from poetwb.core.config import SamplingConfig
from poetwb.core.forms import Candidate, LineSpec, TokenClasses, banned_next, classes_from_texts, max_line_tokens
from poetwb.core.generate import positions

_CLASSES: dict[int, TokenClasses] = {}
_CLASSES_LOCK = threading.Lock()


def token_classes(tokenizer: Any) -> TokenClasses:
    """forms.TokenClasses of a transformers tokenizer (built once per tokenizer)."""
    key = id(tokenizer)
    with _CLASSES_LOCK:
        if key not in _CLASSES:
            texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
            _CLASSES[key] = classes_from_texts(texts, set(tokenizer.all_special_ids or []))
        return _CLASSES[key]


def _mask(mask: Any, width: int, device: Any, pad: bool) -> Any:
    """A numpy vocabulary mask as a torch one of the logits' width (models may pad their vocabulary: the extra
    ids get `pad`)."""
    import torch

    out = torch.from_numpy(mask)
    if width > out.shape[0]:
        out = torch.cat([out, torch.full((width - out.shape[0],), pad, dtype=torch.bool)])
    return out[:width].to(device)


def _syllable_processor(tokenizer: Any, classes: TokenClasses, start: int, target: tuple[int, int]) -> Any:
    """A LogitsProcessor applying forms.banned_next to each row's line so far."""
    from transformers import LogitsProcessor

    masks: dict[int, Any] = {}  # id of a numpy mask -> its torch copy

    def as_torch(mask: Any, scores: Any) -> Any:
        if id(mask) not in masks:
            masks[id(mask)] = _mask(mask, scores.shape[-1], scores.device, mask is classes.never)
        return masks[id(mask)]

    class SyllableProcessor(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scores = scores.masked_fill(as_torch(classes.never, scores), float("-inf"))
            for row in range(input_ids.shape[0]):
                text = tokenizer.decode(input_ids[row, start:], skip_special_tokens=True)
                ban = banned_next(classes, text, target)
                if ban is not None:
                    scores[row].masked_fill_(as_torch(ban, scores), float("-inf"))
            return scores

    return SyllableProcessor()


class _Context:
    """The poem so far as token ids, with a batch-1 KV cache covering all but the last token."""

    def __init__(self, model: Any, ids: list[int]) -> None:
        import torch
        from transformers import DynamicCache

        self.model = model
        self.ids = list(ids)
        self.cache = DynamicCache(config=model.config)
        if len(self.ids) > 1:
            with torch.inference_mode():
                model(input_ids=torch.tensor([self.ids[:-1]], device=_device(model)), use_cache=True,
                      **{_cache_kw(model): self.cache})

    def extend(self, new_ids: list[int]) -> None:
        import torch

        old = len(self.ids)
        self.ids.extend(new_ids)
        feed = self.ids[old - 1: -1]
        if feed:
            with torch.inference_mode():
                self.model(input_ids=torch.tensor([feed], device=_device(self.model)), use_cache=True,
                           **{_cache_kw(self.model): self.cache})

    def repeated_cache(self, k: int) -> Any:
        cache = copy.deepcopy(self.cache)
        if k > 1:
            cache.batch_repeat_interleave(k)
        return cache


def _device(model: Any) -> Any:
    return next(model.parameters()).device


@lru_cache(maxsize=16)
def _cache_kw_for(cls: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _cache_kw(model: Any) -> str:
    """transformers >= 5.2x names the KV cache argument `cache` (`past_key_values` is deprecated); older 5.x not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_kw_for(type(base))


class TorchLines:
    """forms.LineModel on a transformers model (with whatever adapter rows generate.columns has set)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.classes = token_classes(tokenizer)
        self.ctx: _Context | None = None

    def encode(self, text: str) -> list[int]:
        from poetwb.core.generate import _adds_special

        return self.tokenizer(text, add_special_tokens=_adds_special(self.tokenizer, [text])).input_ids

    def encode_plain(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def seed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    def start(self, ids: list[int]) -> None:
        self.ctx = _Context(self.model, ids)

    def extend(self, ids: list[int]) -> None:
        assert self.ctx is not None
        self.ctx.extend(ids)

    def context_size(self) -> int:
        return positions(self.model) or 1 << 30

    def sample(self, spec: LineSpec, k: int, sampling: SamplingConfig, stop: threading.Event) -> list[Candidate]:
        """k candidate lines from one batched generate call on the shared context cache."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from poetwb.core.generate import FewRows, generate_kwargs

        assert self.ctx is not None
        ctx, model, tokenizer, classes = self.ctx, self.model, self.tokenizer, self.classes
        device = _device(model)
        newline_ids = torch.tensor(classes.newline_ids, device=device)

        class _EndOfLine(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = torch.isin(input_ids[:, -1], newline_ids)
                return done | stop.is_set()

        start = len(ctx.ids)
        kwargs = generate_kwargs(tokenizer, model, sampling,
                                 (_syllable_processor(tokenizer, classes, start, spec.syllables),))
        kwargs.update(max_new_tokens=max_line_tokens(spec), eos_token_id=None)
        input_ids = torch.tensor([ctx.ids] * k, device=device)
        with torch.inference_mode(), FewRows(model):  # FewRows: a no-op inside generate.columns, which holds one
            out = model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                **{_cache_kw(model): ctx.repeated_cache(k)},
                stopping_criteria=StoppingCriteriaList([_EndOfLine()]), return_dict_in_generate=True,
                output_logits=True, **kwargs,
            )
        seqs = out.sequences[:, start:]
        logps = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in out.logits], dim=1)  # (k, steps, V)
        cands = []
        newline_set = set(classes.newline_ids)
        for row in range(k):
            ids: list[int] = []
            each: list[float] = []
            ended = False
            for t, tok in enumerate(seqs[row].tolist()):
                ids.append(tok)
                each.append(float(logps[row, t, tok]))
                if tok in newline_set:
                    ended = True
                    break
            text = tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip()
            cands.append(Candidate(text, ids, sum(each), len(ids), ended, token_logps=each, row=row))
        return cands

    def next_logps(self, bodies: list[tuple[Candidate, int]]) -> list[Any]:
        """One batched forward pass over the poem's last token and each candidate's first `cut` tokens."""
        import torch

        from poetwb.core.generate import FewRows

        assert self.ctx is not None
        last = self.ctx.ids[-1]  # the cache holds all but the poem's last token
        width = max(cut for _, cut in bodies) + 1
        pad = self.tokenizer.pad_token_id or 0
        rows = [[last, *c.token_ids[:cut]] + [pad] * (width - 1 - cut) for c, cut in bodies]
        with torch.inference_mode(), FewRows(self.model):
            logits = self.model(input_ids=torch.tensor(rows, device=_device(self.model)), use_cache=True,
                                **{_cache_kw(self.model): self.ctx.repeated_cache(len(rows))}).logits
        return [torch.log_softmax(logits[b, cut].float(), dim=-1).cpu().numpy() for b, (_, cut) in enumerate(bodies)]
