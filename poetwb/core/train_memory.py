"""How much memory a training stage keeps, and the one switch that trades time for it.

A LoRA step keeps, for its backward pass, the activations of every decoder layer: for SmolLM2-135M at batch 4 x 256
in fp32 that is ~0.9 GB even after lean_dropout and lean_activations (README "Training memory"), more than the
model's weights. Gradient checkpointing keeps only a layer's input and recomputes the layer in the backward pass:
the same loss and gradients (torch restores the random state, so LoRA dropout draws the same masks), a fraction of
that layer's memory, and one more forward pass of that layer in time. It can be had for every layer or for some:
the cost and the saving are both per layer. The run's `gradient_checkpointing` setting says true (every layer),
false (none) or "auto": as few layers as keep the stage's estimated activations within a budget, the smaller of
the model's weights' size and a quarter of the memory available when the stage starts. So training takes about
twice the weights plus the libraries whatever the batch, and a small model on a big machine pays for only a part
of the layers; a model whose weights outweigh its activations checkpoints nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("poetwb.train")

AUTO_SHARE = 0.25
"""auto: the activations may take at most this share of the memory available at the stage's start ..."""
AUTO_WEIGHTS = 1.0
"""... and at most this multiple of the model's weights' size (in memory)."""


def num_layers(model_config: Any) -> int:
    return int(getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layer", 0) or 0)


def layer_bytes(model_config: Any, batch: int, seq_len: int, bytes_per_value: int = 4) -> tuple[int, int]:
    """Estimated activations one decoder layer keeps for the backward pass (with lean_dropout and
    lean_activations), and what it keeps when checkpointed (its input): per token ~8 values per hidden unit
    (attention's q/k/v/output, the residuals, the LoRA dropout masks at a byte each) and ~2 per MLP unit (gate and
    up). Measured on SmolLM2-135M (LoRA on all linears, batch 4 x 256, fp32): ~29 MB kept per layer, this
    estimate 31 MB."""
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", 0) or 0
    inner = getattr(model_config, "intermediate_size", None) or getattr(model_config, "n_inner", None) or 4 * hidden
    tokens = batch * seq_len * bytes_per_value
    return int(tokens * (8 * hidden + 2 * inner)), int(tokens * hidden)


def activation_bytes(model_config: Any, batch: int, seq_len: int, bytes_per_value: int = 4) -> int:
    """Estimated activations a stage keeps for the backward pass without checkpointing (all layers)."""
    return num_layers(model_config) * layer_bytes(model_config, batch, seq_len, bytes_per_value)[0]


def layers_to_checkpoint(model_config: Any, batch: int, seq_len: int, budget: float) -> int:
    """The fewest decoder layers to checkpoint so that the estimated activations fit in budget (bytes); all
    layers when even that does not fit."""
    layers = num_layers(model_config)
    kept, checkpointed = layer_bytes(model_config, batch, seq_len)
    for n in range(layers + 1):
        if (layers - n) * kept + n * checkpointed <= budget:
            return n
    return layers


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a new allocation can get now: the GPU's free memory on CUDA, else Linux's MemAvailable (None where
    neither can be read)."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def decide(setting: str | bool, model_config: Any, batch: int, seq_len: int, device: str = "cpu",
           available: int | None = None, weights: int | None = None) -> tuple[int, str]:
    """How many decoder layers to checkpoint in a stage (0: none; all of them for true), and why in words (for
    log.txt). weights: the model's parameters' bytes in memory (auto's budget); available: free memory in bytes
    (read from the system when not given)."""
    layers = num_layers(model_config)
    if isinstance(setting, bool):
        return (layers if setting else 0), (f"gradient checkpointing {'on' if setting else 'off'} "
                                            "(set in the config)")
    kept, checkpointed = layer_bytes(model_config, batch, seq_len)
    estimate = layers * kept
    free = available if available is not None else available_bytes(device)
    limits = []
    if weights:
        limits.append((AUTO_WEIGHTS * weights, f"the weights' {weights / 2**30:.2f} GB"))
    if free is not None:
        limits.append((AUTO_SHARE * free, f"{AUTO_SHARE:.0%} of {free / 2**30:.1f} GB available"))
    if not limits:
        return 0, (f"gradient checkpointing off (auto: ~{estimate / 2**30:.2f} GB of activations, "
                   "free memory unknown)")
    budget, why = min(limits)
    n = layers_to_checkpoint(model_config, batch, seq_len, budget)
    said = f"~{estimate / 2**30:.2f} GB of activations {'>' if n else '<='} budget {budget / 2**30:.2f} GB ({why})"
    if n == 0:
        return 0, f"gradient checkpointing off (auto: {said})"
    after = (layers - n) * kept + n * checkpointed
    which = "on" if n == layers else f"on {n} of {layers} decoder layers"
    return n, f"gradient checkpointing {which} (auto: {said}; ~{after / 2**30:.2f} GB with it)"


def enable_checkpointing(model: Any, layers: int | None = None) -> None:
    """Checkpoint the first `layers` decoder layers (all when None) of a (peft-wrapped) transformers model,
    non-reentrant (torch's recommended variant: works with inputs that need no gradient, which a frozen embedding
    gives, and restores the random state so dropout draws the same masks twice). The first ones because their
    recomputation comes last in the backward pass, when the later layers' activations are already freed. Caching
    key/values is pointless while training and transformers refuses it with checkpointing, so it goes off."""
    from poetwb.core.lean_activations import decoder_layers

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    causal.config.use_cache = False
    enable = getattr(causal, "activation_checkpointing_enable", None) or causal.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    if layers is not None:
        for i, layer in enumerate(decoder_layers(causal)):
            layer.gradient_checkpointing = i < layers


def disable_checkpointing(model: Any) -> None:
    """Undo enable_checkpointing (a no-op on a model that does not checkpoint)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    flag = "is_activation_checkpointing" if hasattr(type(causal), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"  # transformers < 5.x has only the older name
    if not getattr(causal, flag, False):
        return
    disable = getattr(causal, "activation_checkpointing_disable", None) or causal.gradient_checkpointing_disable
    disable()
    causal.config.use_cache = True  # as enable_checkpointing found it on a model loaded for generation
    if hasattr(causal, "disable_input_require_grads"):
        causal.disable_input_require_grads()


MMAP_THRESHOLD = 1 << 20
"""Allocations from this size up get their own mapping (returned to the system when freed)."""


def tune_allocator() -> bool:
    """Make freed tensors' memory go back to the system in the training process (glibc only; True where set).

    glibc serves allocations above a threshold with their own mmap, but after the first such block is freed it
    raises the threshold (up to 32 MB) to avoid the cost of mapping again, so a training step's many 2-25 MB
    activations end up on the heap, where freed memory stays resident and fragments: measured here, the resident
    memory of a LoRA step settled 1-1.5 GB above what it used. A fixed 1 MB threshold (mallopt M_MMAP_THRESHOLD,
    which also turns the raising off) returns each freed activation at once. Mapping them again costs page faults,
    too few to measure here (best step of 3, alternated in one process: 16.0 s with it, 17.8 s without; noisy).
    Same effect as MALLOC_MMAP_THRESHOLD_=1048576 in the environment, but set by the job itself so every way of
    starting it gets it."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False

