"""d4c.io: replacing a marked block of a text file (the README tables)."""

from __future__ import annotations

import pytest

from d4c.io import replace_between, replace_marked_block

START, END = "<!-- t:start -->", "<!-- t:end -->"


def test_block_is_replaced_and_the_rest_kept():
    text = f"# Title\nintro\n{START}\nold table\n{END}\nafter\n"
    once = replace_between(text, START, END, "| new |")
    assert once == f"# Title\nintro\n{START}\n| new |\n{END}\nafter\n"
    assert replace_between(once, START, END, "| new |") == once
    with pytest.raises(ValueError):
        replace_between("no markers", START, END, "x")
    with pytest.raises(ValueError):
        replace_between(f"{END}\n{START}\n", START, END, "x")


def test_file_block_is_replaced_atomically_and_left_alone_without_markers(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"a\n{START}\nold\n{END}\nb\n")
    replace_marked_block(path, START, END, "new")
    assert path.read_text() == f"a\n{START}\nnew\n{END}\nb\n"
    path.write_text("plain\n")
    with pytest.raises(ValueError, match="t:start"):
        replace_marked_block(path, START, END, "x")
    assert path.read_text() == "plain\n" and [p.name for p in tmp_path.iterdir()] == ["README.md"]
