"""Pane switching works from anywhere: F1–F5 and the palette's Show commands, whatever has focus, and focus lands
on the new pane's first useful control."""

from __future__ import annotations

from textual.widgets import Input

from poetwb.tui.app import PoetApp

SIZE = (160, 48)
KEYS = {"f1": ("models", "model-table"), "f2": ("data", "corpus-kind"), "f3": ("train", "preset"),
        "f4": ("compare", "compare-prompt"), "f5": ("poems", "poem-search")}
# an Input on every pane, where a user types and then presses an F-key
INPUTS = {"models": "local-path", "data": "corpus-path", "train": "s1-lr", "compare": "compare-prompt",
          "poems": "export-dir"}


async def _mounted(pilot) -> None:
    for _ in range(100):  # the hidden panes mount lazily just after the first frame
        if all(pilot.app.query(f"#{wid}") for wid in INPUTS.values()):
            return
        await pilot.pause(0.05)
    raise AssertionError("panes did not mount")


async def test_f_keys_switch_panes_from_inside_an_input_and_focus_the_first_control():
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await _mounted(pilot)
        for start, box_id in INPUTS.items():
            for key, (pane, first) in KEYS.items():
                app.action_show(start)
                await pilot.pause()
                box = app.query_one(f"#{box_id}", Input)
                box.focus()
                await pilot.pause()
                await pilot.press("1")  # typing in it, as a user would before switching
                assert app.focused is box
                await pilot.press(key)
                await pilot.pause()
                assert app.query_one("TabbedContent").active == pane, (start, key)
                assert app.focused is not None and app.focused.id == first, (start, key, app.focused)


async def test_the_palette_shows_a_pane_and_escape_closes_the_keys_panel():
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await _mounted(pilot)
        app.query_one("#s1-lr", Input).focus()
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"show poems")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.query_one("TabbedContent").active == "poems"
        assert app.focused is not None and app.focused.id == "poem-search"
        app.action_show_help_panel()
        await pilot.pause()
        assert app.screen.query("HelpPanel")
        await pilot.press("escape")
        await pilot.pause()
        assert not app.screen.query("HelpPanel")


async def test_enter_on_a_model_row_works_right_after_f1():
    app = PoetApp()
    async with app.run_test(size=SIZE) as pilot:
        await _mounted(pilot)
        app.action_show("compare")  # where a user would be: typing a prompt in the Compare pane
        await pilot.pause()
        app.query_one("#compare-prompt", Input).focus()
        await pilot.pause()
        await pilot.press("f1")
        await pilot.pause()
        for _ in range(600):  # the catalogue is read by a worker after the first paint (slow on a busy CPU)
            if app.query_one("#model-table").row_count:
                break
            await pilot.pause(0.1)
        await pilot.press("enter")  # on the bundled model's row: no Tab first
        await pilot.pause()
        assert app.base_model == "bundled"
        assert any("base model" in n.message for n in app._notifications)
