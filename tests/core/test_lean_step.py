"""core.lean_step: decode steps of a Llama model without transformers' per-layer modules give the same logits, bit
for bit, so greedy poems do not change; everything that is not a decode step keeps transformers' forward."""

import pytest

from poetwb.core import generate, lean_step, models
from poetwb.core.config import SamplingConfig


def _layer_calls(model):
    """Count calls of the first decoder layer's module (transformers' path calls it once per forward)."""
    calls = []
    inner = lean_step._inner(model)
    handle = inner.layers[0].register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def _step_logits(model, ids, mask, step):
    """The prompt's logits and one decode step's, as generate calls them (a padded batch: a mask and positions;
    no padding: neither, as _Context.extend does)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True)
    if mask is None:
        return out.logits, model(input_ids=step, cache=cache, use_cache=True).logits
    grown = torch.cat([mask, torch.ones_like(step)], dim=1)
    positions = grown.long().cumsum(-1)[:, -1:] - 1
    return out.logits, model(input_ids=step, attention_mask=grown, position_ids=positions, cache=cache,
                             use_cache=True).logits


def _lean_equals_transformers(model, masks):
    """Each mask's prompt and decode step give the same logits, bit for bit, with the lean step as without; returns
    how often the first layer's module ran under the lean step, beyond the prompts."""
    import torch

    torch.manual_seed(0)
    ids = torch.randint(5, 60, (3, 7))
    step = torch.randint(5, 60, (3, 1))
    extra = 0
    for mask in masks:
        with torch.inference_mode():
            want_prompt, want = _step_logits(model, ids, mask, step)
            calls, handle = _layer_calls(model)
            undo = lean_step.patch(model)
            assert undo is not None
            try:
                got_prompt, got = _step_logits(model, ids, mask, step)
            finally:
                undo()
                handle.remove()
        extra += len(calls) - 1
        assert torch.equal(got_prompt, want_prompt)
        assert torch.equal(got, want)
    assert "forward" not in vars(lean_step._inner(model))
    return extra


PADDED = [[0, 0, 1, 1, 1, 1, 1], [1] * 7, [0, 1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_a_decode_step_gives_transformers_logits_bit_for_bit(tiny_models, dtype):
    """Padded rows (the SDPA mask path) and unpadded ones (GQA without a mask), on fp32, bf16 and int8 copies."""
    import torch

    from poetwb.core import int8

    model = models.load(str(tiny_models["llama"]), dtype="fp32" if dtype == "int8" else dtype).model
    if dtype == "int8":
        if not int8.available():
            pytest.skip("no int8 copies on this CPU")
        int8.quantize(model)
    # the decode steps did not go through the modules (the prompts did)
    assert _lean_equals_transformers(model, [None, torch.ones(3, 7, dtype=torch.long), torch.tensor(PADDED)]) == 0


def test_multi_head_attention_and_an_adapter_on_the_embeddings():
    """One key/value head per query head (DeepSeek-coder, Llama 2) takes SDPA's plain path; LoRA on embed_tokens
    (a target a user may pick) is applied, since the lookup goes through the module peft wraps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=64, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    assert model.config._attn_implementation == "sdpa"
    assert _lean_equals_transformers(model, [None, torch.tensor(PADDED)]) == 0
    tuned = get_peft_model(model, LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False))
    tuned.eval()
    assert _lean_equals_transformers(tuned, [None, torch.tensor(PADDED)]) == 0


def test_a_hook_on_a_layer_sends_the_step_through_the_modules(tiny_models):
    """peft's per-call adapter_names (and any user hook) works through hooks that a direct .forward would skip."""
    import torch

    model = models.load(str(tiny_models["llama"]), dtype="fp32").model
    q_proj = lean_step._inner(model).layers[1].self_attn.q_proj
    handle = q_proj.register_forward_pre_hook(lambda module, args: None)
    try:
        assert _lean_equals_transformers(model, [None, torch.tensor(PADDED)]) == 2  # each decode step: modules
    finally:
        handle.remove()


def test_greedy_poems_are_unchanged_side_by_side_with_an_adapter(tiny_models, make_run, monkeypatch):
    """generate.columns (base row + tuned row, LoRA row masks) writes the same greedy poems with the lean step as
    through transformers' modules, and the lean step is what ran."""
    from poetwb.core import runs

    adapter = runs.adapter_dir(make_run(tiny_models["llama"], "lean"), 2)
    loaded = models.load(str(tiny_models["llama"]), adapter, dtype="fp32")
    s = SamplingConfig(temperature=0, max_new_tokens=20, repetition_penalty=1.1)

    def poems() -> tuple[list[str], int]:
        calls, handle = _layer_calls(loaded.model)
        texts = ["", ""]
        try:
            for col, chunk in generate.columns(loaded, "The sea is blue", s, [None, "default"]):
                texts[col] += chunk
        finally:
            handle.remove()
        return texts, len(calls)

    lean, lean_calls = poems()
    monkeypatch.setattr(lean_step, "ENABLED", False)
    plain, plain_calls = poems()
    assert lean == plain and lean[0] != lean[1] and all(lean)
    assert lean_calls == 1 and plain_calls > 10  # the prompt alone, against the prompt and every step


def test_gpt2_keeps_transformers_forward(tiny_models):
    model = models.load(str(tiny_models["gpt2"])).model
    assert not lean_step.eligible(model)
    assert lean_step.patch(model) is None
