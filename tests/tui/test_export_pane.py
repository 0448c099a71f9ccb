"""The Train pane's Export action: a dialog, a worker that calls core.export, progress, and a notification saying
where the model went (or why it did not)."""

from __future__ import annotations

from textual.widgets import Input, Select

from poetwb.tui.app import PoetApp

SIZE = (160, 48)


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_export_from_the_train_pane_writes_an_ollama_model_and_says_how_to_run_it(tiny_gpt2, tmp_path, settle,
                                                                                      make_run):
    make_run(tiny_gpt2, "poet", targets=["c_attn"])
    out = tmp_path / "exported"
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        app.query_one("#train-pane").attach("poet")
        await pilot.click("#train-export")
        await pilot.pause()
        dialog = app.screen
        assert dialog.query_one("#export-output", Input).value.endswith("poet-gguf")
        dialog.query_one("#export-format", Select).value = "ollama"
        await pilot.pause()
        assert dialog.query_one("#export-output", Input).value.endswith("poet-ollama")  # follows the format
        dialog.query_one("#export-output", Input).value = str(out)
        await pilot.click("#export-go")
        await settle(pilot, group="export")
        await pilot.pause()
        said = notes(app)[-1]
        assert said.startswith("exported poet stage 2 as ollama (f16") and str(out) in said
        assert "ollama create poetwb-poet-s2" in said and "ollama run poetwb-poet-s2" in said
        assert (out / "Modelfile").is_file() and list(out.glob("*.gguf"))
        assert not app.query_one("#export-progress-row").display

        # again into the same folder without "replace": refused, with the reason, and nothing changes
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        await pilot.click("#train-export")
        await pilot.pause()
        app.screen.query_one("#export-output", Input).value = str(out)
        await pilot.click("#export-go")
        await settle(pilot, group="export")
        await pilot.pause()
        assert "export failed" in notes(app)[-1] and "already exists; pass --force" in notes(app)[-1]
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
