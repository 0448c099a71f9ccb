"""Each pane's main flow with tiny models, driven by Pilot as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Label, Select

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
        assert app.query_one("#length-hist").data
        app.query_one("#corpus-kind", Select).value = "local"
        app.query_one("#corpus-path", Input).value = str(tiny_corpus.parent / "missing.txt")
        await pilot.pause()
        assert app.corpus["kind"] == "local"
        await pilot.click("#preview")
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


async def _set_fields(app, pilot, **values):
    for fid, value in values.items():
        app.query_one(f"#{fid}", Input).value = str(value)
    await pilot.pause()


@pytest.mark.slow
async def test_train_pane_starts_a_job_plots_it_and_reattaches_after_a_restart(tiny_models, tiny_corpus, until,
                                                                             request):
    app = _tiny_app(tiny_models, tiny_corpus)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await _set_fields(app, pilot, **{"s1-steps": 5000, "s1-seq": 64, "s1-batch": 2, "s2-steps": 2})
        await pilot.click("#start")
        await pilot.pause()
        pane = app.query_one("#train-pane")
        assert pane.run_folder is not None
        run_id = pane.run_folder.name
        request.addfinalizer(lambda: _kill(pane.run_folder))
        chart = app.query_one("#loss-chart")
        await until(pilot, lambda: chart.points >= 3)
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
        await until(pilot, lambda: runs.read_status(pane.run_folder)["state"] == "cancelled", timeout=60)


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
    assert run_job(folder) == "finished"
    return folder


async def test_poems_pane_search_delete_and_unwritable_export(tmp_path):
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
        app.query_one("#poem-search", Input).value = "tide"
        await pilot.pause()
        assert table.row_count == 1
        app.query_one("#export-dir", Input).value = str(blocker / "sub")
        await pilot.click("#export")
        await pilot.pause()
        assert any("cannot write to" in m for m in notes(app))
        await pilot.click("#delete")
        await pilot.pause()
        app.query_one("#poem-search", Input).value = ""
        await pilot.pause()
        assert table.row_count == 1
    assert [p.text for p in Library().search()] == ["Salt and stone"]
    assert Path(blocker).read_text() == "x"


async def test_train_pane_evaluates_a_run(finished_run, settle):
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        app.query_one("#train-pane").attach("done")
        await pilot.click("#evaluate")
        await settle(pilot)
        text = str(app.query_one("#eval-table", Label).render())
        assert "base" in text and "stage2" in text and "stage1_val" in text
