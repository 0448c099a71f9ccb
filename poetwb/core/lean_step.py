"""A Llama-family decode step in one function, for CPUs: the same operations as transformers' forward, without its
per-layer module calls.

Why: a decode step of the bundled model (30 layers) goes through ~15 module calls per layer, each with
transformers' decorators, keyword plumbing and mask building, around kernels that take 30-130 µs. Measured here
(AMD EPYC, AVX2 only, 2 threads, int8 copies, the `poet` adapter): 8-10 ms of a 2-row step of ~75-85 ms, whatever
the number of rows. This function walks the layers itself and calls each projection's own `forward` (so int8
copies, LoRA row masks and few-row products apply as before), with transformers' norm, rotary and SDPA arithmetic
in the same order: a step's logits are bit-identical to transformers' (tests compare them, greedy poems too).

It takes only decode steps (one new token per row, a DynamicCache without sliding layers, no autograd, eval mode,
no recorded outputs, no hooks on the layers it calls directly) of a plain LlamaModel (SmolLM2, DeepSeek-coder,
Llama) with SDPA attention and transformers' own norms; prompts, training, rescoring passes and every other
architecture keep transformers' forward. generate.FewRows installs it for the time of a generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ENABLED = True
"""False: decode steps go through transformers' modules (the path before, for benchmarks)."""


def _inner(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "model", None)


def eligible(model: Any) -> bool:
    """Whether `patch` takes this model's decode steps."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel, LlamaRMSNorm

    inner = _inner(model)
    if type(inner) is not LlamaModel or "forward" in vars(inner):
        return False
    config = inner.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    norms = [inner.norm, *(n for layer in inner.layers
                           for n in (layer.input_layernorm, layer.post_attention_layernorm))]
    return (config._attn_implementation == "sdpa" and head_dim <= 256
            and not getattr(config, "sliding_window", None)
            and all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ())
            and all(type(layer) is LlamaDecoderLayer for layer in inner.layers)
            and all(type(n) is LlamaRMSNorm for n in norms))


def patch(model: Any) -> Callable[[], None] | None:
    """Give the model's LlamaModel the lean decode step; returns the undo, or None when not eligible (or already
    patched: nested generations keep the outer one)."""
    if not ENABLED or not eligible(model):
        return None
    inner = _inner(model)
    inner.forward = _lean_forward(inner)
    return lambda: vars(inner).pop("forward", None)


def _lean_forward(inner: Any) -> Callable[..., Any]:
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache
    from transformers.integrations.sdpa_attention import use_gqa_in_sdpa
    from transformers.modeling_outputs import BaseModelOutputWithPast

    plain = type(inner).forward
    config = inner.config
    layers = list(inner.layers[: config.num_hidden_layers])
    attn0 = layers[0].self_attn
    head_dim, groups, scaling = attn0.head_dim, attn0.num_key_value_groups, attn0.scaling
    cache_field = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
    # modules whose hooks a direct `.forward` call would skip (peft's per-call adapter_names works through hooks)
    called = [m for layer in layers for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                                              layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
                                              layer.mlp.down_proj, layer.input_layernorm,
                                              layer.post_attention_layernorm)] + [inner.norm]

    def norm(layer: Any, x: Any) -> Any:  # LlamaRMSNorm.forward, op for op
        wide = x.to(torch.float32)
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + layer.variance_epsilon)
        return layer.weight * wide.to(x.dtype)

    def rotate(x: Any, cos: Any, sin: Any) -> Any:  # apply_rotary_pos_emb for one tensor
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def forward(input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None, cache: Any = None,
                inputs_embeds: Any = None, use_cache: Any = None, past_key_values: Any = None, **kwargs: Any) -> Any:
        cache = cache if cache is not None else past_key_values
        if (input_ids is None or inputs_embeds is not None or input_ids.dim() != 2 or input_ids.shape[1] != 1
                or not isinstance(cache, DynamicCache) or any(getattr(cache, "is_sliding", ()))
                or torch.is_grad_enabled() or inner.training
                or (attention_mask is not None and (attention_mask.dim() != 2
                                                    or attention_mask.shape[-1] != cache.get_seq_length() + 1))
                or any(kwargs.get(k) or getattr(config, k, False)
                       for k in ("output_attentions", "output_hidden_states"))
                or any(m._forward_hooks or m._forward_pre_hooks for m in called)):
            return plain(inner, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, **{cache_field: cache}, **kwargs)
        rows = input_ids.shape[0]
        h = inner.embed_tokens(input_ids)  # the module: an adapter may wrap it
        if position_ids is None:
            position_ids = torch.full((1, 1), cache.get_seq_length(), device=h.device, dtype=torch.long)
        cos, sin = inner.rotary_emb(h, position_ids=position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        # transformers' SDPA mask for one query position: none when no key is padding, else the padding itself
        mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()[:, None, None]
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            x = norm(layer.input_layernorm, h)
            q = attn.q_proj.forward(x).view(rows, 1, -1, head_dim).transpose(1, 2)
            k = attn.k_proj.forward(x).view(rows, 1, -1, head_dim).transpose(1, 2)
            v = attn.v_proj.forward(x).view(rows, 1, -1, head_dim).transpose(1, 2)
            k, v = cache.update(rotate(k, cos, sin), v, attn.layer_idx)
            q = rotate(q, cos, sin)
            if groups == 1:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
            elif use_gqa_in_sdpa(mask, k, v):  # transformers' choice between its two GQA paths
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=True)
            else:  # one query: the key/value heads' query groups as positions (transformers' pack_gqa)
                o = F.scaled_dot_product_attention(q.reshape(rows, -1, groups, head_dim), k, v, attn_mask=mask,
                                                   scale=scaling)
            o = o.reshape(rows, -1, 1, head_dim).transpose(1, 2).reshape(rows, 1, -1)
            h = h + attn.o_proj.forward(o)
            x = norm(layer.post_attention_layernorm, h)
            h = h + mlp.down_proj.forward(mlp.act_fn(mlp.gate_proj.forward(x)) * mlp.up_proj.forward(x))
        return BaseModelOutputWithPast(last_hidden_state=norm(inner.norm, h), **{cache_field: cache})

    return forward
