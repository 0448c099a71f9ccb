"""The Compare pane with tiny models, driven by Pilot: columns, forms, N runs, blind votes, seeds, saving."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Label, Select, SelectionList, Switch

from poetwb.core import runs
from poetwb.core.config import TrainConfig
from poetwb.core.library import Library
from poetwb.core.train_job import run_job
from poetwb.tui.app import PoetApp
from poetwb.tui.widgets.poem_column import PoemColumn

SIZE = (160, 48)


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def columns(app) -> list[PoemColumn]:
    """The visible columns, left to right."""
    return list(app.query(PoemColumn))


@pytest.fixture
def finished_run(tiny_train_config):
    folder = runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2", steps1=2, steps2=2)), "done")
    assert run_job(folder).state == "finished"
    return folder


async def whole_pair(app, pilot, settle) -> None:
    """Generate until a pair is whole (a tiny random model can end a column at once, and such a pair takes no
    vote)."""
    pane = app.query_one("#compare-pane")
    for _ in range(5):
        app.query_one("#compare-prompt").focus()
        await pilot.press("ctrl+g")
        await settle(pilot)
        if pane.last.get("complete"):
            return
    raise AssertionError("no whole pair in five tries")


async def open_compare(app, pilot, prompt: str = "The sea is blue, the sky is red") -> None:
    await pilot.press("f4")
    await pilot.pause()
    app.query_one("#compare-prompt", Input).value = prompt


async def test_base_and_tuned_stream_whole_poems_with_an_ending_and_a_save(tiny_models, finished_run, settle):
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot)
        assert [str(v) for v in app.query_one("#run-list", SelectionList).selected] == [
            str(runs.adapter_dir(finished_run, 2))]
        app.query_one("#seed", Input).value = "5"
        await pilot.click("#generate")
        await settle(pilot)
        pane = app.query_one("#compare-pane")
        base, tuned = columns(app)
        assert base.title_text == "base model" and tuned.title_text.startswith("done · stage 2")
        for col in (base, tuned):  # raw mode: the prompt is the poem's first line
            assert col.text.startswith("The sea is blue, the sky is red") and len(col.text) > 31
            foot = str(col.query_one(".column-foot", Label).render())
            assert "tok/s" in foot and ("end of text" in foot or "max tokens" in foot)
        assert pane.cols[0].text != pane.cols[1].text
        app.query_one("#compare-prompt").focus()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert any("saved the poem of done" in m for m in notes(app))
        await pilot.press("ctrl+s")  # the same poem again: kept once
        await pilot.pause()
        assert any("in the library already (poem 1)" in m for m in notes(app))
    (saved,) = Library().search()
    assert saved.text.startswith("The sea is blue, the sky is red") and saved.adapter.endswith("stage2")
    assert saved.seed == 5 and saved.form == ""


async def test_a_form_writes_every_line_and_is_saved_with_the_poem(tiny_models, finished_run, settle):
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot, "Write a poem about the sea")
        app.query_one("#instruct", Switch).value = True
        form = app.query_one("#form", Select)
        form.focus()
        await pilot.press("enter")  # open the list, pick "limerick" by keyboard
        await pilot.pause()
        for _ in range(4):
            await pilot.press("down")
        await pilot.press("enter")
        await pilot.pause()
        assert form.value == "limerick"
        assert app.query_one("#scheme", Input).disabled and not app.query_one("#syllables", Input).disabled
        await pilot.click("#generate")
        await settle(pilot)
        for col in columns(app):
            assert len([line for line in col.text.splitlines() if line.strip()]) == 5
            assert "form complete" in str(col.query_one(".column-foot", Label).render())
        await pilot.press("ctrl+b")
        await pilot.pause()
        form.value = "custom"
        await pilot.pause()
        app.query_one("#scheme", Input).value = "AB1"
        app.query_one("#syllables", Input).value = "6"
        await pilot.click("#generate")
        await pilot.pause()
        assert any("letters A-Z" in m for m in notes(app))
        form.value = "limerick"  # the custom form's scheme and syllables do not carry over
        await pilot.pause()
        assert app.query_one("#syllables", Input).value == "" == app.query_one("#scheme", Input).value
        assert app.query_one("#compare-pane").form().describe().endswith("8-9,8-9,5-6,5-6,8-9 syllables")
    (saved,) = Library().search()
    assert saved.form.startswith("limerick: 5 lines, AABBA") and saved.adapter == ""


async def test_blind_votes_keep_texts_under_their_titles_and_draw_fresh_seeds(tiny_models, finished_run, settle):
    from poetwb.core.votes import Votes

    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot, "The sea")
        app.query_one("#blind", Switch).value = True
        pane = app.query_one("#compare-pane")
        seeds = []
        for key in ("f6", "f7", "f8"):
            await whole_pair(app, pilot, settle)
            seeds.append(pane.last["seed"])
            shown = [(c.title_text, c.text) for c in columns(app)]
            assert [t for t, _ in shown] == ["A", "B"]
            feet = [str(c.query_one(".column-foot", Label).render()) for c in columns(app)]
            assert all("tok/s" not in f and "after the vote" in f for f in feet), feet  # speed tells the sides
            await pilot.press("ctrl+s")  # saving before the vote would reveal the sides
            await pilot.pause()
            assert any("vote first" in m for m in notes(app))
            app.query_one("#compare-prompt").focus()
            await pilot.press(key)
            await pilot.pause()
            after = [(c.title_text, c.text) for c in columns(app)]
            assert [text for _, text in after] == [text for _, text in shown]  # the texts did not move
            assert all("tok/s" in str(c.query_one(".column-foot", Label).render()) for c in columns(app))
            for (title, text), col in zip(after, columns(app), strict=True):
                model_col = pane.cols[col.model_index]
                assert title.endswith(model_col.label) and text == pane.shown(col.model_index)
                assert ("base model" in title) == (model_col.adapter is None)
        assert len(set(seeds)) == 3  # a fresh seed per round: the seed box was left empty
        assert "win rate" in str(app.query_one("#vote-tally", Label).render())
    votes = Votes()
    tally = votes.tally("done/stage2")  # the adapter voted on: stage 1 and stage 2 are tallied apart
    assert tally.votes == 3 and tally.ties == 1 and tally.tuned + tally.base == 2
    assert sorted(r[0] for r in votes.db.execute("SELECT seed FROM votes")) == sorted(seeds)
    settings = [json.loads(r[0]) for r in votes.db.execute("SELECT settings FROM votes")]
    assert all(s["form"] == "free" and s["mode"] == "raw" and s["engine"] for s in settings)  # what was judged
    votes.close()


async def test_a_vote_while_the_pair_streams_is_refused(tiny_models, finished_run, settle):
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot, "The sea")
        app.query_one("#blind", Switch).value = True
        app.query_one("#engine", Select).value = "torch"  # llama.cpp can finish a tiny model's pair before F6
        pane = app.query_one("#compare-pane")
        # both in one turn of the event loop: a tiny model's pair can finish before a pressed key's pause ends
        pane.action_generate()
        assert pane.streaming
        pane.action_vote("A")
        assert pane.hidden  # no vote taken: the labels stay hidden
        await pilot.pause()
        assert any("wait until both poems are finished" in m for m in notes(app))
        await settle(pilot)


async def test_a_stopped_pair_takes_no_vote_and_a_pair_takes_one(tiny_models, finished_run, settle):
    from poetwb.core.votes import Votes

    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot, "The sea")
        app.query_one("#blind", Switch).value = True
        app.query_one("#engine", Select).value = "torch"
        app.query_one("#compare-prompt").focus()
        pane = app.query_one("#compare-pane")
        pane.action_generate()  # ctrl+g, then escape at once (one turn of the loop: before a tiny pair can end)
        pane.action_stop()
        await settle(pilot)
        texts = [c.text for c in columns(app)]
        assert all("loading" not in t for t in texts)  # the note is not left standing as a poem
        titles = [c.title_text for c in columns(app)]
        assert titles != ["A", "B"] and any("base model" in t for t in titles)  # no vote to wait for: sides shown
        assert "takes no vote" in str(app.query_one("#vote-tally", Label).render())
        await pilot.press("f6")
        await pilot.pause()
        assert any("this pair did not finish" in m for m in notes(app))
        await whole_pair(app, pilot, settle)
        assert [c.title_text for c in columns(app)] == ["A", "B"]
        await pilot.press("f7")
        await pilot.pause()
        await pilot.press("f6")  # a second vote on the same pair
        await pilot.pause()
        assert any("you voted on this pair already" in m for m in notes(app))
    votes = Votes()
    assert [(r[0], r[1]) for r in votes.db.execute("SELECT run, choice FROM votes")] == [("done/stage2", "B")]
    votes.close()


async def test_seeds_and_prompts_are_checked_before_anything_runs(tiny_models, settle):
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot, "The sea")
        assert app.query_one("#compare-prompt", Input).placeholder.startswith("type a first line")
        app.query_one("#seed", Input).value = "12345678901234567890123"
        await pilot.click("#generate")
        await pilot.pause()
        assert any("seed must be in 0.." in m for m in notes(app))
        assert not [w for w in app.workers if w.group == "generate"]
        app.query_one("#seed", Input).value = "3"
        await pilot.click("#generate")
        await pilot.pause()
        # checked before the generation ends: a notification lives 5 s, and a loaded machine takes longer
        assert any("no fine-tuned run picked" in m for m in notes(app))
        await settle(pilot)
        assert [c.title_text for c in columns(app)] == ["base model"] and columns(app)[0].text
        app.query_one("#compare-prompt", Input).value = "   "
        await pilot.click("#generate")
        await pilot.pause()
        assert any("prompt is empty" in m for m in notes(app))


async def test_a_second_generation_never_mixes_into_the_first(tiny_models, finished_run, settle):
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot, "The sea")
        app.query_one("#engine", Select).value = "torch"  # torch: the generations overlap on one model's layers
        app.query_one("#max_new_tokens").value = 512
        app.query_one("#seed", Input).value = "1"
        pane = app.query_one("#compare-pane")
        await pilot.click("#generate")
        await pilot.pause(0.3)
        first_gen = pane.gen
        app.query_one("#compare-prompt", Input).value = "The sky"
        app.query_one("#max_new_tokens").value = 32
        await pilot.click("#generate")
        await settle(pilot)
        assert pane.gen == first_gen + 1
        for col in columns(app):
            assert col.text.startswith("The sky") and "The sea" not in col.text
            assert col.gen == pane.gen
        assert not [m for m in notes(app) if "failed" in m]
        replaced = [c.text for c in columns(app)]
        await pilot.click("#generate")  # the same pair again, alone: the replaced one's row masks did not leak in
        await settle(pilot)
        assert [c.text for c in columns(app)] == replaced


async def test_the_engine_is_chosen_per_poem_and_named_under_each_column(tiny_models, finished_run, settle,
                                                                          torch_name):
    """auto: llama.cpp where it is installed, for free verse and forms alike; asking for llama.cpp where it is not
    installed is refused with a message before anything runs. The footers say which engine wrote the poems (sampled
    poems differ between engines: each has its own random number generator; greedy agreement is tested in core)."""
    from poetwb.core import llamacpp

    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot)
        app.query_one("#seed", Input).value = "5"
        await pilot.click("#generate")
        await settle(pilot)
        expected = "llama.cpp" if llamacpp.installed() else torch_name
        for col in columns(app):
            assert str(col.query_one(".column-foot", Label).render()).endswith(f"tok/s · {expected}")
        app.query_one("#engine", Select).value = "torch"
        await pilot.click("#generate")
        await settle(pilot)
        assert all(str(c.query_one(".column-foot", Label).render()).endswith(f"· {torch_name}") for c in columns(app))
        app.query_one("#engine", Select).value = "llamacpp"
        app.query_one("#form", Select).value = "couplets"
        await pilot.pause()
        gen = app.query_one("#compare-pane").gen
        await pilot.click("#generate")
        if not llamacpp.installed():
            await pilot.pause()
            assert any("not installed" in m for m in notes(app)) and app.query_one("#compare-pane").gen == gen
            return
        await settle(pilot)
        for col in columns(app):
            foot = str(col.query_one(".column-foot", Label).render())
            assert foot.startswith("form complete · rhymes ") and foot.endswith("· llama.cpp"), foot
            assert "/4 · own " in foot  # four couplets: four rhymes required
            assert len([line for line in col.text.splitlines() if line.strip()]) == 8  # 4 couplets, the prompt first


async def test_without_llama_cpp_auto_says_once_where_the_faster_engine_comes_from(tiny_models, monkeypatch,
                                                                                   settle, torch_name):
    from poetwb.core import llamacpp

    monkeypatch.setattr(llamacpp, "installed", lambda: False)
    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    said: list[str] = []  # every notification, kept past its few seconds on screen
    async with app.run_test(size=SIZE) as pilot:
        notify = app.notify
        monkeypatch.setattr(app, "notify", lambda message, **kw: (said.append(message), notify(message, **kw)))
        await open_compare(app, pilot)
        for _ in range(2):
            await pilot.click("#generate")
            await settle(pilot)
        assert sum("pip install 'poetwb[llamacpp]'" in m for m in said) == 1
        assert all(str(c.query_one(".column-foot", Label).render()).endswith(f"· {torch_name}") for c in columns(app))


async def test_the_exact_torch_engine_is_one_select_away_and_the_footers_say_which_ran(tiny_models, settle,
                                                                                      torch_name):
    """engine: torch decodes on int8 copies where dtype auto takes them (CPUs without native bf16); engine: torch
    fp32 loads the exact model (no copies) and the footers say plain torch."""
    from poetwb.core import int8
    from poetwb.tui.panes.compare import TORCH_FP32

    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot)
        for value, want in ((TORCH_FP32, "torch"), ("torch", torch_name)):
            app.query_one("#engine", Select).value = value
            await pilot.click("#generate")
            await settle(pilot)
            assert all(str(c.query_one(".column-foot", Label).render()).endswith(f"tok/s · {want}")
                       for c in columns(app))
            (key, loaded), = [held for engine, held in app._models.items() if engine == "torch"]
            assert key[-1] == ("fp32" if value == TORCH_FP32 else "auto")
            assert int8.is_quantized(loaded.model) == (want == "torch int8")


async def test_a_streaming_column_grows_with_each_new_line_and_shows_its_last_word(tiny_models):
    """The screen is laid out again only when a streaming poem takes another line (a word that fits repaints its
    line only): after every word, the column is as tall as the poem's wrapped lines and the last word is on screen."""
    from textual.widgets import Static

    from poetwb.tui.panes.compare import ColumnChunk, GenerationEnded

    app = PoetApp(base_model=str(tiny_models["gpt2"]))
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(app, pilot)
        pane = app.query_one("#compare-pane")
        pane.last = {"prompt": "", "mode": "instruct", "sampling": {}}  # as a generation in instruction mode sets it
        static = columns(app)[0].query_one(".column-text", Static)
        heights = set()
        for i in range(90):  # words that stay on their line, lines that wrap, and new lines
            word = f"wave{i}" + ("\n" if i % 30 == 29 else " ")
            pane.post_message(ColumnChunk(pane.gen, 0, word))
            await pilot.pause()
            wrapped = static.visual.get_height(static.styles, static.content_region.width)
            assert static.size.height == wrapped, f"after word {i} the column did not follow the poem's lines"
            last_line = static.render_line(wrapped - 1).text
            assert f"wave{i}" in last_line, (i, last_line)
            heights.add(wrapped)
        assert len(heights) > 6  # it grew, line by line
        pane.post_message(ColumnChunk(pane.gen, 1, "the last words"))
        pane.post_message(GenerationEnded(pane.gen, []))
        await pilot.pause()
        assert "the last words" in columns(app)[1].query_one(".column-text", Static).render_line(0).text


def test_streamed_text_is_posted_a_few_times_a_second_and_never_waits_for_the_next_chunk():
    """Chunks within PAINT_EVERY of the last post go out together at its deadline, without a later chunk to carry
    them (the second column of a pair, a form's prompt lines); flush posts what is held at once, and nothing twice."""
    import time

    from poetwb.tui.panes.compare import Batcher

    posts: list[tuple[float, int, str]] = []
    start = time.monotonic()
    batch = Batcher(lambda col, text: posts.append((time.monotonic() - start, col, text)), every=0.3)
    batch.add(0, "The ")
    batch.add(1, "A ")  # the same step's other column
    batch.add(0, "sea")
    assert [(c, t) for _, c, t in posts] == [(0, "The ")]
    deadline = time.monotonic() + 10  # no further chunk comes: the held text must not wait for one
    while len(posts) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(c, t) for _, c, t in posts] == [(0, "The "), (1, "A "), (0, "sea")]
    assert posts[1][0] >= 0.25  # held until the deadline, not posted at once
    batch.add(1, "wave")
    batch.add(1, "s")
    batch.flush()  # as the worker does before it says the generation ended: everything is out at once
    after_flush = len(posts)
    assert "".join(t for _, c, t in posts if c == 1) == "A waves"
    time.sleep(0.4)
    assert len(posts) == after_flush  # the timer, if one was set, posts nothing more
