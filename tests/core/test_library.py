import re

import pytest
from markdown_it import MarkdownIt

from poetwb.core.errors import PoetError
from poetwb.core.library import Library, Poem, export_markdown, export_markdown_file, to_markdown

TRICKY = """# not a heading
* not a bullet
1. not a list
    four spaces, not code
_not italic_ and *not bold* [not](a link) <b>not html</b>

Second stanza \\ with a backslash"""


def test_poems_survive_a_restart_and_can_be_searched_and_deleted(poet_home):
    lib = Library()
    a = lib.add(Poem(text="The sea is blue", prompt="The sea", model="m", sampling={"temperature": 0.7}, seed=3))
    lib.add(Poem(text="Stone and salt", prompt="Write a poem", model="m", mode="instruct"))
    lib.close()
    again = Library()
    assert [p.text for p in again.search()] == ["Stone and salt", "The sea is blue"]
    assert [p.id for p in again.search("sea")] == [a.id]
    assert again.search("sea")[0].sampling == {"temperature": 0.7}
    assert again.delete([a.id]) == 1
    assert [p.text for p in again.search()] == ["Stone and salt"]


def test_markdown_keeps_line_breaks_and_special_characters_as_written():
    md = to_markdown(Poem(text=TRICKY, prompt="p", model="m", seed=1, created="2026-01-01T00:00:00"))
    html = MarkdownIt("commonmark").render(md)
    body = html.split("</h1>", 1)[1].split("<ul>", 1)[0]
    for bad in ("<h1>", "<h2>", "<ul>", "<ol>", "<em>", "<strong>", "<a ", "<pre>", "<b>", "<hr"):
        assert bad not in body, bad
    assert body.count("<br />") == 4  # five lines in the first stanza
    assert "# not a heading" in body and "* not a bullet" in body and "_not italic_" in body
    assert "&lt;b&gt;not html&lt;/b&gt;" in body and "with a backslash" in body and "\\ with" in body
    assert body.count("<p>") == 2
    assert "\xa0" * 4 + "four spaces, not code" in body  # leading spaces kept as non-breaking ones


def test_a_poem_line_cannot_become_a_setext_heading_an_entity_or_math():
    md = to_markdown(Poem(text="Rain on the roof\n===\nfish &amp; chips\n$x$ and $y$\n\tTabbed in", prompt="p",
                          model="m"))
    html = MarkdownIt("commonmark").render(md)
    assert "<h1>Rain on the roof</h1>" in html and html.count("<h1>") == 1  # the heading is the title only
    assert "===<br />" in html and "fish &amp;amp; chips" in html and "$x$ and $y$" in html
    assert "\xa0" * 4 + "Tabbed in" in html and "<pre>" not in html


def test_export_one_file_or_one_per_poem(tmp_path):
    poems = [Poem(text="A\nB", prompt="p", model="m", id=1, created="x"),
             Poem(text="C", prompt="q", model="m", id=2, created="y")]
    (one,) = export_markdown(poems, tmp_path / "out")
    assert one.name == "poems.md" and one.read_text().count("\n## ") == 2
    (again,) = export_markdown(poems[:1], tmp_path / "out")  # a second export keeps the first
    assert again.name == "poems-2.md" and again.read_text().count("\n## ") == 1
    assert one.read_text().count("\n## ") == 2
    many = export_markdown(poems, tmp_path / "many", one_file=False)
    assert [p.name for p in many] == ["0001-a.md", "0002-c.md"]


def test_export_to_an_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PoetError, match="cannot write to"):
        export_markdown([Poem(text="A", prompt="p", model="m", id=1)], blocker / "sub")
    with pytest.raises(PoetError, match="is a file, not a folder"):
        export_markdown([Poem(text="A", prompt="p", model="m", id=1)], blocker)
    assert blocker.read_text() == "x"


POEMS = [
    Poem(text="The sea is blue, the sky is red,\n  the gulls are crying overhead.\n\nAnd *stars* at night", id=1,
         prompt="The sea is blue", model="bundled/SmolLM2-135M-Instruct", created="2026-11-30T07:00:00",
         adapter="/home/x/runs/r1/adapters/stage2", sampling={"temperature": 0.7, "top_p": 0.95, "seed": 4}, seed=4,
         form="quatrains: 4 lines, ABAB, 8 syllables"),
    Poem(text="Shall I compare thee\n    to a summer's day?", prompt="Write a poem", model="m", mode="instruct", id=2,
         created="2026-11-30T07:01:00"),
    Poem(text="model: not metadata\n---\ntitle: nor this", prompt="p", model="m", id=3, created="x"),
]


def test_a_one_file_export_renders_cleanly_in_commonmark_and_github_flavour(tmp_path):
    """The bug this guards: each poem's `---` metadata block rendered as a rule followed by a setext heading made
    of the metadata lines. Rendered with markdown-it in strict CommonMark and with GitHub's table/strikethrough."""
    (path,) = export_markdown(POEMS, tmp_path)
    md = path.read_text()
    for html in (MarkdownIt("commonmark").render(md),
                 MarkdownIt("commonmark").enable("table").enable("strikethrough").render(md)):
        assert "<hr" not in html and "<table" not in html and "<del>" not in html
        assert html.count("<h1>") == 1
        assert re.findall(r"<h2>(.*?)</h2>", html) == ["The sea is blue, the sky is red,", "Shall I compare thee",
                                                         "model: not metadata"]
        poem1 = html.split("<h2>")[1]
        assert "The sea is blue, the sky is red,<br />\n\xa0\xa0the gulls are crying overhead.</p>" in poem1
        assert "<p>And *stars* at night</p>" in poem1  # a stanza is a paragraph; the asterisks stay
        assert "<li><strong>adapter:</strong> run r1, stage 2</li>" in poem1
        assert "<li><strong>form:</strong> quatrains: 4 lines, ABAB, 8 syllables</li>" in poem1
        assert "<li><strong>sampling:</strong> temperature 0.7 · top-p 0.95</li>" in poem1
        assert "<li><strong>seed:</strong> 4</li>" in poem1
        poem2 = html.split("<h2>")[2]
        assert "Shall I compare thee<br />\n\xa0\xa0\xa0\xa0to a summer's day?</p>" in poem2
        assert "<li><strong>adapter:</strong> none (base model)</li>" in poem2
        poem3 = html.split("<h2>")[3]
        assert "model: not metadata<br />\n---<br />\ntitle: nor this</p>" in poem3


def test_export_to_a_named_file_and_refuses_a_folder_for_one(tmp_path):
    target = export_markdown_file(POEMS[:1], tmp_path / "sub" / "mine.md")
    assert target.read_text().startswith("# Poems\n\n1 poem from the poetwb library")
    with pytest.raises(PoetError, match="is a folder"):
        export_markdown_file(POEMS[:1], tmp_path)


def test_strict_delete_of_an_unknown_id_deletes_nothing(poet_home):
    lib = Library()
    a = lib.add(Poem(text="One", prompt="p", model="m"))
    b = lib.add(Poem(text="Two", prompt="p", model="m"))
    with pytest.raises(PoetError, match=f"no poem with id {b.id + 40}"):
        lib.delete([a.id, b.id + 40], strict=True)
    assert [p.id for p in lib.search()] == [b.id, a.id]
    assert [p.text for p in lib.get_exactly([a.id, b.id])] == ["One", "Two"]
    assert lib.delete([a.id], strict=True) == 1
    assert [p.to_dict()["run"] for p in lib.search()] == [None]
