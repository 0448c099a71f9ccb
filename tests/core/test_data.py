"""Corpus and instruction sources, splits, packing and prompt masking."""

import json

import pytest

from poetwb.core import data
from poetwb.core.config import CorpusSpec, InstructionSpec
from poetwb.core.errors import PoetError


def test_bundled_sonnets_are_154_poems_of_sonnet_length():
    poems = data.load_poems(CorpusSpec(kind="bundled", poets=["shakespeare"]))
    assert len(poems) == 154
    assert all(12 <= p.count("\n") + 1 <= 15 for p in poems["text"])
    assert poems[0]["text"].startswith("FROM fairest creatures we desire increase,")


def test_paradise_lost_is_cut_into_passages_and_poets_combine():
    milton = data.bundled_poems(["milton"])
    assert len(milton) > 100
    assert max(p["text"].count("\n") + 1 for p in milton) <= 2 * data.PASSAGE_LINES
    both = data.load_poems(CorpusSpec(kind="bundled", poets=["shakespeare", "yeats-early"]))
    assert {"William Shakespeare (the sonnets)", "W. B. Yeats (early)"} <= set(both["poet"])


def test_unknown_bundled_poet_names_the_choices():
    with pytest.raises(PoetError, match="unknown bundled poet 'keats'.*shakespeare"):
        data.load_poems(CorpusSpec(kind="bundled", poets=["keats"]))


def test_local_txt_keeps_stanzas_inside_poems(tiny_corpus):
    poems = data.load_poems(CorpusSpec(kind="local", path=str(tiny_corpus)))
    assert len(poems) > 10
    assert all("\n\n" in p for p in poems["text"])  # stanza breaks survive


def test_local_folder_is_one_poem_per_file_with_titles(tmp_path):
    (tmp_path / "the_tide.txt").write_text("The tide comes in\nthe tide goes out\n\nand I remain")
    (tmp_path / "notes.md").write_text("Salt on the window,\nsalt on my tongue.")
    poems = data.load_poems(CorpusSpec(kind="local", path=str(tmp_path)))
    assert sorted(poems["title"]) == ["notes", "the tide"]


def test_poetry_foundation_csv_with_column_mapping_and_poet_filter(tmp_path):
    import csv

    path = tmp_path / "pf.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["Title", "Poem", "Poet", "Tags"])
        w.writeheader()
        w.writerow({"Title": "Hope", "Poem": "Hope is the thing with feathers\nThat perches in the soul",
                    "Poet": "Emily Dickinson", "Tags": "Living,Hope"})
        w.writerow({"Title": "Sea Fever", "Poem": "I must go down to the seas again", "Poet": "John Masefield",
                    "Tags": "Nature,Sea"})
    all_poems = data.load_poems(CorpusSpec(kind="local", path=str(path)))
    assert len(all_poems) == 2
    only = data.load_poems(CorpusSpec(kind="local", path=str(path), poet_filter="dickinson"))
    assert only["title"] == ["Hope"]
    assert only[0]["tags"] == "Living,Hope"
    pairs = data.synth_pairs(list(only))
    assert "Living and Hope" in pairs[0]["prompt"]


def test_csv_without_the_mapped_column_is_a_clear_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("title,body\nA,B\n")
    with pytest.raises(PoetError, match="no column 'Poem'.*title, body"):
        data.load_poems(CorpusSpec(kind="local", path=str(path)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        ("Übermut".encode("latin-1"), "not UTF-8"),
        (b"\n\n  \n", "no poems"),
    ],
)
def test_unreadable_or_empty_corpus_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "poems.txt"
    path.write_bytes(content)
    with pytest.raises(PoetError, match=message):
        data.load_poems(CorpusSpec(kind="local", path=str(path)))


def test_missing_corpus_path(tmp_path):
    with pytest.raises(PoetError, match="does not exist"):
        data.load_poems(CorpusSpec(kind="local", path=str(tmp_path / "nope.txt")))


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(PoetError, match="offline"):
        data.load_poems(CorpusSpec(kind="hf", dataset="suayptalha/Poetry-Foundation-Poems"))


def test_poetry_instructions_parquet_is_parsed_like_the_report(tmp_path):
    import pandas as pd

    rows = [
        "User: Can you write me a poem about the moon? Assistant: Sure, here's a poem about the moon:\nPale coin",
        "User: Can you write me a poem about rain? Assistant: Sure, here's a poem about rain:\nSoft drum",
        "User: hello there, no answer here",
    ]
    path = tmp_path / "instructions.parquet"
    pd.DataFrame({"conversation": rows}).to_parquet(path)
    splits, report = data.load_pairs(InstructionSpec(kind="conversations", path=str(path)), None, seed=0)
    pairs = [p for part in splits.values() for p in part]
    assert report.pairs == 2
    assert report.dropped_malformed == 1
    moon = next(p for p in pairs if "moon" in p["prompt"])
    assert moon["prompt"] == "Can you write me a poem about the moon?"
    assert moon["completion"].startswith("Sure, here's a poem about the moon:\nPale coin")


def test_conversations_without_assistant_are_a_clear_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps({"conversation": f"User: poem {i} please"}) for i in range(3)))
    with pytest.raises(PoetError, match="without 'Assistant:'"):
        data.load_pairs(InstructionSpec(kind="conversations", path=str(path)), None, seed=0)


def test_local_prompt_completion_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"A poem about {w}", "completion": f"{w} {w}"})
                              for w in ("sea", "sky", "salt", "stone")))
    splits, report = data.load_pairs(InstructionSpec(kind="local", path=str(path)), None, seed=0)
    assert report.pairs == 4
    assert sum(len(v) for v in splits.values()) == 4


def test_splits_are_80_20_disjoint_and_stable_under_reordering():
    poems = data.load_poems(CorpusSpec(kind="bundled", poets=["shakespeare"]))
    a = data.split_poems_dataset(poems, seed=42)
    b = data.split_poems_dataset(poems.shuffle(seed=7), seed=42)
    assert set(a["train"]["poem_id"]).isdisjoint(a["val"]["poem_id"])
    assert set(a["val"]["poem_id"]) == set(b["val"]["poem_id"])
    assert 0.12 < len(a["val"]) / len(poems) < 0.28
    c = data.split_poems_dataset(poems, seed=43)
    assert set(c["val"]["poem_id"]) != set(a["val"]["poem_id"])


def test_synthesised_stage2_never_trains_on_stage1_held_out_poems():
    poems = data.load_poems(CorpusSpec(kind="bundled", poets=["shakespeare"]))
    split = data.split_poems_dataset(poems, seed=42)
    pairs, _ = data.load_pairs(InstructionSpec(kind="synth"), split, seed=42)
    held_out = set(split["val"]["poem_id"])
    assert not {p["poem_id"] for p in pairs["train"]} & held_out
    assert {p["poem_id"] for p in pairs["val"] + pairs["test"]} == held_out
    n = sum(len(v) for v in pairs.values())
    assert len(pairs["test"]) > len(pairs["val"]) > 0
    assert 0.7 < len(pairs["train"]) / n < 0.9
    assert all(p["prompt"].endswith(("?", ".")) and p["completion"] for p in pairs["train"])


def test_stage2_split_is_80_5_15_for_external_pairs():
    pairs = [{"prompt": f"p{i}", "completion": f"c{i}", "poem_id": ""} for i in range(2000)]
    s = data.split_pairs(pairs, seed=0)
    assert abs(len(s["train"]) / 2000 - 0.80) < 0.03
    assert abs(len(s["val"]) / 2000 - 0.05) < 0.02
    assert abs(len(s["test"]) / 2000 - 0.15) < 0.03
    assert data.split_pairs(pairs, seed=0) == s


def test_packing_makes_full_blocks_without_padding(tiny_models, tiny_corpus):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    poems = data.load_poems(CorpusSpec(kind="local", path=str(tiny_corpus)))
    packed = data.pack(tok, poems, 32)
    assert all(len(ids) == 32 for ids in packed["input_ids"])
    total = sum(len(tok(p, add_special_tokens=False)["input_ids"]) + 1 for p in poems["text"])
    assert len(packed) == total // 32


def test_prompt_tokens_are_masked_and_completion_is_learned(tiny_models):
    from transformers import AutoTokenizer

    for kind in ("gpt2", "llama"):
        tok = AutoTokenizer.from_pretrained(tiny_models[kind])
        report = data.DataReport("t")
        ds = data.tokenize_pairs(tok, [{"prompt": "Write a poem about the sea", "completion": "The sea is blue",
                                        "poem_id": ""}], 256, "drop", report)
        ids, labels = ds[0]["input_ids"], ds[0]["labels"]
        n_masked = labels.count(-100)
        assert n_masked > 0
        assert labels[:n_masked] == [-100] * n_masked
        assert labels[n_masked:] == ids[n_masked:]
        assert tok.decode(ids[n_masked:], skip_special_tokens=True).strip() == "The sea is blue"
        assert ids[-1] == tok.eos_token_id


def test_too_long_pairs_are_dropped_or_truncated_and_counted(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    pairs = [{"prompt": "A poem", "completion": "sea " * 300, "poem_id": ""}, {"prompt": "A poem",
             "completion": "short", "poem_id": ""}]
    dropped = data.DataReport("t")
    assert len(data.tokenize_pairs(tok, pairs, 64, "drop", dropped)) == 1
    assert dropped.dropped_too_long == 1
    cut = data.DataReport("t")
    ds = data.tokenize_pairs(tok, pairs, 64, "truncate", cut)
    assert len(ds) == 2 and cut.truncated == 1 and len(ds[0]["input_ids"]) == 64
