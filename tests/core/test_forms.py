"""Form-aware generation: parsing forms, the scorer's sound checks, and the line loop on tiny real models."""

from __future__ import annotations

import pytest

from poetwb.core import forms, generate, metrics, models
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError
from poetwb.core.forms_torch import TorchLines


def test_named_forms_have_their_shape():
    sonnet = forms.make_form("sonnet")
    assert len(sonnet.lines) == 14 and sonnet.scheme == "ABAB CDCD EFEF GG"
    assert all(s.syllables == (10, 10) for s in sonnet.lines)
    assert sonnet.partners()[:4] == [None, None, 0, 1] and sonnet.partners()[13] == 12
    assert len(sonnet.rhyme_pairs()) == 7
    assert [s.stanza_end for s in sonnet.lines].count(True) == 3
    limerick = forms.make_form("limerick")
    assert limerick.scheme == "AABBA" and limerick.lines[2].syllables == (5, 6)
    haiku = forms.make_form("haiku")
    assert [s.syllables for s in haiku.lines] == [(5, 5), (7, 7), (5, 5)] and haiku.rhyme_pairs() == []
    assert forms.make_form("quatrains", stanzas=2).scheme == "ABAB ABAB"
    assert forms.make_form("couplets").scheme == "AABBCCDD"
    assert forms.make_form("free") is None


def test_custom_forms_take_a_scheme_and_syllables():
    form = forms.make_form(scheme="abab cdcd", syllables="8,8,6,6,8,8,6,6")
    assert form.name == "custom" and form.scheme == "ABAB CDCD" and form.lines[2].syllables == (6, 6)
    assert forms.make_form("custom", scheme="AA", syllables="8-9").lines[1].syllables == (8, 9)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scheme": "AB1"}, "letters A-Z"),
    ({"scheme": "ABAB", "syllables": "0"}, r"1\.\.24"),
    ({"scheme": "ABAB", "syllables": "8,8"}, r"one per line \(4\)"),
    ({"scheme": "ABAB", "syllables": "ten"}, "a number, a range"),
    ({"name": "sonnet", "scheme": "AABB"}, "custom form"),
    ({"name": "custom"}, "needs a rhyme scheme"),
    ({"name": "villanelle"}, "unknown form"),
    ({"name": "free", "syllables": "10"}, "free verse has no syllable count"),
])
def test_bad_forms_give_one_line_errors(kwargs, message):
    with pytest.raises(PoetError, match=message) as info:
        forms.make_form(**kwargs)
    assert "\n" not in str(info.value)


def test_rhymes_are_true_rhymes():
    assert forms.is_rhyme("night", "light") and forms.is_rhyme("Day", "way")
    assert not forms.is_rhyme("night", "night")  # identical words
    assert not forms.is_rhyme("day", "today")  # identity rhyme: same onset
    assert not forms.is_rhyme("sight", "site")  # homophones
    assert not forms.is_rhyme("sea", "sky")
    assert forms.word_syllables("fire") == (1, 2)  # either pronunciation counts
    assert forms.word_syllables("o\u2019er")[0] >= 1  # curly apostrophe, word missing from the dictionary
    assert forms.syllable_miss("Shall I compare thee to a summer's day", (10, 10)) == 0
    assert forms.syllable_miss("The sea", (10, 10)) == 8
    pool = {"light": 1, "bright": 2, "night": 3, "today": 4, "sea": 5}
    assert forms.rhymes_in("night", pool) == ["bright", "light"]


def test_the_rhyme_pool_holds_words_poets_use_not_word_pieces():
    texts = ["<s>", " merc", " bed", " head", " pol", "\n", "ing"]
    classes = forms.classes_from_texts(texts, {0})
    assert set(classes.words) == {"bed", "head"}  # ' merc' and ' pol' are tokens and CMU words, not poets' words
    assert classes.newline_ids == [5] and classes.special[0] and classes.letters_first[6]
    assert forms.rhymes_in("red", classes.words) == ["bed", "head"]


def test_the_syllable_rule_stops_runs_of_punctuation():
    texts = ["<s>", " the", " sea", ";", "...", "\n", "ing", ","]
    classes = forms.classes_from_texts(texts, {0})
    allowed = lambda text, target: [t for i, t in enumerate(texts)  # noqa: E731
                                    if not classes.never[i] and not forms.banned_next(classes, text, target)[i]]
    assert allowed("the sea", (6, 6)) == [" the", " sea", ";", "...", "ing", ","]  # short: no newline yet
    assert allowed("the sea;...", (6, 6)) == [" the", " sea", "ing"]  # a run of marks: words must follow
    assert allowed("the sea the sea the sea", (6, 6)) == [";", "...", "\n", "ing", ","]  # full: end the word, line
    assert allowed("the sea the sea the sea,", (6, 6)) == [";", "...", "\n", ","]
    assert allowed("the sea the sea the sea ;...", (6, 6)) == ["\n"]
    assert forms.banned_next(classes, "the sea the sea the", (6, 6)) is None  # one short of six: anything goes
    assert allowed("the sea the sea the;...", (6, 6)) == [" the", " sea", "\n", "ing"]


def test_the_score_puts_rhyme_then_syllables_then_the_model():
    spec = forms.LineSpec("A", (10, 10))

    def cand(text, logp=-2.0):
        return forms.Candidate(text, [1] * 8, logp * 8, 8)

    rhymed_fluent = forms.score_line(cand("Shall I compare thee to a summer's night"), spec, "light", set())
    rhymed_weak = forms.score_line(cand("Shall I compare thee to a summer's night", -4.0), spec, "light", set())
    unrhymed = forms.score_line(cand("Shall I compare thee to a summer's day", -0.5), spec, "light", set())
    short = forms.score_line(cand("Shall I compare thee to the night", -0.5), spec, "light", set())
    ranked = sorted([unrhymed, short, rhymed_weak, rhymed_fluent], key=forms.rank_key)
    # a rhyme first; the short line rhymes but misses by two, so it ranks below the fluent ones, above no rhyme
    assert ranked == [rhymed_fluent, rhymed_weak, short, unrhymed]
    assert rhymed_fluent.rhymed and unrhymed.rhymed is False and short.miss == 2
    used = forms.score_line(cand("Shall I compare thee to a summer's night"), spec, "light", {"night"})
    assert used.score == rhymed_fluent.score - 2


def _write(loaded, form, seed=0, k=3, prompt="The sea is blue", instruct=False):
    text = generate.format_prompt(loaded.tokenizer, prompt, instruct)
    prefilled = None if instruct else forms.prompt_lines(prompt)
    lm = TorchLines(loaded.model, loaded.tokenizer)
    return list(forms.write(lm, text, form, SamplingConfig(seed=seed, temperature=1.0), candidates=k,
                            prefilled=prefilled))


@pytest.fixture(scope="module")
def llama(tiny_models):
    return models.load(str(tiny_models["llama"]))


def test_the_line_loop_samples_k_candidates_per_line_in_one_call(llama, monkeypatch):
    calls = []
    real = llama.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(llama.model, "generate", spy)
    form = forms.make_form("quatrains", stanzas=2, syllables="6")
    lines = _write(llama, form, k=4)
    assert len(lines) == 8 and lines[0].prefilled and lines[0].text == "The sea is blue"
    assert calls == [4] * 7  # one batched call of k rows per generated line
    assert all("\n" not in line.text and line.text for line in lines)
    assert [line.spec.rhyme for line in lines] == list("ABABABAB")
    assert lines[3].spec.stanza_end and not lines[7].spec.stanza_end
    assert all(line.candidates >= 4 for line in lines[1:])


def test_the_form_is_complete_even_when_the_model_wants_to_stop(llama):
    """The tiny model's end-of-text is its most common token; a form still gets all its lines."""
    form = forms.make_form("limerick")
    for seed in (0, 1):
        lines = _write(llama, form, seed=seed, instruct=True, prompt="Write a limerick")
        assert len(lines) == 5 and all(line.text.strip() for line in lines)


def test_same_seed_same_poem_other_seed_other_poem(llama):
    form = forms.make_form(scheme="AABB", syllables="5")
    a = forms.render(_write(llama, form, seed=7))
    assert a == forms.render(_write(llama, form, seed=7))
    assert a != forms.render(_write(llama, form, seed=8))
    assert a.startswith("The sea is blue\n")


def test_candidates_must_be_at_least_one(llama):
    with pytest.raises(PoetError, match="candidates per line must be in 1..32"):
        _write(llama, forms.make_form("haiku"), k=0)


def test_n_way_columns_equal_separate_greedy_generations(tiny_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = tiny_models["llama"]
    folders = []
    for i, targets in enumerate((["q_proj", "v_proj"], ["o_proj", "down_proj"])):
        import torch

        torch.manual_seed(i)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=64, target_modules=targets, init_lora_weights=False))
        m.save_pretrained(tmp_path / f"adapter{i}")
        folders.append(tmp_path / f"adapter{i}")
    s = SamplingConfig(temperature=0, max_new_tokens=16)
    loaded = models.load(str(base_dir), adapters=folders)
    assert generate.adapter_names(loaded) == ["a1", "a2"]
    texts = ["", "", ""]
    stats: list = []
    for col, chunk in generate.columns(loaded, "The sea is blue", s, [None, "a1", "a2"], stats=stats):
        texts[col] += chunk
    alone = [generate.generate(models.load(str(base_dir), adapter=a), "The sea is blue", s).text
             for a in [None, *folders]]
    assert texts == alone and len(set(texts)) == 3
    assert all(0 < st.new_tokens <= 16 and st.seconds > 0 for st in stats)
    assert all(st.reason in {"end of text", "max tokens"} for st in stats)
    # with a form: each column writes its own poem under its own adapter
    form = forms.make_form(scheme="AA", syllables="4")
    poems = ["", "", ""]
    for col, chunk in generate.columns(loaded, "The sea is blue", s, [None, "a1", "a2"], form=form, candidates=2):
        poems[col] += chunk
    for col, adapter in enumerate([None, *folders]):
        single = models.load(str(base_dir), adapter=adapter)
        one = "".join(c for _, c in generate.columns(single, "The sea is blue", s,
                                                     generate.adapter_names(single)[-1:] or [None], form=form,
                                                     candidates=2))
        assert poems[col] == one


def test_the_evaluation_checker_counts_lines_rhymes_and_syllables():
    form = forms.make_form(scheme="ABAB", syllables="8")
    poem = ("The winter wind is cold tonight\nIt blows across the frozen sea\nAnd every star is burning bright\n"
            "Above the old and silent tree")
    r = metrics.form_report(poem, form)
    assert r["lines"] == 4 and r["rhyme_pairs"] == 2 and r["rhymes_held"] == 2 and r["within_one"] == 4
    summary = metrics.form_summary([r, metrics.form_report("One line only", form)])
    assert summary["exact_lines"] == 0.5 and summary["rhyme_pairs_held"] == 0.5
