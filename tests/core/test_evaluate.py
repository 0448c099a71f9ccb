"""Held-out evaluation, one-pass side-by-side generation, reports and the CLI around them, on tiny models."""

import json
import math
import shutil

import pytest

from poetwb.cli import main
from poetwb.core import evaluate, generate, models, runs
from poetwb.core.config import SamplingConfig, TrainConfig
from poetwb.core.errors import PoetError
from poetwb.core.train_job import run_job

pytestmark = pytest.mark.slow


@pytest.fixture
def done(tiny_train_config):
    folder = runs.create_run(TrainConfig.from_toml(tiny_train_config("llama", steps1=6, steps2=4)), "ev")
    assert run_job(folder).state == "finished"
    return folder


def test_eval_numbers_equal_a_direct_recomputation(done, tiny_models):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = evaluate.evaluate_run("ev")
    assert set(result["models"]) == {"base", "stage1", "stage2"}
    assert {"stage1_val", "stage2_test"} <= set(result["models"]["base"])  # stage-2 val may be empty when tiny
    assert json.loads((done / "eval.json").read_text())["models"] == result["models"]
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    sets, _ = evaluate.run_splits(done, tok)
    for name, adapter in (("base", None), ("stage1", "stage1"), ("stage2", "stage2")):
        model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
        if adapter:
            model = PeftModel.from_pretrained(model, done / "adapters" / adapter)
        model.eval()
        for split, ds in sets.items():
            total = count = 0.0
            with torch.no_grad():
                for row in ds:  # one example at a time: no padding, plain HF loss
                    ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
                    n = int((labels[:, 1:] != -100).sum())
                    total += model(input_ids=ids, labels=labels).loss.item() * n
                    count += n
            assert math.isclose(result["models"][name][split]["loss"], total / count, rel_tol=1e-4), (name, split)
    assert result["models"]["stage1"]["stage1_val"]["loss"] < result["models"]["base"]["stage1_val"]["loss"]


def test_mixed_batch_equals_separate_generations_under_greedy(done, tiny_models):
    s = SamplingConfig(temperature=0, max_new_tokens=16)
    loaded = models.load(str(tiny_models["llama"]), adapter="ev")
    texts = ["", ""]
    for row, chunk in generate.side_by_side(loaded, "The sea is blue", s):
        texts[row] += chunk
    base_alone = generate.generate(models.load(str(tiny_models["llama"])), "The sea is blue", s).text
    tuned_alone = generate.generate(loaded, "The sea is blue", s).text
    assert texts == [base_alone, tuned_alone]
    assert texts[0] != texts[1]


def test_poetic_metrics_and_report_contain_every_section(done, tmp_path, capsys, torch_name, monkeypatch):
    from poetwb.core import llamacpp

    prompts = [{"text": "The sea is blue", "mode": "raw"}, {"text": "Write a poem about the sea", "mode": "instruct"}]
    with monkeypatch.context() as m:
        if llamacpp.installed():  # poems on llama.cpp never load the torch model (its weights, its int8 copies)
            m.setattr(evaluate, "load_run_model", lambda *a, **k: pytest.fail("the torch model was loaded"))
        result = evaluate.poetic_metrics("ev", prompts, max_new_tokens=12)
    assert set(result["table"]) == {"base", "tuned", "poet (held-out)"}
    assert result["engine"] == ("llama.cpp" if llamacpp.installed() else torch_name)  # auto, free verse
    assert result["adapter"] == "stage2" and all(len(result["generations"][k]) == 2 for k in ("base", "tuned"))
    greedy = evaluate.poetic_metrics("ev", prompts[:1], max_new_tokens=8, engine="torch")
    assert greedy["engine"] == torch_name and len(greedy["generations"]["tuned"]) == 1
    assert result["table"]["poet (held-out)"]["lines_per_poem"] == 4
    from poetwb.core.votes import Votes

    v = Votes()
    v.add("ev", "The sea", "a", "b", tuned_side="A", choice="A")  # a vote from before stages were kept
    v.add("ev/stage2", "The sea", "a", "b", tuned_side="B", choice="A")
    v.close()
    out = tmp_path / "report.md"
    assert main(["report", "ev", "-o", str(out)]) == 0
    text = out.read_text()
    for section in ("## Config", "## Loss curves", "![loss curves](report-loss.png)", "## Held-out loss",
                    "## Poetic metrics", "## Blind A/B votes", "## Side-by-side samples",
                    "| (stage not recorded) | 1 | 1 | 0 | 0 |", "| stage2 | 1 | 0 | 1 | 0 |"):
        assert section in text, section
    assert (tmp_path / "report-loss.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_and_compare_cli(done, tiny_models, capsys):
    assert main(["eval", "ev", "--json"]) == 0
    assert "stage2" in json.loads(capsys.readouterr().out)["loss"]["models"]
    assert main(["compare", "-m", str(tiny_models["llama"]), "-a", "ev", "-p", "The sea", "-n", "6", "-t", "0",
                 "--json"]) == 0
    pair = json.loads(capsys.readouterr().out)
    assert pair["base"] != pair["tuned"]


def test_eval_bad_input(tiny_train_config, capsys, done):
    assert main(["eval", "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err
    runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2")), "fresh")
    assert main(["eval", "fresh"]) == 1
    assert "has no adapters yet" in capsys.readouterr().err
    (done / "adapters" / "stage2" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    assert main(["eval", "ev"]) == 1
    assert "damaged" in capsys.readouterr().err
    shutil.rmtree(done / "adapters" / "stage2")
    with pytest.raises(PoetError, match="prompt set is empty"):
        evaluate.poetic_metrics("ev", [])
