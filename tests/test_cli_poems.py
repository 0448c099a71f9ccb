"""The poems CLI (generate/compare --save, poems list/export/delete) and the help every command prints."""

import argparse
import json

import pytest
from markdown_it import MarkdownIt

from poetwb.cli import build_parser, main
from poetwb.core.library import Library, Poem


def _poems(capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["poems", "list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_save_keeps_the_poem_with_its_provenance(tiny_gpt2, capsys):
    assert main(["generate", "-m", str(tiny_gpt2), "-p", "The sea is blue", "-n", "8", "--seed", "5", "-t", "0.9",
                 "--save"]) == 0
    captured = capsys.readouterr()
    assert "saved as poem 1 in the library" in captured.err
    assert main(["generate", "-m", str(tiny_gpt2), "--form", "haiku", "-k", "2", "-p", "A cat sat", "--json",
                 "--save"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["saved_id"] == 2
    rows = _poems(capsys)
    assert [r["id"] for r in rows] == [2, 1]
    haiku, free = rows
    assert free["text"] == captured.out.strip("\n") and free["text"].startswith("The sea is blue")
    assert free["model"] == str(tiny_gpt2) and free["adapter"] is None and free["run"] is None
    assert free["prompt"] == "The sea is blue" and free["mode"] == "raw" and free["form"] == "free"
    assert free["seed"] == 5 and free["sampling"]["temperature"] == 0.9 and free["sampling"]["max_new_tokens"] == 8
    assert haiku["form"].startswith("haiku: 3 lines") and haiku["text"] == out["text"].strip("\n")


def test_generate_without_save_keeps_nothing(tiny_gpt2, capsys):
    assert main(["generate", "-m", str(tiny_gpt2), "-p", "The sea", "-n", "4"]) == 0
    assert _poems(capsys) == []


@pytest.fixture
def two_adapters(tiny_models, tmp_path) -> list[str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for i in range(2):
        torch.manual_seed(i)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        folder = tmp_path / "runs" / f"r{i}" / "adapters" / "stage2"
        m.save_pretrained(folder)
        folders.append(str(folder))
    return folders


@pytest.mark.parametrize(("which", "expected"), [("base", [None]), ("tuned", ["r0", "r1"]),
                                                  ("both", [None, "r0", "r1"])])
def test_compare_save_keeps_base_tuned_or_both(which, expected, tiny_models, two_adapters, capsys):
    assert main(["compare", "-m", str(tiny_models["llama"]), "-a", two_adapters[0], "-a", two_adapters[1],
                 "-p", "The sea", "-t", "0", "-n", "6", "--json", "--save", which]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = _poems(capsys)[::-1]  # oldest first: in column order
    assert [r["run"] for r in rows] == expected
    assert all(r["stage"] == 2 for r in rows if r["run"])
    by_adapter = {c["adapter"]: c for c in out["columns"]}
    for r in rows:
        col = by_adapter[r["adapter"]]
        assert col["saved_id"] == r["id"] and col["text"] == r["text"]
        assert r["model"] == str(tiny_models["llama"]) and r["prompt"] == "The sea" and r["seed"] == 0
    assert sum("saved_id" in c for c in out["columns"]) == len(expected)


def _fill(n: int = 3) -> list[int]:
    lib = Library()
    try:
        return [lib.add(Poem(text=f"Poem {i} of the sea\n  indented line {i}", prompt=f"prompt {i}", model="m",
                             seed=i)).id for i in range(n)]
    finally:
        lib.close()


def test_poems_list_search_and_json(capsys):
    assert main(["poems", "list"]) == 0
    assert "no poems yet" in capsys.readouterr().out
    _fill()
    assert main(["poems", "list", "--search", "Poem 1"]) == 0
    table = capsys.readouterr().out
    assert "Poem 1 of the sea" in table and "Poem 2" not in table
    assert main(["poems"]) == 0 and "Poem 2 of the sea" in capsys.readouterr().out  # `poems` alone lists
    assert [r["seed"] for r in _poems(capsys)] == [2, 1, 0]


def test_poems_export_one_file_renders_cleanly(tmp_path, capsys):
    _fill()
    target = tmp_path / "out" / "poems.md"
    assert main(["poems", "export", "-o", str(target), "--one-file"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    html = MarkdownIt("commonmark").render(target.read_text())
    assert "<hr" not in html and html.count("<h2>") == 3
    assert html.index("Poem 0 of") < html.index("Poem 2 of")  # oldest first
    assert "Poem 1 of the sea<br />\n\xa0\xa0indented line 1</p>" in html
    # chosen ids in the order given, into a folder, one file each; --search narrows
    assert main(["poems", "export", "3", "1", "-o", str(tmp_path / "each")]) == 0
    assert [p.name for p in sorted((tmp_path / "each").iterdir())] == ["0001-poem-0-of-the-sea.md",
                                                                       "0003-poem-2-of-the-sea.md"]
    assert main(["poems", "export", "--search", "prompt 1", "--one-file", "-o", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "poems.md").read_text().count("\n## ") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["poems", "export", "9", "-o", "x"], "no poem with id 9 in the library"),
    (["poems", "export", "abc", "-o", "x"], "'abc' is not a poem id"),
    (["poems", "export", "--search", "nothing like it", "-o", "x"], "no poems to export match"),
    (["poems", "delete", "1", "42", "43"], "no poem with id 42, 43 in the library"),
    (["poems", "delete", "1", "-2"], "is not a poem id"),
    (["poems", "delete", "²"], "is not a poem id"),
])
def test_bad_poem_ids_are_one_line_errors_and_nothing_changes(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fill()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert len(_poems(capsys)) == 3 and not (tmp_path / "x").exists()


def test_poems_delete_removes_exactly_those(capsys):
    ids = _fill()
    assert main(["poems", "delete", str(ids[0]), str(ids[2])]) == 0
    assert "deleted 2 poems" in capsys.readouterr().out
    assert [r["id"] for r in _poems(capsys)] == [ids[1]]


# --- help ---------------------------------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser, name: str = "poetwb"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help_and_every_command_an_example():
    parsers = list(_parsers(build_parser()))
    assert {"poetwb generate", "poetwb poems export", "poetwb runs delete"} <= {n for n, _ in parsers}
    for name, parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(a.help for a in action._choices_actions), name
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, f"{name} {label}"
        assert parser.epilog and "poetwb" in parser.epilog and "example" in parser.epilog, f"{name}: no example"
        assert parser.description, f"{name}: no description"


def test_help_shows_defaults_but_not_empty_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "softmax temperature; 0 = greedy (default: 0.7)" in text
    assert "(default: 0.95)" in text and "(default: free)" in text and "(default: auto)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "examples: poetwb generate -p" in text


def test_native_windows_is_refused_with_one_line_before_anything_runs(monkeypatch, capsys):
    import poetwb.cli

    monkeypatch.setattr(poetwb.cli, "_posix", lambda: False)
    assert main(["poems", "list"]) == 1
    err = capsys.readouterr().err
    assert "native Windows is not supported yet" in err and "WSL2" in err and err.count("\n") == 1
