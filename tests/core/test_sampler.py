"""The top-k sampler: transformers' distribution (temperature, top-k with its ties, top-p) read from the k best
logits, and draws that follow it."""

from __future__ import annotations

import pytest

from poetwb.core import generate, sampler
from poetwb.core.config import SamplingConfig


def _transformers_probs(scores, temperature: float, top_k: int, top_p: float):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, scores)
    scores = TopKLogitsWarper(top_k=top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p=top_p)(None, scores)
    return scores.softmax(dim=-1)


def _scattered(scores, top_k: int, top_p: float):
    import torch

    probs, idx = sampler.distribution(scores, top_k, top_p)
    return torch.zeros_like(scores).scatter_add_(1, idx, probs)


@pytest.mark.parametrize("top_k,top_p", [(50, 0.95), (50, 1.0), (5, 0.5), (1, 0.95)])
def test_the_k_best_give_transformers_distribution(top_k, top_p):
    import torch

    torch.manual_seed(0)
    scores = torch.randn(4, 3000) * 3
    scores[1, :100] = float("-inf")  # banned tokens (the syllable rule) stay out
    scores[2] = (scores[2] * 8).round() / 8  # logits rounded to bf16 steps: ties at the top-k boundary
    want = _transformers_probs(scores.clone(), 0.7, top_k, top_p)
    got = _scattered(scores / 0.7, top_k, top_p)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (got[1, :100] == 0).all()


def test_ties_at_the_boundary_are_kept_like_transformers():
    import torch

    scores = torch.full((1, 500), -5.0)
    scores[0, :3] = torch.tensor([4.0, 3.0, 2.0])
    scores[0, 10:20] = 1.0  # ten tokens tied with the 5th best
    probs = _scattered(scores, 5, 1.0)
    assert int((probs > 0).sum()) == 13
    torch.testing.assert_close(probs, _transformers_probs(scores.clone(), 1.0, 5, 1.0))
    scores[0, 20:60] = 1.0  # more ties than the sampler reads: transformers' own warpers draw
    assert sampler.distribution(scores, 5, 1.0) is None
    out = sampler.sample_scores(None, scores, 1.0, 5, 1.0)
    assert int(torch.isfinite(out).sum()) == 1 and float(scores[0, out[0].argmax()]) >= 1.0


def test_draws_follow_the_distribution_and_a_seed_repeats_them():
    import torch

    torch.manual_seed(1)
    scores = torch.randn(1, 1000) * 2
    want = _transformers_probs(scores.clone(), 0.7, 20, 0.9)[0]
    torch.manual_seed(7)
    draws = [int(sampler.sample_scores(None, scores, 0.7, 20, 0.9).argmax()) for _ in range(3000)]
    counts = torch.bincount(torch.tensor(draws), minlength=1000).float() / len(draws)
    assert set(draws) <= set(torch.nonzero(want).flatten().tolist())
    assert float((counts - want).abs().max()) < 0.03
    torch.manual_seed(7)
    again = [int(sampler.sample_scores(None, scores, 0.7, 20, 0.9).argmax()) for _ in range(20)]
    assert again == draws[:20]


def test_generation_samples_through_it_and_greedy_stays_plain(tiny_models):
    """Sampling with top-k on goes through the sampler (test_generate checks that a seed gives one poem);
    temperature 0 is plain greedy; top-k off, or a model whose generation_config asks for min-p and the like,
    keeps transformers' sampling."""
    from poetwb.core import models

    loaded = models.load(str(tiny_models["llama"]), dtype="fp32")
    kwargs = generate.generate_kwargs(loaded.tokenizer, loaded.model, SamplingConfig(top_k=40))
    assert kwargs["do_sample"] is False and type(kwargs["logits_processor"][-1]).__name__ == "TopKSampler"
    greedy = generate.generate_kwargs(loaded.tokenizer, loaded.model, SamplingConfig(temperature=0))
    assert greedy["do_sample"] is False and "logits_processor" not in greedy
    off = generate.generate_kwargs(loaded.tokenizer, loaded.model, SamplingConfig(top_k=0))
    assert off["do_sample"] is True and "logits_processor" not in off
    loaded.model.generation_config.min_p = 0.1  # a model asking for a warper the sampler does not apply
    own = generate.generate_kwargs(loaded.tokenizer, loaded.model, SamplingConfig(top_k=40))
    assert own["do_sample"] is True and "logits_processor" not in own
