"""The causal-LM training loss without the whole batch's logits in memory at once.

A model's own loss builds logits for every position over the whole vocabulary (batch 8 x 256 tokens x 49,152 for
SmolLM2: 400 MB in fp32), then their log-softmax and their gradient of the same size. Here the backbone's last
hidden states go through the output head in chunks of rows; each chunk's logits live only inside a checkpointed
function (recomputed in the backward pass), so the peak holds one chunk of logits. Same loss as the model's own
(labels shifted by one, -100 ignored, summed then divided by the Trainer's count of items when it gives one), same
gradients up to float rounding. Models this does not know how to split (no plain linear head, logit soft-capping,
a head with its own scaling) keep their own loss.
"""

from __future__ import annotations

from typing import Any

CHUNK_ROWS = 256
"""Rows of logits alive at once: 256 x 49,152 in fp32 is 48 MB, and the chunk's log-softmax and gradients a few
times that. 1024 rows held ~0.45 GB more at the peak of a step (measured, README "Training memory") for no speed."""


def parts(model: Any) -> tuple[Any, Any] | None:
    """(backbone, head) of a causal LM (through a peft wrapper), or None when the loss cannot be split safely."""
    import torch

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(causal, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:  # a LoRA-wrapped or custom head: the model's own loss
        return None
    prefix = getattr(causal, "base_model_prefix", "")
    backbone = getattr(causal, prefix, None) if prefix else None
    if backbone is None or backbone is causal:
        return None
    return backbone, head


def causal_lm_loss(hidden: Any, labels: Any, head: Any, num_items: Any = None, chunk: int = CHUNK_ROWS) -> Any:
    """Cross-entropy of next-token prediction from the last hidden states, computed in checkpointed chunks."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    shifted = F.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    keep = (shifted != -100).nonzero().squeeze(-1)  # rows that count: no logits for padding or the last position
    flat, shifted = flat.index_select(0, keep), shifted.index_select(0, keep)

    def chunk_sum(h: Any, y: Any, weight: Any, bias: Any) -> Any:
        return F.cross_entropy(F.linear(h, weight, bias).float(), y, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, flat.shape[0], chunk):
        h, y = flat[start:start + chunk], shifted[start:start + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(chunk_sum, h, y, head.weight, head.bias, use_reentrant=False)
        else:
            total = total + chunk_sum(h, y, head.weight, head.bias)
    if num_items is None:
        return total / max(int(keep.numel()), 1)
    if isinstance(num_items, torch.Tensor):
        num_items = num_items.to(total.device)
    return total / num_items


def trainer_class() -> type:
    """A transformers Trainer whose loss is `causal_lm_loss` for the models `parts` understands."""
    from transformers import Trainer

    class LeanLossTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            split = parts(self.accelerator.unwrap_model(model))
            if split is None or return_outputs or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            backbone, head = split
            labels = inputs["labels"]
            out = backbone(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                           use_cache=False)
            return self._rescale(causal_lm_loss(out[0], labels, head, num_items_in_batch), num_items_in_batch)

        def _rescale(self, loss: Any, num_items: Any) -> Any:
            """num_items counts every process's tokens: scale back as Trainer.compute_loss does (x1 in one)."""
            if self.args.average_tokens_across_devices and num_items is not None:
                scale = self.accelerator.num_processes // self.get_tp_size()
                loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
            return loss

        def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                            ignore_keys: list[str] | None = None) -> Any:
            """Evaluation's loss the same lean way when only the loss is wanted (no compute_metrics): the model's
            own path would build the whole batch's logits (200 MB in fp32 at batch 4 x 256) and return a KV cache."""
            import torch

            split = parts(self.accelerator.unwrap_model(model))
            if split is None or not prediction_loss_only or "labels" not in inputs:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            inputs = self._prepare_inputs(inputs)
            num_items = self._get_num_items_in_batch([inputs], self.args.device)
            backbone, head = split
            with torch.no_grad(), self.compute_loss_context_manager():
                out = backbone(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                               use_cache=False)
                loss = self._rescale(causal_lm_loss(out[0], inputs["labels"], head, num_items), num_items)
            return loss.detach(), None, None

    return LeanLossTrainer
