"""Exporting a run: a merged HF folder plain transformers loads, a GGUF transformers' own GGUF loader reads back with
the same logits, an Ollama Modelfile that reproduces the trained prompt; atomic, no silent overwrite."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from poetwb.cli import main
from poetwb.core import export, generate, models, runs
from poetwb.core.errors import PoetError

TEXT = "Shall I compare thee to a summer's day? The sea is blue"
F16_TOLERANCE = 2e-3
"""Max |logit difference| between the merged fp32 model and its f16 GGUF read back by transformers (measured on the
tiny models: 1.4e-4 Llama, 3.3e-4 GPT-2; logits there are ~0.4 in size)."""

BUNDLED_F16_TOLERANCE = 0.5
"""The same for the bundled SmolLM2 (logits up to ~31): measured 0.22 by benchmarks/bench_export.py."""


def base_plus_adapter(base: Path, folder: Path, stage: int = 2):
    return models.load(str(base), runs.adapter_dir(folder, stage), dtype="fp32", device="cpu")


def greedy_ids(model, tokenizer, prompt: str = TEXT, n: int = 16) -> list[int]:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=n, min_new_tokens=n, repetition_penalty=1.0,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def logits(model, tokenizer, prompt: str = TEXT):
    with torch.no_grad():
        return model(**tokenizer(prompt, return_tensors="pt")).logits


def gguf_model(folder: Path, config: dict):
    """transformers' own GGUF loader. Its GPT-2 mapping reads the context length into n_ctx, not n_positions, so a
    GPT-2 whose n_positions is not its class default (the tiny one: 512) is told n_positions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = next(folder.glob("*.gguf")).name
    extra = {"n_positions": config["n_positions"]} if config["model_type"] == "gpt2" else {}
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **extra)
    return model.eval(), AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_hf_export_loads_with_plain_transformers_and_generates_what_base_plus_adapter_does(kind, tiny_models,
                                                                                         tmp_path, make_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_models[kind]
    folder = make_run(base, f"run-{kind}")
    result = export.export_run(folder.name, "hf", tmp_path / "poet", sample_tokens=12)
    out = tmp_path / "poet"
    assert result.path == out and "model.safetensors" in result.files
    assert not list(out.glob("*.bin")) and not (out / "adapter_config.json").exists()

    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # no peft involved
    tokenizer = AutoTokenizer.from_pretrained(out)
    reference = base_plus_adapter(base, folder)
    assert greedy_ids(merged, tokenizer) == greedy_ids(reference.model, reference.tokenizer)
    plain_base = AutoModelForCausalLM.from_pretrained(base).eval()
    assert not torch.allclose(logits(plain_base, tokenizer), logits(merged, tokenizer), atol=1e-3), \
        "the adapter was not merged"

    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_p"], gen["repetition_penalty"], gen["do_sample"]) == (0.7, 0.95, 1.1, True)
    card = (out / "README.md").read_text()
    assert "## A sample poem" in card and "### Run config (config.toml)" in card
    assert "stage 2 4.000 → 3.500" in card
    assert f'model = "{base}"' in card
    # the tokenizer renders the prompt stage 2 trained on (GPT-2 has no chat template: the plain format is added)
    assert generate.format_prompt(tokenizer, "Write a poem", instruct=True) == \
        generate.format_prompt(reference.tokenizer, "Write a poem", instruct=True)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_gguf_f16_read_back_by_transformers_matches_the_merged_model(kind, tiny_models, tmp_path, make_run):
    base = tiny_models[kind]
    folder = make_run(base, f"run-{kind}")
    result = export.export_run(folder.name, "gguf", tmp_path / "gguf", sample_tokens=0)
    assert [n for n in result.files if n.endswith(".gguf")] == [f"run-{kind}-stage2-f16.gguf"]

    reference = base_plus_adapter(base, folder)
    merged = reference.model.merge_and_unload().eval()
    model, tokenizer = gguf_model(tmp_path / "gguf", models.read_config(base))
    assert tokenizer(TEXT)["input_ids"] == reference.tokenizer(TEXT)["input_ids"]
    diff = (logits(model, reference.tokenizer) - logits(merged, reference.tokenizer)).abs().max().item()
    assert diff < F16_TOLERANCE, f"f16 GGUF logits differ by {diff}"
    assert greedy_ids(model, reference.tokenizer) == greedy_ids(merged, reference.tokenizer)
    assert tokenizer.chat_template  # the chat template travels in the metadata
    assert generate.format_prompt(tokenizer, "Write a poem", instruct=True) == \
        generate.format_prompt(reference.tokenizer, "Write a poem", instruct=True)


def test_gguf_metadata_has_the_tokenizer_sampling_defaults_and_permuted_llama_attention(tiny_llama, tmp_path, make_run):
    from gguf import GGUFReader

    folder = make_run(tiny_llama, "meta")
    export.export_run(folder.name, "gguf", tmp_path / "g", sample_tokens=0)
    reader = GGUFReader(next((tmp_path / "g").glob("*.gguf")))

    def value(key: str):
        return reader.fields[key].contents()

    assert value("general.architecture") == "llama"
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "gpt-2"
    assert len(value("tokenizer.ggml.merges")) > 100
    assert "<|im_start|>" in value("tokenizer.chat_template")
    assert value("general.sampling.temp") == pytest.approx(0.7)
    assert value("general.sampling.top_p") == pytest.approx(0.95)
    assert value("llama.attention.head_count_kv") == 2
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    merged = base_plus_adapter(tiny_llama, folder).model.merge_and_unload()
    hf_q = merged.model.layers[0].self_attn.q_proj.weight.detach()
    stored = torch.from_numpy(q.data.astype("float32")).reshape(hf_q.shape)
    assert not torch.allclose(stored, hf_q, atol=1e-3)  # rows reordered for llama.cpp's rope …
    assert torch.allclose(stored, export._permute(hf_q, 4, 4), atol=1e-3)  # … exactly as llama.cpp does


@pytest.mark.parametrize("quant, tolerance", [("q8_0", 0.15), ("bf16", 0.05)])
def test_quantized_gguf_is_smaller_or_equal_and_close(quant, tolerance, tiny_gpt2, tmp_path, make_run):
    folder = make_run(tiny_gpt2, "q")
    f16 = export.export_run(folder.name, "gguf", tmp_path / "f16", sample_tokens=0)
    small = export.export_run(folder.name, "gguf", tmp_path / quant, quant=quant, sample_tokens=0)
    size = {r.quant: next(v for k, v in r.files.items() if k.endswith(".gguf")) for r in (f16, small)}
    assert size[quant] < size["f16"] * 0.65 if quant == "q8_0" else size[quant] == size["f16"]
    reference = base_plus_adapter(tiny_gpt2, folder)
    merged = reference.model.merge_and_unload().eval()
    model, _ = gguf_model(tmp_path / quant, models.read_config(tiny_gpt2))
    ours, theirs = logits(merged, reference.tokenizer), logits(model, reference.tokenizer)
    assert (ours - theirs).abs().max() < tolerance * ours.abs().max()  # relative to the logits' size
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.9  # the same next token nearly everywhere


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_ollama_modelfile_reproduces_the_trained_prompt_and_the_run_sampling(kind, tiny_models, tmp_path, make_run):
    folder = make_run(tiny_models[kind], "oll")
    result = export.export_run(folder.name, "ollama", tmp_path / "o", sample_tokens=0)
    text = (tmp_path / "o" / "Modelfile").read_text()
    source = re.search(r"^FROM \./(\S+)$", text, re.M).group(1)
    assert (tmp_path / "o" / source).is_file() and source.endswith(".gguf")
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S).group(1)
    tokenizer = base_plus_adapter(tiny_models[kind], folder).tokenizer
    request = "Write a poem about the moon"
    assert template.replace("{{ .Prompt }}", request) == generate.format_prompt(tokenizer, request, instruct=True)
    for line in ("PARAMETER temperature 0.7", "PARAMETER top_p 0.95", "PARAMETER repeat_penalty 1.1"):
        assert line in text
    assert result.commands == [f"ollama create poetwb-oll-s2 -f {tmp_path / 'o' / 'Modelfile'}",
                               "ollama run poetwb-oll-s2"]


def test_a_stage1_ollama_model_continues_raw_text(tiny_llama, tmp_path, make_run):
    folder = make_run(tiny_llama, "s1", stages=(1,))
    result = export.export_run(folder.name, "ollama", tmp_path / "o", sample_tokens=0)
    assert result.stage == 1
    assert 'TEMPLATE """{{ .Prompt }}"""' in (tmp_path / "o" / "Modelfile").read_text()
    with pytest.raises(PoetError, match="no stage-2 adapter"):
        export.export_run(folder.name, "gguf", tmp_path / "x", stage=2)


def test_existing_output_is_kept_without_force_and_replaced_with_it(tiny_gpt2, tmp_path, make_run):
    folder = make_run(tiny_gpt2, "keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    with pytest.raises(PoetError, match="already exists; pass --force"):
        export.export_run(folder.name, "gguf", out)
    assert (out / "mine.txt").read_text() == "precious"
    export.export_run(folder.name, "gguf", out, force=True, sample_tokens=0)
    assert not (out / "mine.txt").exists() and list(out.glob("*.gguf"))
    with pytest.raises(PoetError, match="refusing to export into"):
        export.export_run(folder.name, "gguf", tmp_path / "poetwb-home", force=True)


def test_a_crash_while_writing_leaves_nothing_that_looks_complete(tiny_gpt2, tmp_path, monkeypatch, make_run):
    folder = make_run(tiny_gpt2, "crash")
    real = export.write_gguf

    def crash(*args, **kwargs):
        real(*args, **kwargs)  # the whole file is written …
        raise MemoryError("simulated crash before the rename")  # … but the export never completes

    monkeypatch.setattr(export, "write_gguf", crash)
    with pytest.raises(MemoryError):
        export.export_run(folder.name, "ollama", tmp_path / "o", sample_tokens=0)
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("o", ".tmp-o"))] == []


def test_not_enough_disk_space_is_said_before_writing(tiny_gpt2, tmp_path, monkeypatch, make_run):
    import shutil
    from collections import namedtuple

    folder = make_run(tiny_gpt2, "disk")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(PoetError, match="not enough disk space .* needs about"):
        export.export_run(folder.name, "hf", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_unsupported_architecture_gets_one_line_naming_it(tiny_gpt2, tmp_path, make_run):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    base = tmp_path / "tiny-qwen2"
    Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=len(tok))).save_pretrained(base)
    tok.save_pretrained(base)
    folder = make_run(base, "qwen")
    with pytest.raises(PoetError) as info:
        export.export_run(folder.name, "gguf", tmp_path / "o")
    message = str(info.value)
    assert "qwen2" in message and "\n" not in message and "--format hf" in message
    assert not (tmp_path / "o").exists()


def test_cli_export_prints_files_and_the_ollama_commands_and_refuses_overwrite(tiny_gpt2, tmp_path, capsys, make_run):
    folder = make_run(tiny_gpt2, "cli")
    out = tmp_path / "poet"
    assert main(["export", folder.name, "--format", "ollama", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "export cli as ollama: converting tensors to f16" in captured.err  # progress, plain lines off a tty
    assert "Modelfile" in printed and "cli-stage2-f16.gguf" in printed
    assert f"ollama create poetwb-cli-s2 -f {out / 'Modelfile'}" in printed and "ollama run poetwb-cli-s2" in printed
    assert main(["export", folder.name, "--format", "ollama", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; pass --force" in err
    assert main(["export", folder.name, "--format", "hf", "--quant", "q8_0", "-o", str(tmp_path / "h")]) == 1
    assert "GGUF type" in capsys.readouterr().err
    assert main(["export", "no-such-run", "--format", "hf", "-o", str(tmp_path / "h")]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_llama_cpp_generates_from_the_gguf_where_it_is_installed(tiny_llama, tmp_path, make_run):
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed here (building it is too heavy for this CPU); "
                            "the GGUF is proved by transformers' loader instead")
    folder = make_run(tiny_llama, "lcpp")
    export.export_run(folder.name, "gguf", tmp_path / "g", sample_tokens=0)
    llm = llama_cpp.Llama(model_path=str(next((tmp_path / "g").glob("*.gguf"))), verbose=False)
    out = llm(TEXT, max_tokens=8, temperature=0)
    assert out["choices"][0]["text"] is not None and out["usage"]["completion_tokens"] > 0


@pytest.mark.integration
def test_the_bundled_model_exports_to_a_gguf_transformers_reads_back(tmp_path, make_run):
    from poetwb.core import bundled

    base = bundled.ensure_converted()
    folder = make_run(base, "bundled-gguf", targets=["q_proj", "v_proj"])
    (folder / "config.toml").write_text((folder / "config.toml").read_text().replace(f'"{base}"', '"bundled"'))
    result = export.export_run(folder.name, "gguf", tmp_path / "g", sample_tokens=0)
    reference = models.load("bundled", runs.adapter_dir(folder, 2), dtype="fp32", device="cpu")
    merged = reference.model.merge_and_unload().eval()
    model, tokenizer = gguf_model(tmp_path / "g", models.read_config(base))
    assert tokenizer(TEXT)["input_ids"] == reference.tokenizer(TEXT)["input_ids"]
    ours, theirs = logits(merged, reference.tokenizer), logits(model, reference.tokenizer)
    diff = (ours - theirs).abs().max().item()
    assert diff < BUNDLED_F16_TOLERANCE, f"f16 GGUF logits differ by {diff}"
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    assert greedy_ids(model, reference.tokenizer, n=12) == greedy_ids(merged, reference.tokenizer, n=12)
    size = next(v for k, v in result.files.items() if k.endswith(".gguf"))
    assert 250 * 2**20 < size < 300 * 2**20  # 135M parameters at 2 bytes
