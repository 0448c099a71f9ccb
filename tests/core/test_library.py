import pytest
from markdown_it import MarkdownIt

from poetwb.core.errors import PoetError
from poetwb.core.library import Library, Poem, export_markdown, to_markdown

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
    html = MarkdownIt("commonmark").render(md.split("---", 2)[2])
    for bad in ("<h1>", "<ul>", "<ol>", "<em>", "<strong>", "<a ", "<pre>", "<b>"):
        assert bad not in html.split("</h2>", 1)[1], bad
    body = html.split("</h2>", 1)[1]
    assert body.count("<br />") == 4  # five lines in the first stanza
    assert "# not a heading" in body and "* not a bullet" in body and "_not italic_" in body
    assert "&lt;b&gt;not html&lt;/b&gt;" in body and "with a backslash" in body and "\\ with" in body
    assert body.count("<p>") == 2


def test_export_one_file_or_one_per_poem(tmp_path):
    poems = [Poem(text="A\nB", prompt="p", model="m", id=1, created="x"),
             Poem(text="C", prompt="q", model="m", id=2, created="y")]
    (one,) = export_markdown(poems, tmp_path / "out")
    assert one.name == "poems.md" and one.read_text().count("## ") == 2
    many = export_markdown(poems, tmp_path / "many", one_file=False)
    assert [p.name for p in many] == ["0001-a.md", "0002-c.md"]


def test_export_to_an_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PoetError, match="cannot write to"):
        export_markdown([Poem(text="A", prompt="p", model="m", id=1)], blocker / "sub")
