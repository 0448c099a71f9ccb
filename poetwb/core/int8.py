"""Int8 copies of a model's weights for decoding on CPUs without native bf16.

A decode step multiplies every weight matrix by one or a few rows, so its time is the weights' bytes over memory
bandwidth, not arithmetic. fp32 weights read 4 bytes each; an int8 copy with one scale per output row reads 1, and
torch's weight-only int8 kernel (`_weight_int8pack_mm`: bf16 activations and results) takes a few rows for little
more than one. Measured here (AMD EPYC, AVX2 only, 2 threads, the bundled model's shapes, weights out of
cache): 0.2-0.35x fp32's time for 1-4 rows, 0.33-0.53x for 8, 0.6-0.8x for 16, slower from 64 rows (prefill).
So a layer takes the int8 copy for inputs of one position per row (decode steps of 1-16 rows; also the output head
after a prompt, since generate keeps only the last position's logits) and its own fp32 weights for everything else
(a prompt's layers, rescoring passes, training): the fp32 weights stay, and a row's numbers do not depend on how
many other rows share its batch. On a model, `quantize` patches every plain
linear layer's forward (and GPT-2's Conv1D); LoRA layers keep computing their low-rank part in fp32 on top, except
in the decode steps of batches whose rows all use one adapter: those read copies with the adapter merged in
(`merge`, chosen by generate.RowMask), so a tuned column alone or a form's candidate lines compute no LoRA products
on these layers (prompts and rescoring passes still do, on the fp32 weights).

The copy rounds each weight to one of 255 levels of its row, and activations and results to bf16. With every
product on the copies (ALWAYS, a bound) the bundled model's held-out loss moved by under 0.2 %
(benchmarks/bench_decode.py prints it). Exact
fp32 decoding stays one flag away (--dtype fp32). CPU only; GPUs keep their own kernels.

**4-bit copies where they are exact.** A model converted from a 4-bit GGUF (the bundled SmolLM2 is Q4_1: 16 levels
per block of 32 inputs, a scale and a minimum each) has weights that sit on such a grid, and torch's weight-only
int4 kernel (`_weight_int4pack_mm_for_cpu`, groups of 32, a bf16 scale and zero each) holds them again up to the
bf16 rounding of the scales: 0.2 % relative error on the bundled model's layers against 0.8-0.9 % for the int8
copy, and it reads half the bytes (one decode step's products about half the int8 time at 1-2 rows here, more
rows gain less). So each layer takes the 4-bit copy when it is at least as close to the weights as the 8-bit one:
models with weights of their own (GPT-2, DeepSeek-coder from the hub: ~8 % error in 4 bits) keep int8 everywhere,
a tied head stored at 8 bits keeps int8, and nothing is decided by a model's name. Copies with an adapter merged
in are int8 (a LoRA delta is off the 4-bit grid).
"""

from __future__ import annotations

from typing import Any

GROUP = 32
"""Inputs per scale and zero of a 4-bit copy (Q4_1's block)."""
MAX_ROWS = 16
"""Decode steps of up to this many rows read the int8 copies; bigger ones the fp32 weights (crossover: 32-64)."""
ALWAYS = False
"""Benchmarks: every product reads the copies, prompts too (the quality bound bench_decode reports)."""


def available() -> bool:
    """Whether int8 copies are offered here: torch has the CPU weight-only int8 kernel and this CPU runs its AVX2
    code, the one measured (its AVX-512 code steps 16 wide with aligned loads, and other CPUs get a scalar loop:
    unmeasured, so they keep fp32)."""
    import torch

    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return hasattr(torch.ops.aten, "_weight_int8pack_mm") and capability == "AVX2"


def _mm(rows: Any, copy: tuple[int, Any, Any]) -> Any:
    """rows (bf16) times a copy (bits, values, scales): the int8 or int4 kernel, looked up per call (a test counts
    the calls)."""
    import torch

    bits, values, scales = copy
    if bits == 4:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, values, GROUP, scales)
    return torch.ops.aten._weight_int8pack_mm(rows, values, scales)


def _layers(model: Any) -> list[tuple[Any, Any, bool]]:
    """(layer, fp32 weight as (out, in), is Conv1D) for every layer the kernel can take: plain linear layers and
    GPT-2's Conv1D whose input width is a multiple of 16 (the kernel reads 8 or 16 at a time: other widths give
    wrong numbers or crash).
    LoRA's own A and B layers stay fp32: they are small, and the fine-tune lives in them."""
    import torch
    from transformers.pytorch_utils import Conv1D

    found = []
    for name, layer in model.named_modules():
        if "forward" in vars(layer) or "lora_" in name:
            continue
        if type(layer) is torch.nn.Linear:
            weight, conv = layer.weight, False
        elif type(layer) is Conv1D:
            weight, conv = layer.weight.t(), True
        else:
            continue
        if weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.shape[1] % 16 == 0:
            found.append((layer, weight, conv))
    return found


def _four_bits() -> bool:
    import torch

    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and \
        hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def int4_groups(weight: Any) -> tuple[Any, Any, Any]:
    """Asymmetric int4 of an (out, in) fp32 weight in groups of GROUP inputs, packed for the CPU kernel:
    (packed values, bf16 (in / GROUP, out, 2) scales and zeros, the weight as the kernel reads it back), with
    weight ≈ (q - 8) × scale + zero. out must be a multiple of 16 and in of GROUP."""
    import torch

    w = weight.detach()
    out_features, in_features = w.shape
    groups = w.view(out_features, in_features // GROUP, GROUP)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = ((high - low) / 15).clamp_min(torch.finfo(torch.bfloat16).tiny)
    q = ((groups - low[..., None]) / scale[..., None]).round_().clamp_(0, 15)
    scale_b, zero_b = scale.to(torch.bfloat16), (low + 8 * scale).to(torch.bfloat16)
    back = ((q - 8) * scale_b.float()[..., None] + zero_b.float()[..., None]).view(out_features, in_features)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(out_features, in_features).to(torch.int32), 1)
    return packed, torch.stack([scale_b, zero_b], -1).transpose(0, 1).contiguous(), back


def best_copy(weight: Any) -> tuple[int, Any, Any]:
    """The copy a layer's decode steps read: (4, …) where a 4-bit copy errs no more than the int8 one (weights
    on a 4-bit grid), else (8, values, scales)."""
    weight = weight.detach()
    values, scales = int8_rows(weight)
    out_features, in_features = weight.shape
    if _four_bits() and out_features % 16 == 0 and in_features % GROUP == 0:
        packed, scales_zeros, back = int4_groups(weight)
        err4 = back.sub_(weight).norm()
        del back  # fp32 temporaries one at a time: the bundled head alone is 113 MB of them
        if err4 <= values.float().mul_(scales.float()[:, None]).sub_(weight).norm():
            return 4, packed, scales_zeros
    return 8, values, scales


def int8_rows(weight: Any) -> tuple[Any, Any]:
    """Symmetric per-row int8 of an (out, in) fp32 weight: (int8 values, bf16 scales) with weight ≈ values × scale."""
    import torch

    w = weight.detach()
    scales = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.bfloat16).tiny).to(torch.bfloat16)
    values = w / scales.float()[:, None]  # one fp32 temporary, rounded in place
    return values.round_().clamp_(-127, 127).to(torch.int8).contiguous(), scales


class Copies:
    """A layer's copies: of its own weights (key None: int4 or int8, `best_copy`) and, per adapter merged in
    (`merge`), int8 of its weights plus that adapter's LoRA delta. `use` picks the one decode steps read."""

    def __init__(self, copy: tuple[int, Any, Any], conv: bool) -> None:
        self.by_key: dict[str | None, tuple[int, Any, Any]] = {None: copy}
        self.conv = conv
        self.key: str | None = None
        self.pair = copy
        """(bits, values, scales) of the copy decode steps read now; one attribute, swapped in one store."""

    def use(self, key: str | None) -> None:
        key = key if key in self.by_key else None
        self.pair, self.key = self.by_key[key], key


def is_step(x: Any) -> bool:
    """Whether a layer's input takes the int8 copy: one position per row, at most MAX_ROWS rows (a decode step),
    fp32, no autograd."""
    import torch

    return ((ALWAYS or (x.dim() == 3 and x.shape[1] == 1 and x.shape[0] <= MAX_ROWS))
            and x.dtype == torch.float32 and not torch.is_grad_enabled())


def quantize(model: Any) -> int:
    """Give every eligible layer of a CPU fp32 model an int8 copy for decode steps; returns how many layers.

    Idempotent: layers already patched (by this or another lean path) are left as they are."""
    import torch
    import torch.nn.functional as F

    count = 0
    for layer, out_in, conv in _layers(model):
        copies = Copies(best_copy(out_in), conv)
        bias = layer.bias
        out_features = out_in.shape[0]

        # the closure holds the weight, not the layer: a layer holding itself would wait for the cycle collector
        def forward(x: Any, weight: Any = layer.weight, copies: Copies = copies, bias: Any = bias, conv: bool = conv,
                    n: int = out_features) -> Any:
            rows = x.reshape(-1, x.shape[-1])
            if not is_step(x):
                if conv:  # Conv1D's own forward: x @ W + b with W stored (in, out)
                    return torch.addmm(bias, rows, weight).view(*x.shape[:-1], n)
                return F.linear(x, weight, bias)
            out = _mm(rows.to(torch.bfloat16).contiguous(), copies.pair).float()
            if bias is not None:
                out = out + bias
            return out.view(*x.shape[:-1], n)

        layer.forward = forward
        layer.poetwb_int8 = copies
        count += 1
    return count


def merge(lora_layer: Any, name: str) -> Copies | None:
    """The int8 copies of a peft LoRA layer's base layer, with one of `name` merged in: W + scale·BA rounded to int8
    as W alone is (made once, then kept: about a base copy's size per adapter). None when the base layer has no
    int8 copies.

    Rounding W + δ to 255 levels a row errs as much as rounding W does (δ moves the scale by little), so a tuned
    decode step on the merged copy is as close to the exact tuned model as a base step is to the exact base model,
    with no LoRA products at all (benchmarks/bench_decode.py prints the held-out loss of both)."""
    import torch

    copies = vars(lora_layer.base_layer).get("poetwb_int8")
    if not isinstance(copies, Copies):
        return None
    if name not in copies.by_key:
        with torch.no_grad():
            weight = lora_layer.base_layer.weight + lora_layer.get_delta_weight(name)  # the base weight's layout
            copies.by_key[name] = (8, *int8_rows(weight.t() if copies.conv else weight))
    return copies


def restore(model: Any) -> None:
    """Undo `quantize`: every layer computes with its fp32 weights again (and the int8 copies are freed)."""
    for layer in model.modules():
        if vars(layer).pop("poetwb_int8", None) is not None:
            vars(layer).pop("forward", None)


def is_quantized(model: Any) -> bool:
    return any(vars(layer).get("poetwb_int8") is not None for layer in model.modules())


def bits(model: Any) -> set[int]:
    """The widths of a quantized model's base copies: {8}, {4} or {4, 8} (empty when it has none)."""
    return {copies.by_key[None][0] for layer in model.modules()
            if isinstance(copies := vars(layer).get("poetwb_int8"), Copies)}
