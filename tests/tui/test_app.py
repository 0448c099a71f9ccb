from textual.widgets import Input, Static

from poetwb.tui.app import PoetApp


async def test_app_starts_with_the_default_model_and_a_prompt_box():
    app = PoetApp()
    async with app.run_test() as pilot:
        await pilot.pause()
        assert "bundled" in str(app.query_one("#model-line", Static).render())
        assert app.query_one("#prompt", Input).has_focus or app.query_one("#prompt", Input) is not None
