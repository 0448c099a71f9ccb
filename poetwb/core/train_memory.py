"""How much memory a training stage keeps, and the one switch that trades time for it.

A LoRA step keeps, for its backward pass, the activations of every decoder layer: for SmolLM2-135M at batch 4 x 256
in fp32 that is ~1.35 GB (after lean_dropout; README "Training memory"), more than the model's weights. Gradient
checkpointing keeps only each layer's input and recomputes the layer in the backward pass: the same loss and
gradients (torch restores the random state, so LoRA dropout draws the same masks), a fraction of the memory, and
about one more forward pass of time. The run's `gradient_checkpointing` setting says true, false or "auto"; auto
turns it on when the stage's estimated activations would take more than a quarter of the memory available when
the stage starts, so a machine with room to spare keeps the faster step and a tight one does not run out.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("poetwb.train")

AUTO_SHARE = 0.25
"""auto: checkpoint when the estimated activations exceed this share of the memory available at the stage's start."""


def activation_bytes(model_config: Any, batch: int, seq_len: int, bytes_per_value: int = 4) -> int:
    """Estimated activations a stage keeps for the backward pass without checkpointing: per token and decoder layer
    ~10 values per hidden unit (norms, attention's q/k/v/out, residuals, LoRA inputs) and ~4 per MLP unit (gate,
    up, activation, product). Measured on SmolLM2-135M (LoRA on all linears, batch 4 x 256, fp32): ~1,350 MiB kept
    (with lean_dropout), this estimate 1,395 MiB."""
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", 0) or 0
    inner = getattr(model_config, "intermediate_size", None) or getattr(model_config, "n_inner", None) or 4 * hidden
    layers = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layer", 0) or 0
    return int(batch * seq_len * layers * (10 * hidden + 4 * inner) * bytes_per_value)


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
           available: int | None = None) -> tuple[bool, str]:
    """Whether to checkpoint a stage, and why in words (for log.txt)."""
    if isinstance(setting, bool):
        return setting, f"gradient checkpointing {'on' if setting else 'off'} (set in the config)"
    estimate = activation_bytes(model_config, batch, seq_len)
    free = available if available is not None else available_bytes(device)
    if free is None:
        return False, (f"gradient checkpointing off (auto: ~{estimate / 2**30:.1f} GB of activations, "
                       "free memory unknown)")
    on = estimate > AUTO_SHARE * free
    return on, (f"gradient checkpointing {'on' if on else 'off'} (auto: ~{estimate / 2**30:.1f} GB of activations "
                f"{'>' if on else '<='} {AUTO_SHARE:.0%} of {free / 2**30:.1f} GB available)")


def enable_checkpointing(model: Any) -> None:
    """Checkpoint every decoder layer of a (peft-wrapped) transformers model, non-reentrant (torch's recommended
    variant: works with inputs that need no gradient, which a frozen embedding gives, and restores the random state
    so dropout draws the same masks twice). Caching key/values is pointless while training and transformers refuses
    it with checkpointing, so it goes off."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    causal.config.use_cache = False
    enable = getattr(causal, "activation_checkpointing_enable", None) or causal.gradient_checkpointing_enable
    enable({"use_reentrant": False})


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

