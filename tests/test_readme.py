"""The README as a newcomer reads it: its Python blocks run as written, its flags and paths exist.

Each Python block runs on its own, in a fresh namespace, in one fresh process
(``tests/doc_blocks.py``), after the install of command 1 and nothing else: no
stand-ins, every block imports and defines what it uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import doc_blocks

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PAGE = doc_blocks.page_blocks(ROOT / "README.md")
BLOCKS = PAGE["blocks"]


@pytest.fixture(scope="module")
def block_results():
    return doc_blocks.run_pages([PAGE])


def test_the_readme_is_a_front_page_with_two_examples():
    assert len(README.splitlines()) <= 250, "the README is a front page: move details to docs/"
    assert not PAGE["continues"]
    assert len(BLOCKS) >= 2
    assert any("optax.apply_updates" in block["code"] for block in BLOCKS)  # a plain Optax loop
    assert any("nnx.Optimizer" in block["code"] for block in BLOCKS)  # and Flax NNX


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"line{BLOCKS[i]['line']}")
def test_python_block_runs_as_written(block_results, index):
    doc_blocks.check_block(block_results, PAGE, BLOCKS[index])


def test_every_command_and_flag_the_readme_shows_exists():
    programs = doc_blocks.check_commands(README, "the README")
    assert {"ftp_jax.experiment", "ftp_jax.recipes"} <= programs


def test_every_path_the_readme_names_exists():
    assert doc_blocks.check_paths(README, "the README", ROOT) > 10


DOCS_BUILD = ".venv/bin/python -m sphinx -W -b html docs docs/_build/html"


def test_ci_runs_the_readmes_test_command_in_its_own_environment():
    command = re.search(r"# 2\. run the tests\n(\.venv/bin/python -m pytest .*)\n", README)
    assert command, "the README's command 2 moved"
    lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # Exactly the README's command, then only the documentation site's build.
    assert command[1] in lines, (command[1], lines)
    after = lines[lines.index(command[1]) + 1 :]
    assert after == [DOCS_BUILD], after
    text = "\n".join(lines)
    assert '.venv/bin/pip install -e ".[test,docs]"' in text
    # A fresh environment; an existing .venv (a developer's) is never touched: the run
    # moves to a copy of the tree first.
    assert "python3 -m venv .venv" in text
    assert text.index("if [ -e .venv ]") < text.index('cd "$work"') < text.index("python3 -m venv")
    # Only the package registries are reachable in CI: no other index.
    assert "--index-url" not in text and "--extra-index-url" not in text
