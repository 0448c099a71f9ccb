"""The CLI on a run: `compare -a RUN` and `eval RUN` use the base model that run trained (not the bundled default),
and `train --json` in the foreground reports the run as one JSON object with a schema version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poetwb.cli import main
from poetwb.core import bundled, paths

pytestmark = pytest.mark.slow


def test_compare_and_eval_on_a_gpt2_run_use_its_base_model(tiny_train_config, tiny_gpt2, capsys):
    cfg = Path(paths.data_dir()) / "c.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(tiny_train_config("gpt2", steps1=2, steps2=1))
    converted = bundled.is_converted()
    assert main(["train", str(cfg), "--run-id", "c2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == 1 and out["run_id"] == "c2" and out["state"] == "finished" and out["pid"]
    assert out["path"] == str(paths.run_dir("c2")) and set(out["eval_loss"]) >= {"stage1_start", "stage2_end"}
    assert main(["compare", "-a", "c2", "-p", "The sea", "-n", "4", "-t", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["model"] == str(tiny_gpt2) and got["columns"][1]["adapter"].endswith("c2/adapters/stage2")
    assert main(["eval", "c2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["schema"] == 1 and {"base", "stage1", "stage2"} <= set(result["loss"]["models"])
    assert bundled.is_converted() == converted  # the bundled model was neither loaded nor converted
