"""Int8 copies of the weights for decode steps (core/int8.py): close to fp32, used only where they pay, chosen by
dtype auto on CPUs without native bf16, never for held-out losses."""

import copy
import json

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from poetwb.cli import main
from poetwb.core import generate, int8, models
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError

needs_kernel = pytest.mark.skipif(not int8.available(), reason="int8 copies are offered on AVX2 CPUs only")


class Pair(torch.nn.Module):
    """A linear layer and a GPT-2 Conv1D, both with biases, both eligible (input widths multiples of 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(64, 96)
        self.conv = Conv1D(64, 96)  # Conv1D(nf=out, nx=in)
        torch.nn.init.normal_(self.conv.bias)
        self.odd = torch.nn.Linear(64, 7)  # input 64: eligible
        self.narrow = torch.nn.Linear(7, 16)  # input 7: the kernel cannot take it (nor 8: it steps 16 wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.lin(x))
        return self.narrow(self.odd(y))


@needs_kernel
def test_int8_copies_are_close_to_fp32_and_only_serve_decode_sized_batches():
    model = Pair().eval()
    x = torch.randn(3, 1, 64)
    many = torch.randn(2, 20, 64)  # 40 rows: above MAX_ROWS, a prompt's prefill
    with torch.inference_mode():
        exact, exact_many = model(x), model(many)
        assert int8.quantize(model) == 3 and int8.is_quantized(model)
        assert "forward" not in vars(model.narrow)
        got, got_many = model(x), model(many)
        assert int8.quantize(model) == 0  # already patched: a no-op
    grad = model(x)  # autograd on (training): the fp32 weights
    # close, but really the int8 copy (bf16 activations and 255 levels a row are not bit-exact)
    assert not torch.equal(got, exact)
    torch.testing.assert_close(got, exact, rtol=0.03, atol=0.03 * exact.abs().max().item())
    assert torch.equal(got_many, exact_many) and torch.equal(grad, exact)
    int8.restore(model)
    assert not int8.is_quantized(model)
    with torch.inference_mode():
        assert torch.equal(model(x), exact)


def test_int8_rows_round_each_row_to_its_own_scale():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0] * 2, [100.0, 50.0, -25.0, 0.0] * 2])
    values, scales = int8.int8_rows(w)
    assert values.dtype == torch.int8 and scales.dtype == torch.bfloat16
    assert values.abs().amax(dim=1).tolist() == [127, 127]
    torch.testing.assert_close(values.float() * scales.float()[:, None], w, rtol=0.01, atol=0.01)


@pytest.mark.parametrize("native,device,want", [
    (False, "cpu", "int8"), (True, "cpu", "bf16"), (False, "cuda", "fp32"), (True, "cuda", "bf16")])
def test_auto_takes_int8_copies_only_on_cpus_without_native_bf16(monkeypatch, native, device, want):
    monkeypatch.setattr(models, "native_bf16", lambda device="cpu": native)
    monkeypatch.setattr(int8, "available", lambda: True)
    assert models.resolve_dtype("auto", device) == want
    assert models.resolve_dtype(models.EXACT, device) == ("bf16" if native else "fp32")
    assert models.resolve_dtype("fp32", device) == "fp32"


def test_int8_is_refused_off_the_cpu_and_unknown_dtypes_are_named(monkeypatch):
    with pytest.raises(PoetError, match="int8 weights are for CPUs"):
        models.resolve_dtype("int8", "cuda")
    monkeypatch.setattr(int8, "available", lambda: False)  # another CPU (AVX-512, ARM): auto keeps fp32
    assert models.resolve_dtype("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(PoetError, match="need torch's AVX2 int8 kernel"):
        models.resolve_dtype("int8", "cpu")
    with pytest.raises(PoetError, match="unknown dtype 'fp8': use auto, fp32, bf16, int8"):
        models.resolve_dtype("fp8", "cpu")


@needs_kernel
def test_an_int8_model_keeps_lora_in_fp32_and_decodes_like_plain_generate(tiny_models, tmp_path, monkeypatch):
    """On a tiny Llama with an adapter: the base layers get int8 copies, LoRA's A and B do not; every decode step
    of every patched layer goes through the kernel; one greedy row through poetwb's streaming path is token for
    token plain `generate` on the same model; side by side streams both columns; the footer's engine says int8;
    a measurement load (EXACT) has no copies."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]),
                                LoraConfig(r=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = models.load(str(tiny_models["llama"]), adapter=tmp_path / "adapter", dtype="int8", device="cpu")
    patched = {n for n, m in loaded.model.named_modules() if vars(m).get("poetwb_int8")}
    assert any(n.endswith("q_proj.base_layer") for n in patched) and any(n.endswith("lm_head") for n in patched)
    assert not [n for n in patched if "lora_" in n]
    assert generate.engine_name(loaded) == "torch int8" and int8.bits(loaded.model) == {8}  # off a 4-bit grid

    s = SamplingConfig(max_new_tokens=10, temperature=0, seed=0)
    enc = loaded.tokenizer("The sea", return_tensors="pt")
    with torch.inference_mode():
        plain = loaded.model.generate(**enc, **generate.generate_kwargs(loaded.tokenizer, loaded.model, s))
    want = loaded.tokenizer.decode(plain[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    calls = []
    kernel = int8._mm
    monkeypatch.setattr(int8, "_mm", lambda *a: (calls.append(a[0].shape[0]), kernel(*a))[1])
    assert generate.generate(loaded, "The sea", s).text == want.rstrip("\ufffd")  # a split character is held back
    # 9 decode steps after the prompt, each through every patched layer; the prompt's head too (its last position)
    assert len(calls) >= 9 * len(patched) and set(calls) == {1}
    stats: list = []
    texts = ["", ""]
    for row, chunk in generate.side_by_side(loaded, "The sea", s, stats=stats):
        texts[row] += chunk
    assert all(texts) and [st.new_tokens for st in stats] == [10, 10]

    exact = models.load(str(tiny_models["llama"]), dtype=models.EXACT, device="cpu")
    assert not int8.is_quantized(exact.model) and generate.engine_name(exact) == "torch"


@needs_kernel
def test_cli_generate_names_the_int8_engine_and_fp32_stays_exact(tiny_gpt2, capsys, monkeypatch):
    monkeypatch.setattr(models, "pick_device", lambda: "cpu")
    assert main(["generate", "-m", str(tiny_gpt2), "-p", "The sea", "-n", "4", "-t", "0", "--dtype", "int8",
                 "--engine", "torch", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "torch int8"
    assert main(["generate", "-m", str(tiny_gpt2), "-p", "The sea", "-n", "4", "-t", "0", "--dtype", "fp32",
                 "--engine", "torch", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "torch"


@needs_kernel
@pytest.mark.parametrize("kind,targets", [("llama", ["q_proj", "v_proj", "down_proj"]), ("gpt2", ["c_attn", "c_fc"])])
def test_tuned_rows_alone_read_copies_with_the_adapter_merged_in(tiny_models, tmp_path, monkeypatch, kind, targets):
    """A batch whose rows all use one adapter decodes on int8 copies of W + its LoRA delta (GPT-2's Conv1D too):
    as close to the exact tuned model as the base copies are to the exact base model, with no LoRA products; a
    mixed batch (side by side) keeps the base copies, so its base row is the base model's; closing puts the base
    copies back."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models[kind]),
                                LoraConfig(r=8, target_modules=targets, init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = models.load(str(tiny_models[kind]), adapter=tmp_path / "adapter", dtype="int8", device="cpu")
    exact = models.load(str(tiny_models[kind]), adapter=tmp_path / "adapter", dtype="fp32", device="cpu").model
    model = loaded.model
    ids = torch.randint(5, 60, (2, 6))
    step = torch.randint(5, 60, (2, 1))

    products: list[int] = []

    def decode(m, count: bool = False):
        with torch.inference_mode():
            out = m(input_ids=ids, use_cache=True)
            linear = torch.nn.functional.linear
            if count:  # the decode step's fp32 products (int8 layers call the kernel instead)
                monkeypatch.setattr(torch.nn.functional, "linear", lambda *a, **k: (products.append(1),
                                                                                    linear(*a, **k))[1])
            try:
                return m(input_ids=step, past_key_values=out.past_key_values).logits[:, -1]
            finally:
                monkeypatch.setattr(torch.nn.functional, "linear", linear)

    want_tuned = decode(exact)
    with exact.disable_adapter():
        want_base = decode(exact)
    mask = generate.RowMask(model, ["default"])
    try:
        mask.whole("default")
        copies = [vars(layer.base_layer)["poetwb_int8"] for layer in mask.patched]
        assert copies and all(c.key == "default" for c in copies)
        tuned = decode(model, count=True)
        assert not products  # no LoRA product in the step
        mask.rows([None, "default"])  # side by side: base copies, LoRA products on the tuned row only
        assert all(c.key is None for c in copies)
        mixed = decode(model, count=True)
        assert len(products) == len(mask.patched)
        mask.whole(None)
        base = decode(model)
    finally:
        mask.close()
    assert all(c.key is None for c in copies)
    scale = want_tuned.abs().max().item()
    torch.testing.assert_close(tuned, want_tuned, rtol=0.03, atol=0.03 * scale)
    assert (tuned - want_tuned).abs().max() < 0.5 * (want_tuned - want_base).abs().max()  # the adapter is there
    torch.testing.assert_close(mixed[0], base[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mixed[1], tuned[1], rtol=0.03, atol=0.03 * scale)


@needs_kernel
def test_weights_on_a_4bit_grid_get_4bit_copies_that_read_the_model_closer_than_int8(tiny_models, tmp_path,
                                                                                      monkeypatch):
    """A model converted from a 4-bit GGUF (the bundled SmolLM2 is Q4_1) has weights on 16 levels per 32 inputs:
    its layers get 4-bit copies, decode steps go through the 4-bit kernel, and a step's logits come closer to
    fp32 than with int8 copies; the head, off the grid, keeps int8; the footer names both."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with torch.no_grad():  # Q4_1: per block of 32 inputs, w = minimum + scale * q, q in 0..15
        for name, layer in model.named_modules():
            if type(layer) is torch.nn.Linear and name != "lm_head":
                out_f, in_f = layer.weight.shape
                blocks = layer.weight.view(out_f, in_f // 32, 32)
                low = blocks.amin(-1, keepdim=True)
                scale = (blocks.amax(-1, keepdim=True) - low) / 15
                layer.weight.copy_((low + scale * ((blocks - low) / scale).round()).view(out_f, in_f))
    model.save_pretrained(tmp_path / "q4")
    AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(tmp_path / "q4")

    exact = models.load(str(tmp_path / "q4"), dtype=models.EXACT, device="cpu")
    four = models.load(str(tmp_path / "q4"), dtype="int8", device="cpu")
    assert int8.bits(four.model) == {4, 8} and generate.engine_name(four) == "torch int4/int8"
    heads = {n: vars(m)["poetwb_int8"].by_key[None][0] for n, m in four.model.named_modules()
             if "poetwb_int8" in vars(m)}
    assert heads.pop("lm_head") == 8 and set(heads.values()) == {4} and len(heads) == 14
    monkeypatch.setattr(int8, "_four_bits", lambda: False)
    eight = models.load(str(tmp_path / "q4"), dtype="int8", device="cpu")
    assert int8.bits(eight.model) == {8}

    calls = []
    kernel = int8._mm
    monkeypatch.setattr(int8, "_mm", lambda *a: (calls.append(a[1][0]), kernel(*a))[1])
    ids = torch.tensor([[5, 9, 3, 7]] * 2)
    with torch.inference_mode():  # one decode step after a 3-token prompt, up to the last hidden state
        cache = exact.model(ids[:, :-1], use_cache=True).past_key_values
        want, got4, got8 = (m.model.model(ids[:, -1:], past_key_values=copy.deepcopy(cache)).last_hidden_state
                            for m in (exact, four, eight))
    assert calls.count(4) == 14 and calls.count(8) == 14  # every layer, on the 4-bit model and on the int8 one
    err4, err8 = (got4 - want).norm().item(), (got8 - want).norm().item()
    assert err4 < err8 / 2, (err4, err8)
