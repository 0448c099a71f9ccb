"""Worker discipline: an exception of any type in any worker reaches the user as a notification with its cause,
and the pane leaves its busy state ("loading…", a disabled Start)."""

from __future__ import annotations

from textual.widgets import Button, Label

from poetwb.core import data, models, runs
from poetwb.tui.app import PoetApp

SIZE = (160, 48)


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_a_preview_worker_raising_a_non_poetwb_error_is_shown_and_leaves_loading(monkeypatch, settle,
                                                                                     tiny_gpt2):
    def broken(spec):
        raise KeyError("Poem")

    monkeypatch.setattr(data, "load_poems", broken)
    app = PoetApp(base_model=str(tiny_gpt2))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await pilot.click("#preview")
        await settle(pilot)
        assert "the data preview failed: KeyError: 'Poem'" in notes(app)
        counts = str(app.query_one("#data-counts", Label).render())
        assert "loading" not in counts and "KeyError" in counts


async def test_a_catalogue_worker_failing_without_a_message_still_names_the_error(monkeypatch, settle):
    def broken(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(models, "catalogue", broken)
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.pause(0.5)
        await settle(pilot)
        assert "reading the model catalogue failed: RuntimeError" in notes(app)
        status = str(app.query_one("#models-status", Label).render())
        assert "reading the model catalogue…" not in status and "RuntimeError" in status


async def test_a_start_worker_that_crashes_reenables_start_and_says_why(monkeypatch, settle, tiny_models,
                                                                      tiny_corpus):
    def broken(config, run_id=None, detach=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "start_run", broken)
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    app.corpus = {"kind": "local", "path": str(tiny_corpus)}
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        await pilot.click("#start")
        await settle(pilot)
        assert any(m.startswith("starting the run failed: OSError: [Errno 28] No space left") for m in notes(app))
        assert not app.query_one("#start", Button).disabled
        assert "No space left" in str(app.query_one("#train-error", Label).render())
