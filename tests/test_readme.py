"""The README's examples are the code's: its Python example runs and says what it prints, its space
file is the shipped one and loads, every command it lists is a sub-command of ``idensenet``, and every
page it links to exists."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.M | re.S)


def test_the_python_example_runs_and_prints_what_it_says():
    (code,) = _blocks("python")
    promised = re.search(r"print\(.*\)\s+# (\d+) (\d+)", code)
    assert promised, "the example's print line states what it prints"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().split() == [promised.group(1), promised.group(2)]


def test_the_space_file_is_the_shipped_one_and_loads():
    from search_spaces import load_space

    (text,) = _blocks("yaml")
    shipped = REPO / "search_spaces" / "demo-moons.yaml"
    assert yaml.safe_load(text) == yaml.safe_load(shipped.read_text())
    assert load_space(str(shipped)).name == "demo-moons"


def test_every_listed_command_is_a_sub_command():
    from sweeper.cli import build_parser

    listed = set(re.findall(r"^idensenet (\w+)", README, flags=re.M))
    known = set(re.findall(r"^ {4}(\w+)\b", build_parser().format_help(), flags=re.M))
    assert listed and listed <= known, listed - known


def test_every_linked_page_exists():
    links = re.findall(r"\]\(((?!https?://)[^)#]+)\)", README)
    assert links and [link for link in links if not (REPO / link).is_file()] == []
