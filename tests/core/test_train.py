"""The two-stage job end to end on tiny models: run directory contract, adapters, cancel, kill -9 and resume,
bad input, and a 2-process data-parallel run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from poetwb.cli import main
from poetwb.core import paths, runs
from poetwb.core.config import TrainConfig
from poetwb.core.errors import PoetError
from poetwb.core.train_job import run_job

pytestmark = pytest.mark.slow


def _start(config_text: str, run_id: str) -> Path:
    return runs.create_run(TrainConfig.from_toml(config_text), run_id)


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_both_stages_write_adapters_that_plain_peft_loads_and_that_change_the_model(tiny_train_config, tiny_models):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = _start(tiny_train_config("llama", steps1=8, steps2=4), "both")
    assert run_job(folder).state == "finished"
    status = runs.read_status(folder)
    assert status["state"] == "finished"
    assert status["eval_loss"]["stage1_end"] < status["eval_loss"]["stage1_start"]
    assert sorted(status["targets"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with torch.no_grad():
        base_logits = base(ids).logits
    for stage in (1, 2):
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]),
                                          folder / "adapters" / f"stage{stage}")
        with torch.no_grad():
            assert not torch.allclose(tuned(ids).logits, base_logits, atol=1e-4)
    records = _metrics(folder)
    for r in records:
        assert {"stage", "step", "epoch", "elapsed_s"} <= set(r)
        assert ("loss" in r and "learning_rate" in r and "tokens_per_s" in r) or any(k.endswith("_loss") for k in r)
    assert {r["stage"] for r in records} == {1, 2}
    assert any("test_loss" in r for r in records)
    assert (folder / "checkpoints" / "stage1").is_dir() and (folder / "log.txt").read_text()


def test_gpt2_fused_attention_is_targeted_and_generate_uses_the_stage2_adapter(tiny_train_config, capsys):
    config = Path(paths.data_dir()) / "cfg.toml"
    config.parent.mkdir(parents=True)
    config.write_text(tiny_train_config("gpt2", steps1=4, steps2=2))
    assert main(["train", str(config), "--run-id", "g2"]) == 0
    out = capsys.readouterr().out
    assert "stage 1 step" in out and "stage 2 step" in out
    status = runs.read_status(paths.run_dir("g2"))
    assert "c_attn" in status["targets"]
    assert main(["generate", "-m", status["model_id"], "-a", "g2", "-p", "The sea", "-n", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["adapter"].endswith("g2/adapters/stage2")
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["run_id"] == "g2" and listed[0]["state"] == "finished"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("[stage1]\nlearning_rate = 0", "learning rate must be > 0"),
        ("[stage2]\nbatch_size = 0", "batch size must be >= 1"),
        ("[lora]\nr = 0", "LoRA rank must be >= 1"),
    ],
)
def test_out_of_range_hyperparameters_fail_before_anything_is_written(setting, message, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(setting + "\n")
    assert main(["train", str(config)]) == 1
    assert message in capsys.readouterr().err
    assert not paths.runs_dir().exists() or not any(paths.runs_dir().iterdir())


def _fail_run(capsys, config_text, run_id):
    cfg = Path(paths.data_dir()) / f"{run_id}.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config_text)
    code = main(["train", str(cfg), "--run-id", run_id])
    status = runs.read_status(paths.run_dir(run_id))
    return code, capsys.readouterr().err, status


def _bad_inputs(tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02binary")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Übermut tut selten gut".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    csv_file = tmp_path / "pf.csv"
    csv_file.write_text("Title,Body\nA,B\n")
    no_assistant = tmp_path / "conv.jsonl"
    no_assistant.write_text(json.dumps({"conversation": "User: a poem please"}) + "\n")
    missing = tmp_path / "missing.txt"
    instructions_csv = tmp_path / "pairs.csv"
    instructions_csv.write_text("request,poem\na,b\n")
    # (corpus, instructions, message, caught before a run exists: the preflight checks paths, kinds and headers)
    return {
        "empty": (f'kind = "local"\npath = "{empty}"', "", "yields no poems", True),
        "binary": (f'kind = "local"\npath = "{binary}"', "", "binary", True),
        "latin": (f'kind = "local"\npath = "{latin}"', "", "not UTF-8", False),
        "csv": (f'kind = "local"\npath = "{csv_file}"', "", "no column 'Poem'", True),
        "missing": (f'kind = "local"\npath = "{missing}"', "", "does not exist", True),
        "pairs": ("", f'kind = "local"\npath = "{instructions_csv}"', "no column 'prompt'", True),
        "conv": ("", f'kind = "conversations"\npath = "{no_assistant}"', "without 'Assistant:'", False),
    }


def test_bad_data_fails_with_the_error_in_status_and_on_the_cli(tiny_train_config, tiny_corpus, tmp_path, capsys):
    good = _start(tiny_train_config("gpt2", steps1=2, steps2=1), "good")
    assert run_job(good).state == "finished"
    before = sorted(p.relative_to(good) for p in good.rglob("*"))
    base_text = tiny_train_config("gpt2")
    for run_id, (corpus, instructions, message, early) in _bad_inputs(tmp_path).items():
        text = base_text
        if corpus:
            text = text.replace(f'kind = "local"\npath = "{tiny_corpus}"', corpus)
        if instructions:
            text = text.replace('[instructions]\nkind = "synth"', "[instructions]\n" + instructions)
        cfg = Path(paths.data_dir()) / f"{run_id}.toml"
        cfg.write_text(text)
        code = main(["train", str(cfg), "--run-id", run_id])
        err = capsys.readouterr().err
        assert code == 1, run_id
        assert message in err and err.count("\n") == 1, (run_id, err)
        if early:  # refused at the start: no run is left behind
            assert not paths.run_dir(run_id).exists(), run_id
            continue
        status = runs.read_status(paths.run_dir(run_id))
        assert status["state"] == "failed" and message in status["error"] and status["cause"] == "bad input"

    code, err, status = _fail_run(capsys, base_text.replace("seq_len = 256", "seq_len = 16"), "toolong")
    assert code == 1 and "every stage-2 example is longer than 16 tokens" in status["error"]

    assert sorted(p.relative_to(good) for p in good.rglob("*")) == before
    assert runs.read_status(good)["state"] == "finished"


def test_a_second_job_on_the_same_run_id_is_refused(tiny_train_config, capsys):
    folder = _start(tiny_train_config("gpt2"), "dup")
    with pytest.raises(PoetError, match="already exists"):
        runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2")), "dup")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(folder / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PoetError, match="already running"):
            run_job(folder, lock_timeout=0.5)
    finally:
        holder.kill()
        holder.wait()


def test_unwritable_data_dir_is_a_clear_error(tiny_train_config, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("POETWB_HOME", str(blocker / "home"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(tiny_train_config("gpt2"))
    assert main(["train", str(cfg)]) == 1
    assert "not writable" in capsys.readouterr().err


def _spawn_detached(capsys, config_text: str, run_id: str) -> Path:
    cfg = Path(paths.data_dir()) / f"{run_id}.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config_text)
    assert main(["train", str(cfg), "--run-id", run_id, "--detach"]) == 0
    capsys.readouterr()
    return paths.run_dir(run_id)


def test_cancel_stops_cleanly_and_keeps_a_checkpoint(tiny_train_config, capsys, wait_for):
    folder = _spawn_detached(capsys, tiny_train_config("gpt2", steps1=5000, steps2=2), "cx")
    wait_for(lambda: runs.read_status(folder).get("step", 0) >= 2)
    assert main(["cancel", "cx"]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert runs.read_status(folder)["state"] == "cancelled"
    assert runs.last_checkpoint(folder, 1) is not None
    assert main(["cancel", "cx"]) == 1  # nothing left to cancel


def test_kill_9_shows_interrupted_and_resume_finishes(tiny_train_config, capsys, wait_for):
    folder = _spawn_detached(capsys, tiny_train_config("gpt2", steps1=150, steps2=2), "k9")
    wait_for(lambda: runs.last_checkpoint(folder, 1) is not None)
    pid = runs.read_status(folder)["pid"]
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: runs.read_status(folder)["state"] == "interrupted", timeout=30)
    assert main(["runs"]) == 0
    assert "interrupted" in capsys.readouterr().out
    resumed_from = int(runs.last_checkpoint(folder, 1).name.split("-")[1])
    assert resumed_from < 150
    assert main(["train", "--resume", "k9"]) == 0
    assert runs.read_status(folder)["state"] == "finished"
    steps_after = [r["step"] for r in _metrics(folder) if r["stage"] == 1 and "loss" in r]
    assert steps_after[-1] == 150
    assert runs.has_adapter(folder, 1) and runs.has_adapter(folder, 2)


def test_stage1_runs_data_parallel_on_two_cpu_processes(tiny_train_config):
    text = tiny_train_config("gpt2", steps1=4, steps2=1).replace("[stage2]", "[stage2]\nenabled = false")
    folder = _start(text, "ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "poetwb.core.train_job", str(folder)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status = runs.read_status(folder)
    assert status["state"] == "finished" and status["world_size"] == 2
    assert runs.has_adapter(folder, 1) and not runs.has_adapter(folder, 2)
    train_steps = [r["step"] for r in _metrics(folder) if "loss" in r]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 4  # one stream, from rank 0 only


def test_keep_best_saves_the_adapter_with_the_lowest_validation_loss(tiny_train_config):
    from safetensors.torch import load_file

    text = tiny_train_config("gpt2", steps1=8, steps2=2).replace(
        "learning_rate = 5e-3\neval_steps = 3", "learning_rate = 0.3\neval_steps = 2\nkeep_best = true", 1
    ).replace("save_steps = 3", "save_steps = 2", 1)
    cfg = TrainConfig.from_toml(text)
    assert cfg.stage1.keep_best and cfg.stage1.learning_rate == 0.3
    folder = _start(text, "best")
    assert run_job(folder).state == "finished"
    evals = [(r["step"], r["eval_loss"]) for r in _metrics(folder) if r["stage"] == 1 and "eval_loss" in r
             and r["step"] > 0]
    best_step, best = min(evals, key=lambda e: e[1])
    assert best_step < evals[-1][0]  # lr 0.3 overshoots: the last adapter is not the best one
    assert runs.read_status(folder)["eval_loss"]["stage1_end"] == pytest.approx(best)
    saved = load_file(folder / "adapters" / "stage1" / "adapter_model.safetensors")
    state = json.loads(next((folder / "checkpoints" / "stage1").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    kept = load_file(Path(state["best_model_checkpoint"]) / "adapter_model.safetensors")
    assert saved.keys() == kept.keys() and all((saved[k] == kept[k]).all() for k in saved)


def test_keep_best_needs_checkpoints_at_evaluations():
    from poetwb.core.config import StageConfig

    with pytest.raises(PoetError, match="multiple of eval_steps"):
        StageConfig(keep_best=True, eval_steps=20, save_steps=50)


def test_bench_train_compares_both_legs_and_profiles_a_step(tiny_models):
    """`poetwb bench train` on a tiny model: both legs train on the same poems and are scored on the same
    held-out blocks; poetwb's leg uses the lean loss, its memory is measured and a step's profile is printed."""
    import math

    from poetwb.core import bench

    result = bench.bench_train(str(tiny_models["llama"]), budget_tokens=2048, profile=True)
    a, b = result["legs"]
    assert a["steps"] >= 1 and b["steps"] >= 1
    assert all(math.isfinite(leg["held_out_loss"]) and leg["peak_rss_mb"] > 0 for leg in (a, b))
    assert "lr" in b["name"] and result["profile"] and any(r["op"].startswith("aten::") for r in result["profile"])
    text = bench.format_report(result)
    assert "poetwb / report" in text and "where a training step's time goes" in text and "peak RSS" in text
