import json
import shutil
import time

import pytest

from poetwb.core import models
from poetwb.core.errors import PoetError


def test_local_folder_appears_in_the_catalogue_and_loads(tiny_gpt2):
    entries = models.catalogue([tiny_gpt2])
    local = [e for e in entries if e.source == "local"]
    assert len(local) == 1
    entry = local[0]
    assert entry.architecture == "GPT2LMHeadModel"
    assert entry.offline is True
    real = models.load(str(tiny_gpt2)).model
    assert entry.params == sum(p.numel() for p in real.parameters())
    assert entry.train_memory_bytes > 4 * entry.params


def test_model_in_the_hf_cache_appears_and_loads_offline(tiny_llama, hf_cache):
    hf_cache("tiny-org/tiny-llama", tiny_llama)
    entries = {e.id: e for e in models.catalogue()}
    assert entries["tiny-org/tiny-llama"].source == "cache"
    assert entries["tiny-org/tiny-llama"].offline
    assert entries["tiny-org/tiny-llama"].architecture == "LlamaForCausalLM"
    loaded = models.load("tiny-org/tiny-llama")
    assert loaded.model_id == "tiny-org/tiny-llama"
    assert type(loaded.model).__name__ == "LlamaForCausalLM"


def test_catalogue_lists_the_reports_models_and_the_bundled_one():
    entries = {e.id: e for e in models.catalogue()}
    for hub_id in ("openai-community/gpt2", "deepseek-ai/deepseek-coder-1.3b-base", "Qwen/Qwen2.5-0.5B",
                   "HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M"):
        assert entries[hub_id].source == "hub"
        assert entries[hub_id].offline is False
    bundled = entries["bundled/SmolLM2-135M-Instruct"]
    assert bundled.offline is True
    assert bundled.params == 134_515_008


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(PoetError, match="does not exist"):
        models.resolve(str(tmp_path / "nope"))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(PoetError, match="no config.json"):
        models.resolve(str(tmp_path))


def test_non_causal_lm_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=100)).save_pretrained(tmp_path)
    with pytest.raises(PoetError, match="not a causal language model"):
        models.resolve(str(tmp_path))


def test_pickle_weights_are_refused_unless_allowed(tiny_gpt2, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_gpt2, folder)
    state = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(PoetError, match="pickle"):
        models.load(str(folder))
    assert models.load(str(folder), allow_pickle=True).model is not None


def test_hub_id_offline_is_a_clear_error_without_hanging():
    start = time.monotonic()
    with pytest.raises(PoetError, match="not in the local Hugging Face cache"):
        models.resolve("openai-community/gpt2")
    assert time.monotonic() - start < 30


def test_hub_id_with_unreachable_hub_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(PoetError, match="could not download"):
        models.hub_snapshot("openai-community/gpt2")


def test_remote_code_models_need_the_explicit_flag(tiny_gpt2, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_gpt2, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    cfg["architectures"] = ["EvilForCausalLM"]
    cfg["model_type"] = "evil-custom"
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(PoetError, match="trust-remote-code|could not load"):
        models.load(str(folder))


def _random_adapter(base_dir, out_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    targets = ["c_attn"] if base.config.model_type == "gpt2" else ["q_proj", "v_proj"]
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    peft_model.save_pretrained(out_dir)
    return out_dir


def test_adapter_for_another_base_model_is_a_clear_error(tiny_gpt2, tiny_llama, tmp_path):
    adapter = _random_adapter(tiny_gpt2, tmp_path / "gpt2-adapter")
    with pytest.raises(PoetError, match="was made for .* does not fit"):
        models.load(str(tiny_llama), adapter=str(adapter))


def test_adapter_directory_without_config_is_refused(tiny_gpt2, tmp_path):
    with pytest.raises(PoetError, match="adapter_config.json"):
        models.load(str(tiny_gpt2), adapter=str(tmp_path))


def test_adapter_by_unknown_run_id_is_refused(tiny_gpt2):
    with pytest.raises(PoetError, match="does not exist"):
        models.load(str(tiny_gpt2), adapter="no-such-run")


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"),
                                                      (False, False, "cpu")])
def test_the_device_is_cuda_then_apple_mps_then_cpu(cuda, mps, expected, monkeypatch, tmp_path):
    import torch

    from poetwb.core.config import StageConfig
    from poetwb.core.models import pick_device
    from poetwb.core.train_job import training_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device() == expected
    if expected != "cuda":  # what the Trainer is told: the CPU only when there is no GPU of either kind
        assert training_args(StageConfig(), tmp_path, "fp32", 0).use_cpu == (expected == "cpu")
