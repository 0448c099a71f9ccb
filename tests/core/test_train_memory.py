"""Training in less memory, same numbers: fused LoRA dropout, recomputed cheap activations, gradient checkpointing
(all layers or some), the lean evaluation loss."""

from __future__ import annotations

import pytest

from poetwb.core import lean_activations, lean_dropout, lean_loss, runs, train_memory
from poetwb.core.config import TrainConfig, build_train_config
from poetwb.core.errors import PoetError


@pytest.mark.parametrize("value", ["yes", 1, "on", None])
def test_a_bad_gradient_checkpointing_value_is_one_line(value):
    with pytest.raises(PoetError) as err:
        build_train_config("cpu-quick", overrides={"gradient_checkpointing": value})
    message = str(err.value)
    assert message.startswith('gradient_checkpointing must be "auto", true or false, got')
    assert "\n" not in message


@pytest.mark.parametrize("value", ["auto", True, False])
def test_good_gradient_checkpointing_values_round_trip_through_toml(value):
    config = build_train_config("cpu-quick", overrides={"gradient_checkpointing": value})
    assert TrainConfig.from_toml(config.to_toml()).gradient_checkpointing == value
    assert TrainConfig().gradient_checkpointing == "auto"


def test_auto_checkpoints_the_fewest_layers_that_keep_the_activations_within_the_weights_and_free_memory():
    from types import SimpleNamespace

    smol = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30)
    per_layer, checkpointed = train_memory.layer_bytes(smol, 4, 256)
    assert 26 * 2**20 < per_layer < 32 * 2**20  # measured ~29 MB kept per layer at batch 4 x 256 (README)
    assert checkpointed == 4 * 256 * 576 * 4  # a checkpointed layer keeps its input
    weights = 538 * 2**20  # SmolLM2-135M's parameters in fp32
    assert train_memory.decide(True, smol, 4, 256) == (30, "gradient checkpointing on (set in the config)")
    assert train_memory.decide(False, smol, 4, 256, available=1)[0] == 0
    # a big machine: the weights are the budget; 14 layers is the fewest that fits (README "Training memory")
    n, why = train_memory.decide("auto", smol, 4, 256, available=20 * 2**30, weights=weights)
    assert n == 14 and why.startswith("gradient checkpointing on 14 of 30 decoder layers (auto: ")
    assert "the weights' 0.53 GB" in why
    assert (30 - n) * per_layer + n * checkpointed <= weights < (31 - n) * per_layer + (n - 1) * checkpointed
    # a tight one: a quarter of the free memory is the budget
    n, why = train_memory.decide("auto", smol, 4, 256, available=2**30, weights=weights)
    assert 14 < n < 30 and "25% of 1.0 GB available" in why
    assert train_memory.decide("auto", smol, 4, 256, available=2**27, weights=weights)[0] == 30  # all of them
    # activations within the weights (a model with bigger weights, a small batch): nothing to checkpoint
    n, why = train_memory.decide("auto", smol, 1, 64, available=20 * 2**30, weights=weights)
    assert n == 0 and why.startswith("gradient checkpointing off (auto: ")
    assert train_memory.decide("auto", smol, 4, 256, available=None, weights=None)[0] in (0, 30)  # whatever /proc says
    gpt2 = SimpleNamespace(n_embd=768, n_layer=12)  # GPT-2 names its sizes differently
    assert train_memory.activation_bytes(gpt2, 1, 100) == 12 * 100 * (8 * 768 + 2 * 3072) * 4


def _loss_and_grads(path, fuse: bool, checkpoint: bool | int, own_loss: bool = False, lean: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                           LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.2, init_lora_weights=False))
    if fuse:
        assert lean_dropout.install(model) > 0
    if lean:
        assert lean_activations.install(model) == 2
    if checkpoint:
        train_memory.enable_checkpointing(model, None if checkpoint is True else checkpoint)
    model.train()
    ids = torch.randint(5, 60, (3, 19))
    labels = ids.clone()
    labels[1, 14:] = -100
    torch.manual_seed(1)  # the same dropout masks in every way
    if own_loss:
        loss = model(input_ids=ids, labels=labels).loss
    else:
        backbone, head = lean_loss.parts(model)
        loss = lean_loss.causal_lm_loss(backbone(input_ids=ids, use_cache=False)[0], labels, head)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, model


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("own_loss", [False, True])
def test_fused_dropout_and_checkpointing_give_the_same_loss_and_lora_gradients(tiny_models, kind, own_loss):
    import torch

    ref_loss, ref_grads, _ = _loss_and_grads(tiny_models[kind], fuse=False, checkpoint=False, own_loss=own_loss)
    assert all(g.abs().sum() > 0 for g in ref_grads.values())  # every LoRA weight gets a gradient
    for fuse, checkpoint in [(True, False), (False, True), (True, True)]:
        loss, grads, model = _loss_and_grads(tiny_models[kind], fuse, checkpoint, own_loss)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)
        causal = model.get_base_model()
        assert causal.is_activation_checkpointing is checkpoint
        train_memory.disable_checkpointing(model)
        assert not causal.is_activation_checkpointing


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("own_loss", [False, True])
def test_recomputed_activations_and_partial_checkpointing_are_bitwise_the_plain_path(tiny_models, kind, own_loss):
    import torch

    ref_loss, ref_grads, _ = _loss_and_grads(tiny_models[kind], fuse=True, checkpoint=False, own_loss=own_loss)
    # lean alone; lean in the second layer with the first checkpointed; every layer checkpointed
    for checkpoint, flags in [(False, [False, False]), (1, [True, False]), (True, [True, True])]:
        loss, grads, model = _loss_and_grads(tiny_models[kind], True, checkpoint, own_loss, lean=True)
        assert torch.equal(loss, ref_loss)
        assert grads.keys() == ref_grads.keys()
        assert all(torch.equal(grads[name], ref_grads[name]) for name in grads)
        assert [layer.gradient_checkpointing for layer in lean_activations.decoder_layers(model)] == flags
    import copy

    twin = copy.deepcopy(model)  # a copy's layers run their own forward, not the original's
    assert all(layer.forward.__self__ is layer for layer in lean_activations.decoder_layers(twin))
    assert lean_activations.install(model) == 2  # idempotent
    assert lean_activations.uninstall(model) == 2 and lean_activations.uninstall(model) == 0
    assert not any("forward" in m.__dict__ or "_lean_hook" in m.__dict__ for m in model.modules())


def test_the_recomputed_tensors_are_the_norms_activation_and_gated_product(tiny_models, monkeypatch):
    """What autograd keeps as a recipe per Llama layer: the two norms' outputs (read by q/k/v and gate/up), the
    activation and the product; everything else (the matmuls' outputs, masks, residuals) as tensors."""
    import torch

    recipes: list[object] = []
    pack = lean_activations._Registry.pack

    def counting(self, t):
        packed = pack(self, t)
        if not isinstance(packed, torch.Tensor):
            recipes.append(packed.recipe)
        return packed

    monkeypatch.setattr(lean_activations._Registry, "pack", counting)
    _loss_and_grads(tiny_models["llama"], fuse=True, checkpoint=False, lean=True)
    assert len(recipes) == 2 * 7  # per layer: norm 1 read by q, k, v; norm 2 by gate, up; the activation; the product
    assert len({id(r) for r in recipes}) == 2 * 4
    assert all(r.value is not None for r in recipes)  # each computed again in the backward pass, once
    recipes.clear()
    _loss_and_grads(tiny_models["llama"], fuse=True, checkpoint=True, lean=True)
    assert recipes == []  # a checkpointed layer recomputes everything anyway


def test_fused_dropout_keeps_the_adapter_and_undoes_cleanly(tiny_models):
    import torch
    from peft import get_peft_model_state_dict

    _, _, model = _loss_and_grads(tiny_models["llama"], fuse=False, checkpoint=False)
    before = get_peft_model_state_dict(model)
    n = lean_dropout.install(model)
    assert n == 14  # 7 linear layers x 2 decoder layers
    after = get_peft_model_state_dict(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.eval()  # no dropout when evaluating: the fused layer is a plain linear layer then
    ids = torch.randint(5, 60, (2, 9))
    with torch.no_grad():
        fused_logits = model(input_ids=ids).logits
        assert lean_dropout.uninstall(model) == n
        plain_logits = model(input_ids=ids).logits
    torch.testing.assert_close(fused_logits, plain_logits)
    assert not any(type(m) is lean_dropout.DropoutLinear for m in model.modules())


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_lean_evaluation_loss_equals_the_trainers_own(tiny_models, tiny_corpus, tmp_path, kind, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from poetwb.core import data
    from poetwb.core.config import CorpusSpec, StageConfig
    from poetwb.core.hf import load_tokenizer, make_trainer
    from poetwb.core.train_job import training_args

    tokenizer = load_tokenizer(tiny_models[kind])
    poems = data.load_poems(CorpusSpec(kind="local", path=str(tiny_corpus)))
    blocks = data.pad_each(tokenizer, poems.select(range(10)), 48)  # padded rows: the masked positions must not count
    calls = []
    chunked = lean_loss.causal_lm_loss
    monkeypatch.setattr(lean_loss, "causal_lm_loss", lambda *a, **k: calls.append(1) or chunked(*a, **k))
    losses = []
    for lean in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models[kind]),
                               LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        args = training_args(StageConfig(batch_size=4, max_steps=1), tmp_path / f"out{lean}", "fp32", 1,
                             evaluate=False)
        trainer = make_trainer(model, tokenizer, args, blocks, blocks, lean_loss=lean)
        losses.append(trainer.evaluate()["eval_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert len(calls) == 3  # the lean run's three batches went through the chunked loss, the plain run's none


@pytest.mark.parametrize(("extra", "said"), [("gradient_checkpointing = true", "on (set in the config)"),
                                             ("", "on (auto: ~")])
def test_a_short_run_with_checkpointing_on_finishes_and_says_so(tiny_train_config, extra, said):
    from poetwb.core.train_job import run_job

    text = tiny_train_config("llama", steps1=3, steps2=2, extra=extra)
    folder = runs.create_run(TrainConfig.from_toml(text), "ckpt")
    result = run_job(folder)
    assert result.state == "finished"
    assert runs.has_adapter(folder, 1) and runs.has_adapter(folder, 2)
    log = (folder / "log.txt").read_text(encoding="utf-8")
    # both stages; auto: the tiny model's activations outweigh its weights, so every layer
    assert log.count(f"gradient checkpointing {said}") == 2
    assert result.eval_loss["stage1_end"] < result.eval_loss["stage1_start"]


@pytest.mark.parametrize(("flag", "value"), [("on", True), ("off", False), ("auto", "auto")])
def test_the_cli_flag_overrides_the_file_and_the_preset(tmp_path, flag, value):
    from poetwb.cli import _train_config, build_parser

    file = tmp_path / "c.toml"
    file.write_text("gradient_checkpointing = false\n", encoding="utf-8")
    args = build_parser().parse_args(["train", str(file), "--preset", "poet", "--gradient-checkpointing", flag])
    assert _train_config(args).gradient_checkpointing == value
    args = build_parser().parse_args(["train", str(file)])
    assert _train_config(args).gradient_checkpointing is False


def test_a_bad_value_in_a_config_file_is_one_line_on_the_cli(tmp_path, capsys):
    from poetwb.cli import main

    file = tmp_path / "c.toml"
    file.write_text('gradient_checkpointing = "sometimes"\n', encoding="utf-8")
    assert main(["train", str(file)]) == 1
    err = capsys.readouterr().err
    assert 'gradient_checkpointing must be "auto", true or false' in err and err.count("\n") == 1


def test_the_allocator_setting_applies_on_glibc():
    import platform

    assert train_memory.tune_allocator() is (platform.libc_ver()[0] == "glibc")


def test_the_recipes_refuse_what_they_cannot_vouch_for():
    import torch

    silu = torch.nn.functional.silu
    registry = lean_activations._Registry()
    x = torch.randn(4, 3)
    out = silu(x)
    registry.add(out, silu, (x,))
    packed = registry.pack(out.t())  # a view of a noted tensor: a recipe, unpacked to the same view
    assert not isinstance(packed, torch.Tensor)
    assert torch.equal(registry.unpack(packed), out.t())
    assert isinstance(registry.pack(torch.randn(4, 3)), torch.Tensor)  # not noted: kept as it is
    out.add_(1)  # the noted tensor itself changed: kept as a tensor
    assert registry.pack(out) is out
    z = torch.randn(4, 3)
    registry.add(out := silu(z), silu, (z,))
    packed = registry.pack(out)
    z.add_(1)  # the input changed in place before the backward pass: an error, never a wrong gradient
    with pytest.raises(RuntimeError, match="modified in place"):
        registry.unpack(packed)
    y = torch.randn(4, 3)
    registry.add(silu(y).t(), silu, (y,))  # not a whole, fresh tensor: not noted
    relu_ = torch.nn.functional.relu_
    registry.add(relu_(y), relu_, (y,))  # computed in place: not noted
    registry.add(silu(y), silu, (y,))  # noted, then gone: its memory may hold another tensor now
    gone = next(reversed(registry.entries))
    other = torch.randn(4, 3)
    registry.entries[other.untyped_storage().data_ptr()] = registry.entries.pop(gone)  # ... as if this one
    assert registry.pack(other) is other



def test_the_gated_mlp_is_recognised_by_its_statements_not_its_name():
    import torch
    from torch import nn

    class CopiedMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = nn.Linear(2, 3), nn.Linear(2, 3), nn.Linear(3, 2)
            self.act_fn = nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # a copy of Llama's MLP with another signature and a comment
            down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
            return down_proj

    class OtherMLP(CopiedMLP):
        def forward(self, x):
            down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) + self.up_proj(x))
            return down_proj

    reference = lean_activations._llama_mlp_source()
    assert lean_activations._is_gated_mlp(CopiedMLP(), reference)
    assert not lean_activations._is_gated_mlp(OtherMLP(), reference)  # same parts, another formula: left alone


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_recomputed_activations_under_autocast_are_bitwise_the_plain_path(tiny_models, kind):
    """Under bf16 autocast (the job trains in it where bf16 is native) the numbers are the plain path's too."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    results = []
    for lean in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models[kind]),
                               LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.2, init_lora_weights=False))
        lean_dropout.install(model)
        if lean:
            lean_activations.install(model)
        model.train()
        ids = torch.randint(5, 60, (2, 17))
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (ref_loss, ref_grads), (loss, grads) = results
    assert torch.equal(loss, ref_loss) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))


def test_a_recipe_runs_again_under_the_autocast_it_first_ran_in():
    import torch

    registry = lean_activations._Registry()
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.mm(a, b)  # bf16 under autocast; the backward pass runs outside it
        registry.add(out, torch.mm, (a, b))
    assert out.dtype == torch.bfloat16
    again = registry.unpack(registry.pack(out))
    assert again.dtype == torch.bfloat16 and torch.equal(again, out)
