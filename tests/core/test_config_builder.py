"""The one config builder (preset + file + overrides -> TrainConfig): its merge rule, strict types, unknown keys,
preset names. The CLI and the Train pane both call it, so these rules hold in both."""

from __future__ import annotations

import pytest

from poetwb.cli import main
from poetwb.core import paths
from poetwb.core.config import MERGE_RULE, TrainConfig, build_train_config, merge_layers
from poetwb.core.errors import PoetError


def _file(tmp_path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_layers_merge_key_by_key_in_order(tmp_path):
    cfg = build_train_config("cpu-quick", _file(tmp_path, "[stage1]\nlearning_rate = 0.002\n"),
                             {"stage1": {"batch_size": 2}, "seed": 7})
    assert cfg.preset == "cpu-quick"
    assert cfg.stage1.learning_rate == 0.002  # the file beats the preset
    assert cfg.stage1.batch_size == 2  # the overrides beat both
    assert cfg.stage1.max_steps == 12 and cfg.stage1.seq_len == 128  # the preset's other keys stay
    assert cfg.seed == 7
    assert cfg.lora.target_modules == ["all-linear"]


def test_a_source_of_another_kind_replaces_the_table_and_the_same_kind_merges():
    local = build_train_config("cpu-quick", None, {"corpus": {"kind": "local", "path": "/x/poems.csv"}})
    assert local.corpus.kind == "local" and local.corpus.poets == ["shakespeare"]  # the default, not merged
    assert local.corpus.path == "/x/poems.csv"
    base = {"corpus": {"kind": "local", "path": "/a.csv", "text_column": "Body", "poet_filter": "Keats"}}
    same = merge_layers(base, {"corpus": {"kind": "local", "path": "/b.csv"}})
    assert same["corpus"] == {"kind": "local", "path": "/b.csv", "text_column": "Body", "poet_filter": "Keats"}
    other = merge_layers(base, {"corpus": {"kind": "hf", "dataset": "x/y"}})
    assert other["corpus"] == {"kind": "hf", "dataset": "x/y"}
    instr = merge_layers({"instructions": {"kind": "local", "path": "/p.jsonl"}},
                         {"instructions": {"kind": "conversations", "dataset": "a/b"}})
    assert instr["instructions"] == {"kind": "conversations", "dataset": "a/b"}
    kindless = merge_layers(base, {"corpus": {"text_column": "Poem"}})  # no kind: the same source, merged
    assert kindless["corpus"]["path"] == "/a.csv" and kindless["corpus"]["text_column"] == "Poem"
    assert "kind" in MERGE_RULE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[stage1]\nlearning_rate = "1e-4"', "stage 1 learning rate (stage1.learning_rate) must be a number (float), "
                                             "got '1e-4' (str)"),
        ('seed = "x"', "seed must be a whole number (int), got 'x' (str)"),
        ("[lora]\nr = 1.5", "LoRA r (lora.r) must be a whole number (int), got 1.5 (float)"),
        ('[corpus]\npoets = "keats"', "corpus poets (corpus.poets) must be a list of names (list[str]), "
                                      "got 'keats' (str)"),
        ('[lora]\ntarget_modules = "all-linear"', "(lora.target_modules) must be a list of names"),
        ('model = ["a"]', "model must be text (str), got ['a'] (list)"),
        ("[stage2]\nkeep_best = 1", "stage 2 keep best (stage2.keep_best) must be true or false (bool), got 1 (int)"),
        ("precision = 16", "precision must be text (str), got 16 (int)"),
        ("learning_rate = 0.1", "unknown setting(s) in config: learning_rate"),
        ("[stage1]\nlr = 0.1", "unknown setting(s) in [stage1]: lr"),
        ("[optimizer]\nname = 'adam'", "unknown setting(s) in config: optimizer"),
        ("stage1 = 3", "[stage1] must be a table"),
        ("seed = [", "is not valid TOML"),
    ],
)
def test_each_wrong_type_or_unknown_key_is_one_line_naming_key_type_and_value(tmp_path, text, message):
    with pytest.raises(PoetError) as info:
        build_train_config("cpu-quick", _file(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip() or "TOML" in message


def test_whole_numbers_stay_fine_where_a_float_is_wanted():
    assert build_train_config(None, None, {"stage1": {"epochs": 3}}).stage1.epochs == 3
    assert TrainConfig.from_dict({"stage1": {"learning_rate": 1e-3}}).stage1.learning_rate == 1e-3


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "cpu-quick/../poet", "..", "a b", ""])
def test_a_preset_is_a_name_not_a_path(name):
    with pytest.raises(PoetError, match="not a path|unknown preset"):
        build_train_config(name or "/")


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(PoetError, match="unknown preset 'nope'; choose one of: .*cpu-quick"):
        build_train_config("nope")


def test_cli_refuses_a_preset_path_and_a_missing_file(tmp_path, capsys):
    assert main(["train", "--preset", "../../x"]) == 1
    err = capsys.readouterr().err
    assert "not a path" in err and err.count("\n") == 1
    assert main(["train", str(tmp_path / "nope.toml")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = _file(tmp_path, '[stage1]\nlearning_rate = "1e-4"\n')
    assert main(["train", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "stage1.learning_rate" in err and "'1e-4'" in err and err.count("\n") == 1
    assert not paths.runs_dir().exists() or not any(paths.runs_dir().iterdir())


def test_cli_flags_and_file_follow_the_same_rule(tmp_path):
    from poetwb.cli import _train_config, build_parser

    text = '[corpus]\nkind = "local"\npath = "/a.csv"\ntext_column = "Body"\n'
    args = build_parser().parse_args(["train", str(_file(tmp_path, text)), "--corpus", str(tmp_path / "b.csv"),
                                      "--preset", "cpu-quick", "--max-steps", "3"])
    cfg = _train_config(args)
    assert cfg.corpus.path == str(tmp_path / "b.csv") and cfg.corpus.text_column == "Body"  # same kind: merged
    assert cfg.stage1.max_steps == 3 and cfg.stage2.max_steps == 3 and cfg.stage1.seq_len == 128
    args = build_parser().parse_args(["train", str(_file(tmp_path, text)), "--poets", "keats"])
    cfg = _train_config(args)
    assert cfg.corpus.kind == "bundled" and cfg.corpus.poets == ["keats"] and cfg.corpus.path == ""


@pytest.mark.parametrize("flags", [["--preset", "poet"], ["--max-steps", "3"], ["-m", "bundled"], ["--seed", "1"],
                                   ["--run-id", "x"], ["--corpus", "bundled"]])
def test_train_resume_refuses_other_flags(flags, capsys):
    assert main(["train", "--resume", "somerun", *flags]) == 1
    err = capsys.readouterr().err
    assert "--resume continues somerun with its own config.toml; drop" in err and err.count("\n") == 1
