"""LoRA dropout without its two full-size copies per adapted layer, same numbers as peft's.

peft computes `lora_B(lora_A(dropout(x)))`. On the CPU, torch's dropout is `x * noise` with `noise` a float tensor
(bernoulli(1 - p) / (1 - p)), and autograd keeps that noise for the backward pass while `lora_A` keeps the dropped
copy of `x` for its weight gradient: two tensors the size of the layer's input, in fp32, for every adapted linear
layer. With LoRA on all 210 linear layers of SmolLM2-135M at batch 4 x 256 that is ~1.2 GB of the ~2.6 GB a training
step keeps for its backward pass (measured, README "Memory").

Here dropout and `lora_A` are one autograd function that keeps only `x` (which the frozen base layer keeps anyway)
and a one-byte mask, and rebuilds the dropped copy in the backward pass (an element-wise multiply, against the
matmuls around it). The mask is drawn exactly as torch's CPU dropout draws it (`empty_like(x).bernoulli_(1 - p)`),
so with the same seed the forward, the loss and the gradients are bitwise those of peft's own path on the CPU
(tested); on CUDA torch's fused dropout draws differently, so there it is the same distribution, not the same draw.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _DropoutLinear(torch.autograd.Function):
    """linear(dropout(x, p), weight) keeping x and a bool mask instead of the float noise and the dropped copy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        noise = torch.empty_like(x).bernoulli_(1 - p)  # the same draw as torch's CPU dropout
        keep = noise.bool()
        noise.div_(1 - p)
        ctx.p = p
        ctx.save_for_backward(x, keep, weight)
        return F.linear(x * noise, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, keep, weight = ctx.saved_tensors
        scale = keep.to(x.dtype).div_(1 - ctx.p)  # bitwise the forward's noise
        dtype = grad.dtype  # under autocast the forward's matmul ran in it: the backward's matmuls do too
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(dtype)).to(x.dtype) * scale
        if ctx.needs_input_grad[1]:
            dropped = (x * scale).to(dtype)
            grad_w = (grad.reshape(-1, grad.shape[-1]).t() @ dropped.reshape(-1, x.shape[-1])).to(weight.dtype)
        return grad_x, grad_w, None


class DropoutLinear(nn.Linear):
    """A LoRA `lora_A` that applies its layer's dropout itself (while training); the same weight and state-dict
    key as the nn.Linear it replaces, so saved adapters and checkpoints are unchanged."""

    p: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            return _DropoutLinear.apply(x, self.weight, self.p)
        return F.linear(x, self.weight, self.bias)


def install(model: Any) -> int:
    """Fuse each plain LoRA linear layer's dropout into its lora_A, in place; returns how many were fused. Layers
    this does not cover (LoRA variants such as DoRA, embeddings, convolutions, a lora_A with a bias, p = 0) keep
    peft's path."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    fused = 0
    for module in model.modules():
        if not isinstance(module, LoraLinear):
            continue
        for name, dropout in list(module.lora_dropout.items()):
            lora_a = module.lora_A[name] if name in module.lora_A else None  # noqa: SIM401 (a ModuleDict)
            if (type(dropout) is not nn.Dropout or dropout.p <= 0 or type(lora_a) is not nn.Linear
                    or lora_a.bias is not None or name in getattr(module, "lora_variant", {})):
                continue
            lora_a.__class__ = DropoutLinear  # same parameters, hooks and state-dict keys; dropout now inside
            lora_a.p = float(dropout.p)
            module.lora_dropout[name] = nn.Identity()
            fused += 1
    return fused


def uninstall(model: Any) -> int:
    """Undo `install`: peft's own dropout module and plain lora_A again (e.g. before handing the model elsewhere)."""
    restored = 0
    for module in model.modules():
        lora_as = getattr(module, "lora_A", None)
        if not isinstance(lora_as, nn.ModuleDict):
            continue
        for name, lora_a in lora_as.items():
            if type(lora_a) is DropoutLinear:
                module.lora_dropout[name] = nn.Dropout(p=lora_a.p).train(lora_a.training)
                lora_a.__class__ = nn.Linear
                del lora_a.p
                restored += 1
    return restored
