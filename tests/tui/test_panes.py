"""Each pane's main flow with tiny models, driven by Pilot as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Label, Select, Static

from poetwb.core import runs
from poetwb.core.config import TrainConfig
from poetwb.core.library import Library, Poem
from poetwb.core.train_job import run_job
from poetwb.tui.app import PoetApp

SIZE = (160, 48)


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_models_pane_lists_the_catalogue_and_picks_a_local_model(tiny_gpt2, settle):
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.query_one("#model-table", DataTable)
        assert table.row_count == 6  # bundled + the curated hub list
        app.query_one("#local-path", Input).value = str(tiny_gpt2)
        await pilot.click("#add-local")
        await settle(pilot)
        assert table.row_count == 7
        table.focus()
        table.move_cursor(row=6)
        await pilot.press("enter")
        await pilot.pause()
        assert app.base_model == str(tiny_gpt2)
        app.query_one("#local-path", Input).value = "/no/such/folder"
        await pilot.click("#add-local")
        await pilot.pause()
        assert any("does not exist" in m for m in notes(app))


async def test_models_pane_refuses_an_offline_hub_pick_with_a_message(settle):
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.query_one("#model-table", DataTable)
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("enter")
        await pilot.pause()
        assert app.base_model == "bundled"
        assert any("not available offline" in m for m in notes(app))
        await pilot.click("#download")
        await settle(pilot)
        assert any("hub is offline" in m for m in notes(app))


async def test_data_pane_previews_counts_and_reports_bad_paths(settle, tiny_gpt2, tiny_corpus):
    app = PoetApp(base_model=str(tiny_gpt2))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await pilot.click("#preview")
        await settle(pilot)
        counts = str(app.query_one("#data-counts", Label).render())
        assert "154 poems" in counts and "tokens" in counts and "instruction pairs" in counts
        hist = app.query_one("#length-hist").data
        assert hist
        assert f"tallest bar: {max(hist)} poems" in str(app.query_one("#hist-title", Label).render())
        assert str(app.query_one("#hist-max", Label).render()).endswith(" lines")
        preview = str(app.query_one("#data-preview", Static).render())
        sonnets = [t for t in preview.split("Poem ")[1:] if t.strip()]
        assert sonnets and all("more line" in t for t in sonnets)  # cut at a line end, and says so
        assert "chosen: William Shakespeare (the sonnets)" in str(app.query_one("#poets-chosen", Label).render())
        app.query_one("#corpus-kind", Select).value = "local"
        app.query_one("#corpus-path", Input).value = str(tiny_corpus.parent / "missing.txt")
        await pilot.pause()
        assert app.corpus["kind"] == "local"
        app.query_one("#corpus-path", Input).focus()
        await pilot.press("enter")  # Enter in the path box previews, as the button does
        await settle(pilot)
        assert "does not exist" in str(app.query_one("#data-counts", Label).render())


def _tiny_app(tiny_models, tiny_corpus, steps1=30) -> PoetApp:
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    app.corpus = {"kind": "local", "path": str(tiny_corpus)}
    app.instructions = {"kind": "synth"}
    return app


def _kill(folder: Path) -> None:
    import contextlib
    import os
    import signal

    status = runs.read_status(folder)
    if status["state"] == "running" and status.get("pid"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(status["pid"], signal.SIGKILL)


async def _use_corpus(app, pilot, path: Path) -> None:
    """Pick a local corpus in the Data pane, as a user would (the pane announces its choice to the app)."""
    for _ in range(600):  # the Data pane mounts lazily after the first frame, its Select's parts just after
        if app.query("#corpus-kind #label"):
            break
        await pilot.pause(0.05)
    app.query_one("#corpus-kind", Select).value = "local"
    app.query_one("#corpus-path", Input).value = str(path)
    await pilot.pause()
    assert app.corpus == {"kind": "local", "path": str(path)}


async def _set_fields(app, pilot, **values):
    for fid, value in values.items():
        app.query_one(f"#{fid}", Input).value = str(value)
    await pilot.pause()


@pytest.mark.slow
async def test_train_pane_starts_a_job_plots_it_and_reattaches_after_a_restart(tiny_models, tiny_corpus, until,
                                                                             request):
    app = _tiny_app(tiny_models, tiny_corpus)
    async with app.run_test(size=SIZE) as pilot:
        await _use_corpus(app, pilot, tiny_corpus)
        await pilot.press("f3")
        await _set_fields(app, pilot, **{"s1-steps": 5000, "s1-seq": 64, "s1-batch": 2, "s2-steps": 2})
        await pilot.click("#start")
        pane = app.query_one("#train-pane")
        await until(pilot, lambda: pane.run_folder is not None, timeout=30)
        run_id = pane.run_folder.name
        request.addfinalizer(lambda: _kill(pane.run_folder))
        chart = app.query_one("#loss-chart")
        await until(pilot, lambda: chart.points >= 3)
        await pilot.pause(0.6)
        assert app.query_one("#train-progress").total == 5002  # one bar over both stages
        assert "all: " in str(app.query_one("#train-figures", Label).render())
        await pilot.click("#start")  # a second job while one runs
        await pilot.pause()
        assert any("already running" in m for m in notes(app))
    # quit and reopen: the job keeps training and the curve picks up from its history
    assert runs.read_status(runs.paths.run_dir(run_id))["state"] == "running"
    again = _tiny_app(tiny_models, tiny_corpus)
    async with again.run_test(size=SIZE) as pilot:
        # the Train pane mounts just after the first frame, then re-attaches to the running job by itself
        await until(pilot, lambda: bool(again.query("#train-pane")) and
                    again.query_one("#train-pane").run_folder is not None, timeout=30)
        pane = again.query_one("#train-pane")
        assert pane.run_folder.name == run_id
        await pilot.pause()
        assert again.query_one("TabbedContent").active == "train"  # opens where the action is
        chart = again.query_one("#loss-chart")
        before = chart.points
        assert before >= 3
        await until(pilot, lambda: chart.points > before)
        await pilot.click("#cancel")
        # said at once, before the job reaches the end of its step (seconds on a real model)
        assert "cancelling" in str(again.query_one("#train-phase", Label).render())
        await until(pilot, lambda: runs.read_status(pane.run_folder)["state"] == "cancelled", timeout=60)
        await until(pilot, lambda: any(f"run {run_id} cancelled" in m for m in notes(again)), timeout=10)
        await pilot.pause(0.6)
        assert len([m for m in notes(again) if "cancelled" in m]) == 1  # one toast, not one per worker
        assert "cancelling" not in str(again.query_one("#train-phase", Label).render())


async def test_train_pane_shows_bad_hyperparameters_inline(tiny_models, tiny_corpus):
    app = _tiny_app(tiny_models, tiny_corpus)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        for fid, value, message in (("s1-lr", "-1", "learning rate must be > 0"),
                                    ("lora-r", "0", "LoRA rank must be >= 1"),
                                    ("s1-batch", "abc", "is not a valid int")):
            app.query_one("#train-pane").fill_from_preset("cpu-quick")
            await _set_fields(app, pilot, **{fid: value})
            await pilot.click("#start")
            await pilot.pause()
            assert message in str(app.query_one("#train-error", Label).render())
        assert not runs.list_runs()


async def test_start_checks_the_corpus_before_a_run_exists(tiny_models, tmp_path, settle):
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await _use_corpus(app, pilot, tmp_path / "missing.txt")
        await pilot.press("f3")
        await pilot.pause()
        said = str(app.query_one("#train-inputs", Static).render())
        assert "missing.txt" in said and "requests synthesised from the corpus" in said  # what Start will use
        await pilot.click("#start")
        await settle(pilot)
        assert "corpus path" in str(app.query_one("#train-error", Label).render())
        assert "does not exist" in str(app.query_one("#train-error", Label).render())
        assert not runs.list_runs() and not (runs.paths.runs_dir().exists() and any(runs.paths.runs_dir().iterdir()))
        assert not app.query_one("#start").disabled
        app.query_one("#corpus-path", Input).value = str(tmp_path / "other.txt")  # the data changed in F2
        await pilot.pause()
        assert not app.query_one("#train-error", Label).display


async def test_hyperparameter_boxes_show_what_was_typed(tiny_models, tiny_corpus):
    app = _tiny_app(tiny_models, tiny_corpus)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        app.query_one("#preset", Select).value = "report-b"  # learning rate 5e-5 in both stages
        await pilot.pause()
        box = app.query_one("#s1-lr", Input)
        assert box.value == "0.00005"
        assert box.content_region.width > len(box.value)
        await _set_fields(app, pilot, **{"s1-lr": 5})
        await pilot.click("#start")
        await pilot.pause()
        assert str(app.query_one("#train-error", Label).render()) == "stage 1 learning rate must be < 1, got 5"
        assert not runs.list_runs()
        await _set_fields(app, pilot, **{"s1-lr": "0.0005"})  # fixed: the line no longer says it is wrong
        assert not app.query_one("#train-error", Label).display


async def test_runs_are_deleted_from_the_pane_after_asking_but_not_while_running(tiny_models):
    import os

    config = TrainConfig.from_dict({"model": str(tiny_models["gpt2"])})
    old = runs.create_run(config, "a-old")
    runs.update_status(old, state="finished")
    busy = runs.create_run(config, "b-busy")
    runs.update_status(busy, state="running", pid=os.getpid())  # a live pid: this test's own process
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        table = app.query_one("#runs-table", DataTable)
        assert table.row_count == 2
        table.move_cursor(row=0)  # newest first: b-busy
        await pilot.click("#delete-run")
        await pilot.pause()
        assert not app.screen.query("#confirm-question")  # refused before asking
        assert any("run 'b-busy' is running" in m for m in notes(app))
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("delete")  # the key works on the table too
        await pilot.pause()
        assert "a-old" in str(app.screen.query_one("#confirm-question", Label).render())
        await pilot.click("#confirm-yes")
        for _ in range(50):
            await pilot.pause(0.05)
            if table.row_count == 1:
                break
        assert table.row_count == 1 and any("deleted run a-old" in m for m in notes(app))
    assert not old.exists() and busy.is_dir()


async def test_train_pane_shows_a_failed_runs_error(tiny_models, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    cfg = TrainConfig.from_dict({"model": str(tiny_models["gpt2"]), "corpus": {"kind": "local", "path": str(empty)}})
    folder = runs.create_run(cfg, "broken")
    with pytest.raises(Exception, match="yields no poems"):
        run_job(folder)
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        app.query_one("#train-pane").attach("broken")
        await pilot.pause()
        assert "yields no poems" in str(app.query_one("#train-error", Label).render())


@pytest.fixture
def finished_run(tiny_train_config):
    folder = runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2", steps1=2, steps2=2)), "done")
    assert run_job(folder).state == "finished"
    return folder


async def test_poems_pane_search_and_unwritable_export(tmp_path):
    lib = Library()
    lib.add(Poem(text="Salt and stone", prompt="p", model="m"))
    lib.add(Poem(text="The tide", prompt="q", model="m"))
    lib.close()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        table = app.query_one("#poems-table", DataTable)
        assert table.row_count == 2
        assert app.query_one("#export-dir", Input).value == "./poems-export"  # under the current directory
        app.query_one("#poem-search", Input).value = "tide"
        await pilot.pause()
        assert table.row_count == 1
        app.query_one("#export-dir", Input).value = str(blocker / "sub")
        await pilot.click("#export")
        await pilot.pause()
        assert any("cannot write to" in m for m in notes(app))
    assert Path(blocker).read_text() == "x"


async def test_delete_removes_only_marked_poems_after_asking_and_can_be_undone():
    lib = Library()
    lib.add(Poem(text="Salt and stone", prompt="p", model="m"))
    lib.add(Poem(text="The tide", prompt="q", model="m"))
    lib.close()
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        table = app.query_one("#poems-table", DataTable)
        table.focus()
        await pilot.press("delete")  # nothing marked: nothing deleted, and it says so
        await pilot.pause()
        assert table.row_count == 2 and any("nothing is marked" in m for m in notes(app))
        await pilot.press("space", "delete")  # mark the first row ("The tide"), then Delete asks first
        await pilot.pause()
        assert app.screen.query("#confirm-question")
        await pilot.press("escape")  # cancelled: still there
        await pilot.pause()
        assert table.row_count == 2
        await pilot.press("delete")
        await pilot.pause()
        await pilot.click("#confirm-yes")
        await pilot.pause()
        assert table.row_count == 1 and any("ctrl+z to undo" in m for m in notes(app))
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert table.row_count == 2 and any("restored 1 poem" in m for m in notes(app))
        await pilot.press("space", "delete")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert table.row_count == 1
    assert [p.text for p in Library().search()] == ["Salt and stone"]  # final once the app closed


async def test_poems_show_their_run_and_sampling_in_words_and_export_with_enter_or_ctrl_e(tiny_models, tmp_path):
    import os
    import stat

    config = TrainConfig.from_dict({"model": str(tiny_models["gpt2"])})
    folder = runs.create_run(config, "sonnets-1")
    lib = Library()
    lib.add(Poem(text="Salt and stone", prompt="p", model="m", adapter=str(folder / "adapters" / "stage2"),
                 sampling={"temperature": 0.7, "top_p": 0.95, "top_k": 50}, seed=3))
    lib.add(Poem(text="The tide", prompt="q", model="m"))
    lib.close()
    old_umask = os.umask(0o022)
    app = PoetApp()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f5")
            await pilot.pause()
            table = app.query_one("#poems-table", DataTable)
            kinds = [str(table.get_row_at(i)[2]) for i in range(table.row_count)]
            assert kinds == ["base", "tuned"]
            assert str(table.get_row_at(1)[3]) == "sonnets-1"
            table.focus()
            table.move_cursor(row=1)
            await pilot.pause()
            view = str(app.query_one("#poem-view", Static).render())
            assert "adapter: run sonnets-1 · stage 2" in view and str(tmp_path) not in view
            assert "sampling: temperature 0.7 · top-p 0.95 · top-k 50" in view and "form: free verse" in view
            box = app.query_one("#export-dir", Input)
            box.value = str(tmp_path / "by-enter")
            box.focus()
            await pilot.press("enter")
            await pilot.pause()
            box.value = str(tmp_path / "by-ctrl-e")
            await pilot.press("ctrl+e")
            await pilot.pause()
    finally:
        os.umask(old_umask)
    for name in ("by-enter", "by-ctrl-e"):
        exported = tmp_path / name / "poems.md"
        assert "Salt and stone" in exported.read_text() and "The tide" in exported.read_text()
        assert stat.S_IMODE(exported.stat().st_mode) == 0o644


async def test_train_pane_evaluates_a_run_and_shows_every_number_at_120_columns(finished_run, settle, screen_text):
    app = PoetApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        assert app.query_one("#train-pane").run_folder == finished_run  # the newest run is shown on opening
        await pilot.click("#evaluate")
        await settle(pilot)
        await pilot.pause()
        assert "evaluation done" in notes(app)
        assert not app.query_one("#eval-progress-row").display
        saved = json.loads((finished_run / "eval.json").read_text())
        screen = screen_text(app)
        for name, row in saved["models"].items():
            for split, v in row.items():
                assert f"{v['loss']:.3f} ({v['perplexity']:.1f})" in screen, (name, split)


def _fake_evaluation(folder: Path) -> None:
    """eval.json with all three sets and metrics.json, as `poetwb eval --metrics` writes them (numbers distinct)."""
    models = {name: {split: {"loss": 4.0 + i / 10 + j / 100, "perplexity": 50.0 + 10 * i + j, "tokens": 100}
                     for j, split in enumerate(["stage1_val", "stage2_val", "stage2_test"])}
              for i, name in enumerate(["base", "stage1", "stage2"])}
    (folder / "eval.json").write_text(json.dumps({"run_id": folder.name, "models": models}))
    keys = ["lines_per_poem", "syllables_per_line", "end_rhyme_rate", "distinct_1", "distinct_2", "vocab_overlap",
            "topic_hit_rate"]
    table = {name: {k: 0.11 * (i + 1) + j for j, k in enumerate(keys)}
             for i, name in enumerate(["base", "tuned", "poet (held-out)"])}
    (folder / "metrics.json").write_text(json.dumps({"run_id": folder.name, "table": table}))


async def test_the_held_out_loss_table_is_a_table_with_all_nine_numbers_at_120_columns(tiny_models, screen_text):
    config = TrainConfig.from_dict({"model": str(tiny_models["gpt2"])})
    folder = runs.create_run(config, "judged")
    runs.update_status(folder, state="finished")
    _fake_evaluation(folder)
    app = PoetApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        app.query_one("#train-pane").attach("judged")
        await pilot.pause()
        lines = screen_text(app).splitlines()
        rows = {name: next(line for line in lines if line.strip().startswith(name + "  "))
                for name in ("base", "stage 1", "stage 2")}
        for i, name in enumerate(("base", "stage 1", "stage 2")):  # one row per model, one column per set
            for j in range(3):
                assert f"{4.0 + i / 10 + j / 100:.3f} ({50.0 + 10 * i + j:.1f})" in rows[name], (name, j)
        metrics = " ".join(lines)
        for i in range(3):  # the poetic metrics beside it, every figure visible
            for j in range(7):
                assert f"{0.11 * (i + 1) + j:.2f}" in metrics
