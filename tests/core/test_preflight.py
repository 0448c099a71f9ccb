"""Start checks before a run exists: inputs (paths, file kinds, table headers) and hyperparameters named by stage."""

import json

import pytest

from poetwb.core import preflight
from poetwb.core.config import TrainConfig
from poetwb.core.errors import PoetError


def _config(**parts) -> TrainConfig:
    return TrainConfig.from_dict({"model": "bundled", **parts})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stage1": {"learning_rate": 5}}, "stage 1 learning rate must be < 1, got 5"),
        ({"stage2": {"batch_size": 0}}, "stage 2 batch size must be >= 1, got 0"),
        ({"stage2": {"max_steps": "abc"}}, "stage 2 max steps (stage2.max_steps) must be a whole number (int), "
                                           "got 'abc' (str)"),
        ({"stage1": {"learning_rate": True}}, "stage 1 learning rate (stage1.learning_rate) must be a number "
                                              "(float), got True (bool)"),
        ({"lora": {"r": 0}}, "LoRA rank must be >= 1, got 0"),
        ({"seed": "x"}, "seed must be a whole number (int), got 'x' (str)"),
    ],
)
def test_hyperparameter_messages_name_the_stage_and_the_field(data, message):
    with pytest.raises(PoetError) as info:
        TrainConfig.from_dict(data)
    assert str(info.value) == message


def test_whole_numbers_are_fine_where_a_float_is_wanted():
    assert TrainConfig.from_dict({"stage1": {"epochs": 3}}).stage1.epochs == 3


def test_missing_corpus_and_instruction_files_are_named(tmp_path):
    with pytest.raises(PoetError, match="corpus path .*missing.txt does not exist"):
        preflight.check_inputs(_config(corpus={"kind": "local", "path": str(tmp_path / "missing.txt")}))
    with pytest.raises(PoetError, match="instructions file .*nope.jsonl does not exist"):
        preflight.check_inputs(_config(instructions={"kind": "local", "path": str(tmp_path / "nope.jsonl")}))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(PoetError, match="holds no .txt or .md files"):
        preflight.check_inputs(_config(corpus={"kind": "local", "path": str(empty_dir)}))


def test_tables_need_their_columns(tmp_path):
    table = tmp_path / "pf.csv"
    table.write_text("Title,Body\nA,B\n")
    with pytest.raises(PoetError, match="no column 'Poem' .*columns: Title, Body"):
        preflight.check_inputs(_config(corpus={"kind": "local", "path": str(table)}))
    preflight.check_inputs(_config(corpus={"kind": "local", "path": str(table), "text_column": "Body"},
                                   instructions={"kind": "none"}))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "answer": "a"}) + "\n")
    with pytest.raises(PoetError, match="no column 'completion'"):
        preflight.check_inputs(_config(corpus={"kind": "local", "path": str(table), "text_column": "Body"},
                                       instructions={"kind": "local", "path": str(pairs)}))
    conv = tmp_path / "conv.jsonl"
    conv.write_text(json.dumps({"text": "User: a Assistant: b"}) + "\n")
    with pytest.raises(PoetError, match="no column 'conversation'"):
        preflight.check_inputs(_config(instructions={"kind": "conversations", "path": str(conv)}))


def test_good_inputs_pass_and_are_described(tiny_gpt2, tiny_corpus):
    config = _config(model=str(tiny_gpt2), corpus={"kind": "local", "path": str(tiny_corpus)})
    preflight.check_inputs(config)
    said = preflight.describe_inputs(config)
    assert said["corpus"] == str(tiny_corpus)
    assert said["instructions"] == "requests synthesised from the corpus"
    bundled = preflight.describe_inputs(_config(corpus={"kind": "bundled", "poets": ["shakespeare", "hopkins"]},
                                                instructions={"kind": "none"}))
    assert bundled["corpus"] == "bundled poets: William Shakespeare (the sonnets), Gerard Manley Hopkins"
    assert bundled["instructions"] == "none (stage 1 only)"


def test_a_model_folder_that_is_not_a_model_is_refused(tmp_path, tiny_corpus):
    with pytest.raises(PoetError, match="no config.json"):
        preflight.check_inputs(_config(model=str(tmp_path), corpus={"kind": "local", "path": str(tiny_corpus)}))
