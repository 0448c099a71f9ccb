"""Keep the matmuls' outputs for the backward pass, recompute the cheap element-wise ones: same numbers, less memory.

A LoRA step keeps, for every decoder layer, tensors that are one cheap element-wise step away from others it keeps
anyway: each norm's output (kept by the LoRA layers that read it, while the norm itself keeps its input), the MLP's
activation `act(gate)` (kept by the product, while the activation keeps `gate`) and the product `act(gate) * up`
(kept by down_proj's LoRA, while `gate` and `up` are kept). For SmolLM2-135M at batch 4 x 256 in fp32 that is ~37 %
of the activations a step keeps (~0.5 GB; README "Training memory").

Here, while a decoder layer runs its forward pass with gradients, the outputs of its norms and activation modules
and the gated MLP's product are noted with a recipe (the module and its input); autograd's saved-tensor hooks keep
the recipe instead of the tensor, and the backward pass runs the recipe again when it needs the value (once for all
its readers). The recomputation runs the same kernels on the same inputs (under the same autocast state), so the
loss and the gradients are bitwise those of the plain path (tested); it costs the element-wise work of a norm, an
activation and a product per layer, a few percent of a step.

Not applied in a layer that gradient checkpointing recomputes whole (core.train_memory): its backward pass runs the
layer again anyway.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import textwrap
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_local = threading.local()
"""`_local.active`: the registries of the decoder layers whose forward pass runs in this thread (innermost last)."""


def _active() -> list[_Registry]:
    active = getattr(_local, "active", None)
    if active is None:
        active = _local.active = []
    return active

_ACTIVATIONS = (nn.SiLU, nn.GELU, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Mish, nn.Hardswish, nn.Softplus, nn.ELU,
                nn.LeakyReLU)


class _Recipe:
    """How to compute a tensor again: fn(*args), under the autocast state it first ran in; computed once, then
    shared by every reader until the last one lets go."""

    __slots__ = ("args", "autocast", "fn", "value", "versions")

    def __init__(self, fn: Callable[..., torch.Tensor], args: tuple[torch.Tensor, ...]) -> None:
        self.fn, self.args = fn, args
        self.versions = tuple(a._version for a in args)
        device = args[0].device.type
        try:
            self.autocast = (device, torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None
        except (RuntimeError, TypeError, AttributeError):  # a device type autocast does not know
            self.autocast = None
        self.value: torch.Tensor | None = None

    def get(self) -> torch.Tensor:
        if self.value is None:
            if tuple(a._version for a in self.args) != self.versions:
                raise RuntimeError("lean_activations: an input of a recomputed tensor was modified in place")
            cast = torch.autocast(self.autocast[0], dtype=self.autocast[1]) if self.autocast else \
                contextlib.nullcontext()
            with torch.no_grad(), cast:
                self.value = self.fn(*self.args)
        return self.value


class _Packed:
    """What autograd keeps instead of a tensor: its recipe and where the tensor lay in the recipe's result."""

    __slots__ = ("offset", "recipe", "shape", "stride")

    def __init__(self, recipe: _Recipe, t: torch.Tensor) -> None:
        self.recipe, self.shape, self.stride, self.offset = recipe, t.shape, t.stride(), t.storage_offset()


class _Registry:
    """The tensors of one decoder layer's forward pass that can be recomputed, by the address of their storage."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[weakref.ref[torch.Tensor], int, _Recipe]] = {}

    def add(self, out: Any, fn: Callable[..., torch.Tensor], args: tuple[Any, ...]) -> None:
        """Note `out` as fn(*args) when that is safe to redo: a fresh, whole tensor computed from tensors only."""
        if (not isinstance(out, torch.Tensor) or not args or out.numel() == 0 or out.layout != torch.strided
                or not all(isinstance(a, torch.Tensor) for a in args) or out.storage_offset() != 0
                or not out.is_contiguous()):
            return
        try:
            storage = out.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without storage (subclasses, meta)
            return
        if storage.nbytes() != out.numel() * out.element_size():
            return
        ptr = storage.data_ptr()
        if any(a.untyped_storage().data_ptr() == ptr for a in args):  # computed in place: not a fresh tensor
            return
        self.entries[ptr] = (weakref.ref(out), out._version, _Recipe(fn, args))

    def pack(self, t: torch.Tensor) -> Any:
        try:
            entry = self.entries.get(t.untyped_storage().data_ptr()) if t.layout == torch.strided else None
        except (RuntimeError, NotImplementedError):
            entry = None
        if entry is None:
            return t
        ref, version, recipe = entry
        out = ref()
        # alive (so its memory is not another tensor's), unchanged since, and the same kind of tensor
        if out is None or t._version != version or t.dtype != out.dtype or t.device != out.device:
            return t
        return _Packed(recipe, t)

    @staticmethod
    def unpack(packed: Any) -> torch.Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        return packed.recipe.get().as_strided(packed.shape, packed.stride, packed.offset)


def _note_output(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
    """Forward hook of norms and activation modules: their output is module(*args), cheap to compute again."""
    active = _active()
    if active and not kwargs:
        active[-1].add(output, module, args)


def _gated_product(act: nn.Module, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return act(gate) * up


def _gated_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Llama's gated MLP, `down_proj(act_fn(gate_proj(x)) * up_proj(x))`, with the product noted as recomputable."""
    gate, up = self.gate_proj(x), self.up_proj(x)
    product = _gated_product(self.act_fn, gate, up)
    active = _active()
    if active:
        active[-1].add(product, lambda g, u: _gated_product(self.act_fn, g, u), (gate, up))
    return self.down_proj(product)


@functools.lru_cache(maxsize=64)
def _source(fn: Any) -> str:
    """The statements of a function's body (their syntax tree: formatting, comments and the signature aside); read
    and parsed once per function, not once per layer."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        function = tree.body[0]
        return ast.dump(ast.Module(body=function.body, type_ignores=[])) if isinstance(
            function, ast.FunctionDef) else ""
    except (OSError, TypeError, SyntaxError, IndexError):
        return ""


def _llama_mlp_source() -> str:
    from transformers.models.llama.modeling_llama import LlamaMLP

    return _source(LlamaMLP.forward)


def _is_gated_mlp(module: nn.Module, reference: str) -> bool:
    """A module whose forward is, statement for statement, Llama's gated MLP (Llama, Mistral, Qwen2, Qwen3, Gemma,
    OLMo 2 and the other copies)."""
    return (all(isinstance(getattr(module, n, None), nn.Module) for n in ("gate_proj", "up_proj", "down_proj",
                                                                          "act_fn"))
            and bool(reference) and _source(type(module).forward) == reference)


def _is_cheap(module: nn.Module) -> bool:
    """Norms and parameter-free activation modules: their output is a cheap, deterministic function of the input."""
    if any(True for _ in module.children()):
        return False
    name = type(module).__name__
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or name.endswith(("RMSNorm", "LayerNorm")):
        return True
    if getattr(module, "inplace", False) or any(True for _ in module.parameters()):
        return False
    return isinstance(module, _ACTIVATIONS) or type(module).__module__ == "transformers.activations"


def decoder_layers(model: Any) -> list[nn.Module]:
    """The repeated decoder layers of a (peft-wrapped) transformers model, in order."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return [m for m in causal.modules() if isinstance(m, GradientCheckpointingLayer)]


def _layer_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A decoder layer's own forward, with its cheap activations noted and kept as recipes (bound to the layer as
    its `forward`, so a copy of the model rebinds it to the copy)."""
    original = type(self).forward
    if not (self.training and torch.is_grad_enabled()) or getattr(self, "gradient_checkpointing", False):
        return original(self, *args, **kwargs)
    registry = _Registry()
    active = _active()
    active.append(registry)
    try:
        with torch.autograd.graph.saved_tensors_hooks(registry.pack, registry.unpack):
            return original(self, *args, **kwargs)
    finally:
        active.pop()
        registry.entries.clear()


def _installed(layer: nn.Module) -> bool:
    return getattr(layer.__dict__.get("forward"), "__func__", None) is _layer_forward


def install(model: Any) -> int:
    """Recompute the cheap activations of every decoder layer in the backward pass; returns how many layers.
    Idempotent; `uninstall` undoes it."""
    reference = _llama_mlp_source()
    count = 0
    for layer in decoder_layers(model):
        if _installed(layer):
            count += 1
            continue
        for module in layer.modules():
            if _is_gated_mlp(module, reference):
                module.forward = types.MethodType(_gated_mlp_forward, module)
                module.__dict__["_lean_mlp"] = True
            elif _is_cheap(module):
                handle = module.register_forward_hook(_note_output, with_kwargs=True)
                module.__dict__["_lean_hook"] = handle
        layer.forward = types.MethodType(_layer_forward, layer)
        count += 1
    return count


def uninstall(model: Any) -> int:
    """Undo `install`; returns how many layers it undid."""
    count = 0
    for layer in decoder_layers(model):
        if not _installed(layer):
            continue
        del layer.forward
        for module in layer.modules():
            if module.__dict__.pop("_lean_mlp", False):
                del module.forward
            handle = module.__dict__.pop("_lean_hook", None)
            if handle is not None:
                handle.remove()
        count += 1
    return count
