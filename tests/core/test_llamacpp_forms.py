"""Form poems on the llama.cpp engine: its sampler computes transformers' distribution, its view before a rhymed
word is the model's own, greedy form poems agree with the torch engine's on tiny Llama and GPT-2 models, sampled
ones are complete, reproducible and column by column independent, and a poem stops where the model's context
ends."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from poetwb.core import forms, generate, llamacpp, models, runs
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError
from poetwb.core.forms_torch import TorchLines

PROMPT = "The sea is blue, the sky is red"
GREEDY = SamplingConfig(temperature=0, repetition_penalty=1.1, max_new_tokens=12)

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'poetwb[llamacpp]')")

from poetwb.core import llamacpp_forms  # noqa: E402  (imports numpy only, but belongs to the engine)


@pytest.mark.parametrize("sampling", [
    SamplingConfig(temperature=0.7, top_p=0.95, top_k=50, repetition_penalty=1.1),
    SamplingConfig(temperature=1.3, top_p=0.5, top_k=0, repetition_penalty=1.0),
    SamplingConfig(temperature=0.9, top_p=1.0, top_k=7, repetition_penalty=1.3),
    SamplingConfig(temperature=1.0, top_p=0.999, top_k=0, repetition_penalty=1.0),  # a nucleus wider than 512
])
@pytest.mark.parametrize("vocab", [2000, 300])  # 300: smaller than the first nucleus search
def test_the_sampler_draws_from_the_distribution_transformers_computes(sampling, vocab):
    import torch
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
    seen = np.array([3, 17, 17, 250, int(np.argmax(logits))])
    ban = np.zeros(vocab, dtype=bool)
    ban[[5, 6, int(np.argsort(logits)[-2])]] = True  # the second best token is banned
    ours_ids, ours_p = llamacpp_forms.distribution(logits, np.unique(seen), [ban], sampling)

    steps = [RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty)] if sampling.repetition_penalty != 1 else []
    steps.append(lambda ids, scores: scores.masked_fill(torch.from_numpy(ban), float("-inf")))
    steps.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        steps.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1:
        steps.append(TopPLogitsWarper(sampling.top_p))
    scores = torch.from_numpy(logits.copy())[None]
    for step in steps:
        scores = step(torch.from_numpy(seen)[None], scores)
    theirs = torch.softmax(scores[0], dim=-1).numpy()
    assert set(ours_ids.tolist()) == set(np.flatnonzero(theirs > 0).tolist())
    np.testing.assert_allclose(ours_p, theirs[ours_ids], rtol=1e-5, atol=1e-7)
    assert not ban[ours_ids].any()
    draws = [llamacpp_forms.pick(logits, np.unique(seen), [ban], sampling, np.random.default_rng(s)) for s in range(50)]
    assert set(draws) <= set(ours_ids.tolist())
    greedy = SamplingConfig(temperature=0, repetition_penalty=sampling.repetition_penalty)
    assert llamacpp_forms.pick(logits, np.unique(seen), [ban], greedy, rng) == int(scores[0].argmax())


def _engine(base, adapters=()):
    _, base_file = llamacpp.base_gguf(str(base), quant="f32")
    return llamacpp.Engine(base_file, [llamacpp.adapter_gguf(a, base_file) for a in adapters])


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_view_before_a_rhymed_word_is_the_models_own(kind, tiny_models):
    """next_logps after sampling equals a fresh pass over the poem and the candidate's body, on both engines."""
    base = tiny_models[kind]
    spec = forms.LineSpec("A", (6, 6))
    sampling = SamplingConfig(temperature=1.0, seed=3)
    engine = _engine(base)
    fast = llamacpp_forms.LlamaLines(engine, engine._context(0, None, 1024, 4), 4)
    loaded = models.load(str(base), dtype="fp32", device="cpu")
    slow = TorchLines(loaded.model, loaded.tokenizer)
    for lm in (fast, slow):
        lm.start(lm.encode(PROMPT + "\n"))
        lm.seed(sampling.seed)
        cands = lm.sample(spec, 4, sampling, threading.Event())
        assert len(cands) == 4 and all(c.token_ids and c.row == i for i, c in enumerate(cands))
        bodies = [(c, cut) for c in cands if (cut := forms._last_word_start(c.token_ids, lm.classes))]
        assert bodies, "no candidate had two words"
        got = lm.next_logps(bodies)
        for (cand, cut), logp in zip(bodies, got, strict=True):
            ids = lm.encode(PROMPT + "\n") + cand.token_ids[:cut]
            fresh = TorchLines(loaded.model, loaded.tokenizer)
            fresh.start(ids)
            want = fresh.next_logps([(forms.Candidate("", [], 0.0, 0), 0)])[0]  # what follows ids, from scratch
            np.testing.assert_allclose(logp[: want.shape[0]], want, atol=2e-4)
    fast.close()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_greedy_form_poems_agree_with_the_torch_engine(kind, tiny_models, make_run):
    base = tiny_models[kind]
    adapter = runs.adapter_dir(make_run(base, f"f-{kind}"), 2)
    form = forms.make_form(scheme="AABB", syllables="4")
    engine = _engine(base, [adapter])
    fast = ["", ""]
    stats: list = []
    for col, chunk in llamacpp.columns(engine, PROMPT, GREEDY, [None, 0], form=form, candidates=4, stats=stats):
        fast[col] += chunk
    loaded = models.load(str(base), adapter, dtype="fp32", device="cpu")
    slow = ["", ""]
    for col, chunk in generate.columns(loaded, PROMPT, GREEDY, [None, "default"], form=form, candidates=4):
        slow[col] += chunk
    assert fast == slow
    assert fast[0] != fast[1], "the adapter changed nothing"
    assert all(text.count("\n") == 4 for text in fast)  # the prompt is line 1: three lines follow, then the end
    assert [s.reason for s in stats] == ["form complete"] * 2 and all(s.new_tokens > 0 for s in stats)
    assert all(s.rhymes is not None and s.rhymes[1] == 2 for s in stats)  # lines 2 and 4 must rhyme


def test_sampled_form_poems_are_complete_reproducible_and_independent_per_column(tiny_llama, make_run):
    adapter = runs.adapter_dir(make_run(tiny_llama, "s"), 2)
    engine = _engine(tiny_llama, [adapter])
    form = forms.make_form("limerick")

    def poems(layout, seed=11, instruct=True):
        s = SamplingConfig(temperature=1.0, seed=seed)
        texts = [""] * len(layout)
        for col, chunk in llamacpp.columns(engine, "Write a limerick", s, layout, instruct, form=form, candidates=3):
            texts[col] += chunk
        return texts

    both = poems([None, 0])
    assert all(len([x for x in t.split("\n") if x.strip()]) == 5 for t in both)  # the model would stop at once
    assert poems([None, 0]) == both  # same seed, same poems
    assert poems([0]) == both[1:] and poems([None]) == both[:1]  # a column's poem is its own
    assert poems([None, 0], seed=12) != both


def test_a_form_poem_stops_where_the_models_context_ends(tiny_gpt2):
    """The tiny GPT-2 has 512 positions: 40 long lines do not fit; both engines stop cleanly and say why."""
    form = forms.make_form(scheme="A" * 40, syllables="16")
    sampling = SamplingConfig(temperature=1.0, seed=1)
    engine = _engine(tiny_gpt2)
    loaded = models.load(str(tiny_gpt2), dtype="fp32", device="cpu")
    for chunks in (lambda st: llamacpp.columns(engine, PROMPT, sampling, [None], form=form, candidates=2, stats=st),
                   lambda st: generate.columns(loaded, PROMPT, sampling, [None], form=form, candidates=2, stats=st)):
        stats: list = []
        text = "".join(c for _, c in chunks(stats))
        assert stats[0].reason == "context full"
        assert 3 < text.count("\n") < 40
    # a prompt that leaves no room for a line is refused in one line, not decoded past the model's positions
    long = "The sea is blue, the sky is red. " * 60
    for chunks in (lambda: llamacpp.columns(engine, long, sampling, [None], True, form=form, candidates=2),
                   lambda: generate.columns(loaded, long, sampling, [None], True, form=form, candidates=2)):
        with pytest.raises(PoetError, match=r"the model's whole context is 512: no room for a line; shorten it"):
            list(chunks())
