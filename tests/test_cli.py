"""The CLI as a user runs it: exit codes, one-line errors, JSON output."""

import json
import os
import subprocess
import sys

import pytest

from poetwb import __version__
from poetwb.cli import main


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "poetwb", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"poetwb {__version__}"


def test_models_json_lists_the_bundled_model_as_offline():
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert rows["bundled/SmolLM2-135M-Instruct"]["offline"] is True
    assert rows["openai-community/gpt2"]["offline"] is False


def test_generate_json_on_a_local_model(tiny_gpt2, capsys):
    assert main(["generate", "-m", str(tiny_gpt2), "-p", "The sea is blue", "-n", "12", "--seed", "5",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(tiny_gpt2)
    assert out["mode"] == "raw"
    assert out["sampling"]["seed"] == 5
    assert 0 < out["new_tokens"] <= 12


def test_generate_json_reports_the_decode_speed_and_why_it_stopped(tiny_gpt2, capsys):
    assert main(["generate", "-m", str(tiny_gpt2), "-p", "The sea", "-n", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == 1 and out["form"] == "free" and out["text"].startswith("The sea")
    assert out["stop_reason"] in {"end of text", "max tokens"} and out["seconds"] > 0
    assert out["tokens_per_s"] == pytest.approx(out["new_tokens"] / out["seconds"], rel=0.05)
    from poetwb.core import models

    if models.pick_device() == "cpu":  # a GPU decode has no CPU threads to count
        assert out["threads"] == out["threads_alone"] >= 1  # nothing else busy (tests see an idle machine)


def test_generate_in_a_form_prints_the_poem_and_what_it_achieved(tiny_gpt2, capsys):
    assert main(["generate", "-m", str(tiny_gpt2), "--form", "limerick", "-k", "2", "-p", "A cat sat"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 5 and lines[0] == "A cat sat"
    assert "limerick: 5 lines, AABBA" in captured.err and "got 5 lines" in captured.err


def test_compare_runs_n_adapters_on_one_base_in_json(tiny_models, tmp_path, capsys):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for i in range(2):
        torch.manual_seed(i)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        m.save_pretrained(tmp_path / f"ad{i}")
        folders.append(str(tmp_path / f"ad{i}"))
    assert main(["compare", "-m", str(tiny_models["llama"]), "-a", folders[0], "-a", folders[1], "-p", "The sea",
                 "-t", "0", "-n", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["label"] for c in out["columns"]] == ["base", "ad0", "ad1"]
    assert len({c["text"] for c in out["columns"]}) == 3
    assert all(c["text"].startswith("The sea") and c["new_tokens"] > 0 for c in out["columns"])
    assert main(["compare", "-a", folders[0], "-a", folders[0], "-a", folders[0], "-a", folders[0], "-a", folders[1],
                 "-p", "x"]) == 1
    assert "up to four" in capsys.readouterr().err


def test_generate_with_a_run_uses_the_base_model_that_run_trained(tiny_train_config, tiny_gpt2, capsys):
    from poetwb.core import bundled, runs
    from poetwb.core.config import TrainConfig
    from poetwb.core.train_job import run_job

    folder = runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2", steps1=2, steps2=2)), "g2")
    assert run_job(folder).state == "finished"
    converted = bundled.is_converted()
    assert main(["generate", "-a", "g2", "-p", "The sea", "-n", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(tiny_gpt2) and out["adapter"].endswith("g2/adapters/stage2")
    assert bundled.is_converted() == converted  # the bundled model was not touched


def test_eval_metrics_in_a_form_reports_how_well_the_form_held(tiny_train_config, capsys):
    from poetwb.core import runs
    from poetwb.core.config import TrainConfig
    from poetwb.core.train_job import run_job

    folder = runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2", steps1=2, steps2=2)), "fm")
    assert run_job(folder).state == "finished"
    assert main(["eval", "fm", "--form", "haiku"]) == 1
    assert "add --metrics" in capsys.readouterr().err
    assert main(["eval", "fm", "--metrics", "--form", "haiku", "-k", "2", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["metrics"]["table"]
    for row in (table["base"], table["tuned"]):
        assert row["exact_lines"] == 1.0 and row["seconds_per_poem"] > 0  # every poem has its three lines
        assert 0 <= row["syllables_within_one"] <= 1
    assert (folder / "metrics-haiku.json").is_file()


def test_a_pickle_only_adapter_is_refused_before_any_weights_load(tmp_path, capsys):
    adapter = tmp_path / "pickled"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"not read")
    assert main(["generate", "-m", "/no/such/model", "-a", str(adapter), "-p", "x"]) == 1
    assert "only pickle weights" in capsys.readouterr().err


def test_generate_streams_the_prompt_then_the_continuation(tiny_gpt2, capsys):
    assert main(["generate", "-m", str(tiny_gpt2), "-p", "The sea is blue", "-n", "8", "-t", "0"]) == 0
    assert capsys.readouterr().out.startswith("The sea is blue")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "x", "-t", "-1"], "temperature must be >= 0"),
        (["-p", "x", "--top-p", "0"], "top-p must be in (0, 1]"),
        (["-p", "x", "--top-p", "1.2"], "top-p must be in (0, 1]"),
        (["-p", "x", "-n", "0"], "max new tokens must be in"),
        (["-p", ""], "the prompt is empty"),
        (["-p", "x", "-m", "/no/such/model"], "does not exist"),
        (["-p", "x", "-m", "openai-community/gpt2"], "hub is offline"),
        (["-p", "x", "--scheme", "AB1"], "letters A-Z"),
        (["-p", "x", "--form", "sonnet", "--syllables", "0"], "1..24"),
        (["-p", "x", "--form", "sonnet", "-k", "0"], "--candidates must be in 1..32"),
        (["-p", "x", "--form", "sonnet", "--seed", str(2**64)], "seed must be in 0.."),
        (["-p", "x", "-a", "/no/such/adapter"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line_and_nonzero_exit(args, message, capsys):
    assert main(["generate", *args]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    result = run_cli("generate", "-p", "x", "-m", str(tmp_path))
    assert result.returncode == 1
    assert "no config.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_core_module_imports_textual():
    import pkgutil

    import poetwb.core

    names = [f"poetwb.core.{m.name}" for m in pkgutil.iter_modules(poetwb.core.__path__)]
    assert "poetwb.core.train_job" in names
    code = f"import sys\nfor n in {names!r}: __import__(n)\nassert 'textual' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_core_imports_no_textual_and_cli_start_imports_no_torch():
    code = (
        "import sys, poetwb.cli, poetwb.core.models, poetwb.core.generate, poetwb.core.config, poetwb.core.paths\n"
        "assert 'textual' not in sys.modules, 'core imported textual'\n"
        "assert 'torch' not in sys.modules, 'start-up imported torch'\n"
        "import poetwb.tui.app, poetwb.tui.panes.train, poetwb.tui.panes.compare, poetwb.tui.panes.data\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'the TUI imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_runs_delete_is_refused_while_running_and_removes_a_finished_run(tiny_gpt2, tiny_corpus, capsys):
    from poetwb.core import runs
    from poetwb.core.config import TrainConfig

    config = TrainConfig.from_dict({"model": str(tiny_gpt2), "corpus": {"kind": "local", "path": str(tiny_corpus)}})
    folder = runs.create_run(config, "busy")
    runs.update_status(folder, state="running", pid=os.getpid())
    assert main(["runs", "delete", "busy"]) == 1
    err = capsys.readouterr().err
    assert "run 'busy' is running" in err and err.count("\n") == 1 and "Traceback" not in err
    assert folder.is_dir()
    runs.update_status(folder, state="finished")
    assert main(["runs", "delete", "busy", "--yes"]) == 0
    assert "deleted run busy" in capsys.readouterr().out
    assert not folder.exists()
    assert main(["runs", "delete", "busy"]) == 1
    assert "no run 'busy'" in capsys.readouterr().err


def _feed(view) -> None:
    status = {"state": "running", "stage": 1, "step": 0, "total_steps": 4, "plan": {"1": 4, "2": 6}}
    view({**status, "phase": "stage 1: tokenising 40 poems into 64-token blocks"}, None)
    for step in (1, 2, 3):
        view({**status, "step": step, "phase": "stage 1: training"}, None)
        view(None, {"stage": 1, "step": step, "loss": 3.0, "tokens_per_s": 80.0, "elapsed_s": 2.0 * step})
    view({**status, "stage": 2, "step": 0, "total_steps": 6, "phase": "preparing stage 2: tokenising 1,234 pairs"},
         None)


def test_train_progress_is_plain_lines_when_not_a_terminal():
    import io

    from poetwb.console import TrainView

    out = io.StringIO()
    with TrainView(out) as view:
        _feed(view)
    lines = out.getvalue().splitlines()
    assert lines[0] == "stage 1: tokenising 40 poems into 64-token blocks"
    assert "stage 1 step 3/4 · 3/10 overall · loss 3.000 · 80 tok/s · ETA 0:14" in lines
    assert lines[-1] == "preparing stage 2: tokenising 1,234 pairs"
    assert "\x1b" not in out.getvalue()


def test_train_progress_is_one_bar_over_both_stages_on_a_terminal(monkeypatch):
    import io

    from poetwb.console import TrainView

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "160")
    out = Terminal()
    with TrainView(out) as view:
        _feed(view)
    text = out.getvalue()
    assert "\x1b" in text  # drawn, not printed line by line
    assert "preparing stage 2: tokenising 1,234 pairs" in text and "4/10 steps" in text
    assert "ETA 0:12" in text and "loss 3.000" in text and "80 tok/s" in text
