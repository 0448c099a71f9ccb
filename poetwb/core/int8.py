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
"""

from __future__ import annotations

from typing import Any

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


def _mm(rows: Any, values: Any, scales: Any) -> Any:
    """The kernel, looked up per call (a test counts the calls)."""
    import torch

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


def int8_rows(weight: Any) -> tuple[Any, Any]:
    """Symmetric per-row int8 of an (out, in) fp32 weight: (int8 values, bf16 scales) with weight ≈ values × scale."""
    import torch

    w = weight.detach()
    scales = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.bfloat16).tiny).to(torch.bfloat16)
    values = w / scales.float()[:, None]  # one fp32 temporary, rounded in place
    return values.round_().clamp_(-127, 127).to(torch.int8).contiguous(), scales


class Copies:
    """A layer's int8 copies: of its own weights (key None) and, per adapter merged in (`merge`), of its weights
    plus that adapter's LoRA delta. `use` picks the one decode steps read."""

    def __init__(self, values: Any, scales: Any, conv: bool) -> None:
        self.by_key: dict[str | None, tuple[Any, Any]] = {None: (values, scales)}
        self.conv = conv
        self.key: str | None = None
        self.pair = (values, scales)
        """(int8 values, bf16 scales) of the copy decode steps read now; one attribute, swapped in one store."""

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
        copies = Copies(*int8_rows(out_in), conv)
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
            out = _mm(rows.to(torch.bfloat16).contiguous(), *copies.pair).float()
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
            copies.by_key[name] = int8_rows(weight.t() if copies.conv else weight)
    return copies


def restore(model: Any) -> None:
    """Undo `quantize`: every layer computes with its fp32 weights again (and the int8 copies are freed)."""
    for layer in model.modules():
        if vars(layer).pop("poetwb_int8", None) is not None:
            vars(layer).pop("forward", None)


def is_quantized(model: Any) -> bool:
    return any(vars(layer).get("poetwb_int8") is not None for layer in model.modules())
