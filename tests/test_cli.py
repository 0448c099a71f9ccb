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
