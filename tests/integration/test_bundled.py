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


def test_a_sonnet_on_the_bundled_model_has_fourteen_rhyming_lines(capsys):
    """The issue's example, through the CLI: a raw first line, then thirteen more in ABAB CDCD EFEF GG."""
    from poetwb.cli import main
    from poetwb.core import forms, metrics

    prompt = "Shall I compare thee to a winter's night?"
    assert main(["generate", "--form", "sonnet", "-k", "4", "--seed", "3", "-p", prompt]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 14 and lines[0] == prompt
    assert out.count("\n\n") == 3  # stanza breaks after each quatrain
    report = metrics.form_report(out, forms.make_form("sonnet"))
    assert report["rhymes_held"] >= 5 and report["within_one"] >= 12, report
    assert "ABAB CDCD EFEF GG" in err
