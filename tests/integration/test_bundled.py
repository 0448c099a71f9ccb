"""The real bundled SmolLM2: conversion once (atomic), then generation offline."""

import pytest

from poetwb.core import bundled, generate, models
from poetwb.core.config import SamplingConfig

pytestmark = pytest.mark.integration


def test_a_crash_during_conversion_leaves_nothing_that_looks_like_a_model(tmp_path, monkeypatch):
    monkeypatch.setenv("POETWB_CACHE", str(tmp_path / "cache"))
    from transformers import PreTrainedModel

    def crash(self, *args, **kwargs):
        raise MemoryError("simulated crash halfway through saving")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(MemoryError):
        bundled.ensure_converted()
    assert not bundled.is_converted()
    models_dir = tmp_path / "cache" / "models"
    assert not [p for p in models_dir.iterdir() if p.is_dir()]


def test_bundled_model_converts_once_and_generates_offline():
    folder = bundled.ensure_converted()
    assert (folder / "model.safetensors").is_file()
    loaded = models.load(None)
    assert loaded.model_id == bundled.BUNDLED_ID
    s = SamplingConfig(seed=0, max_new_tokens=24)
    first = generate.generate(loaded, "The sea is blue, the sky is red", s)
    assert len(first.text.split()) >= 3
    assert first.text == generate.generate(loaded, "The sea is blue, the sky is red", s).text
    poem = generate.generate(loaded, "Write a poem about the sea and the sky", s, instruct=True)
    assert poem.text.strip()
