"""Clean text in (every corpus and instruction source) and clean text out (what the workbench shows, saves and
exports), with rows shaped like the Poetry Foundation CSV: poems with \\r\\r\\n line ends, padded with blank lines
and spaces."""

from __future__ import annotations

import csv
import json
import unicodedata

import pytest

from poetwb.core import data
from poetwb.core.config import CorpusSpec, InstructionSpec
from poetwb.core.library import Library, Poem, export_markdown, to_markdown
from poetwb.core.text import SafeStream, clean_poem, safe_text

# shaped like suayptalha/Poetry-Foundation-Poems: the poem opens and closes with \r\r\n runs, lines carry trailing
# spaces, indentation inside the poem is meaningful, and the title is padded with newlines and spaces too
PF_POEM = ("\r\r\n\r\r\nDog bone, stapler,   \r\r\ncribbage board, garlic press\r\r\n"
           "     because this window is loose—lacks\r\r\n\r\r\nsash cord. \r\r\n\r\r\n   \r\r\n")
PF_TITLE = "\r\r\n                    Objects Used to Prop Open a Window\r\r\n                "
WANT = ("Dog bone, stapler,\ncribbage board, garlic press\n     because this window is loose—lacks\n\n"
        "sash cord.")


def _pf_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["", "Title", "Poem", "Poet", "Tags"])
        for i, (title, poem, poet) in enumerate(rows):
            writer.writerow([i, title, poem, poet, "Living,Home Life"])
    return path


@pytest.mark.parametrize("ending", ["\r\r\n", "\r\n", "\r", "\n"])
def test_every_line_ending_becomes_newline_and_padding_goes(ending):
    text = PF_POEM.replace("\r\r\n", ending)
    assert clean_poem(text) == WANT


def test_unicode_is_nfc_and_indentation_is_kept():
    decomposed = unicodedata.normalize("NFD", "  Über café\n\tindented")
    assert clean_poem(decomposed) == "  Über café\n\tindented"
    assert unicodedata.is_normalized("NFC", clean_poem(decomposed))


def test_a_poetry_foundation_csv_trains_on_clean_text(tmp_path):
    path = _pf_csv(tmp_path / "PoetryFoundationData.csv",
                   [(PF_TITLE, PF_POEM, "Hailey Leithauser"), ("\r\r\n  Empty \r\r\n", "\r\r\n  \r\r\n", "X")])
    poems = data.load_poems(CorpusSpec(kind="local", path=str(path)))
    assert len(poems) == 1  # a poem of blank lines and spaces is no poem
    row = poems[0]
    assert row["text"] == WANT and row["title"] == "Objects Used to Prop Open a Window"
    assert row["poet"] == "Hailey Leithauser"
    assert "\r" not in data.poem_document(row)


def test_text_files_folders_and_jsonl_are_cleaned_the_same_way(tmp_path):
    txt = tmp_path / "poems.txt"
    txt.write_bytes(("first poem line   \r\n  second, indented  \r\n\r\n\r\n" + PF_POEM).encode())
    poems = data.load_poems(CorpusSpec(kind="local", path=str(txt)))
    assert list(poems["text"]) == ["first poem line\n  second, indented", WANT]
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "a.txt").write_bytes(PF_POEM.encode())
    assert list(data.load_poems(CorpusSpec(kind="local", path=str(folder)))["text"]) == [WANT]
    table = tmp_path / "t.jsonl"
    table.write_text(json.dumps({"Poem": PF_POEM, "Title": PF_TITLE}) + "\n")
    assert data.load_poems(CorpusSpec(kind="local", path=str(table)))[0]["text"] == WANT


def test_instruction_sources_are_cleaned(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "\r\r\n A poem about a window \r\r\n", "completion": PF_POEM}) + "\n")
    got = data.local_pairs(InstructionSpec(kind="local", path=str(pairs)))
    assert got == [{"prompt": "A poem about a window", "completion": WANT, "poem_id": ""}]
    conv = tmp_path / "conv.jsonl"
    conv.write_text(json.dumps({"conversation": "User: a window poem\r\r\nAssistant: " + PF_POEM}) + "\n")
    got = data.conversation_pairs(InstructionSpec(kind="conversations", path=str(conv)), data.DataReport("c"))
    assert got[0]["prompt"] == "a window poem" and got[0]["completion"] == WANT


CURSOR_MOVERS = ["\x1b[2J", "\x1b[H", "\x1b[1A", "\x1b]0;title\x07", "\r", "\x08", "\x0b", "\x0c", "\x9b2J",
                 "\x1bc", "\x7f", "\x00"]


@pytest.mark.parametrize("mover", CURSOR_MOVERS)
def test_generated_text_never_carries_a_cursor_mover(mover):
    text = f"The sea{mover} is\tblue\r\r\nand wide"
    out = safe_text(text)
    assert "\x1b" not in out and "\r" not in out and all(c in "\n\t" or c.isprintable() for c in out), repr(out)
    assert out.startswith("The sea") and out.endswith("is\tblue\nand wide")


def test_a_stream_keeps_a_split_line_end_whole():
    stream = SafeStream()
    out = stream.feed("one\r") + stream.feed("\r") + stream.feed("\ntwo\x1b[2J\r") + stream.end()
    assert out == "one\ntwo\n"


def test_saved_and_exported_poems_are_safe(tmp_path):
    lib = Library(tmp_path / "lib.sqlite")
    try:
        saved = lib.add(Poem(text="The sea\x1b[2J is\r\r\nblue", prompt="sea\x1b[H", model="m"))
        assert saved.text == "The sea is\nblue" and saved.prompt == "sea"
        old = Poem(text="old \x1b[1Arow", prompt="p", model="m")  # written by an older version
        assert "\x1b" not in to_markdown(old)
        written = export_markdown([saved, old], tmp_path / "out")
        assert all("\x1b" not in p.read_text() and "\r" not in p.read_text() for p in written)
    finally:
        lib.close()
