"""The documentation site as a reader meets it: its examples run, its numbers are the results'.

- Every Python block of every page (``docs/*.md``) runs as written, in a fresh
  process (``tests/doc_blocks.py``: a page's blocks continue one another only
  when the page says so).
- Every docstring example (``>>>``) of the package runs and prints what it says.
- Every command, flag, path and link a page names exists.
- Every ``{{ value }}`` a page names is one that ``docs/_ext/ftp_results.py`` reads
  from the committed results files, and the README's headline table is the
  committed results' (the README cannot use the site's substitutions).
- No user-facing text carries commit hashes, test counts or working words.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import ftp_jax
from tests import doc_blocks

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE_FILES = sorted(DOCS.glob("*.md"))
PAGES = [doc_blocks.page_blocks(path) for path in PAGE_FILES]
BLOCKS = doc_blocks.block_ids(PAGES)

sys.path.insert(0, str(DOCS / "_ext"))
import ftp_results  # noqa: E402

sys.path.remove(str(DOCS / "_ext"))


@pytest.fixture(scope="module")
def block_results():
    return doc_blocks.run_pages(PAGES)


def test_the_site_has_its_pages_and_examples():
    names = {path.stem for path in PAGE_FILES}
    assert {
        "index",
        "getting_started",
        "methods",
        "experiment",
        "recipes",
        "mixed_precision",
        "benchmarks",
        "reliability",
        "adding_a_method",
        "development",
    } <= names
    assert len(BLOCKS) >= 8
    # The getting-started example fine-tunes with FTP in both loops and prints the radii.
    (started,) = [page for page in PAGES if page["path"].endswith("getting_started.md")]
    code = "\n".join(block["code"] for block in started["blocks"])
    assert started["continues"]
    assert "nnx.Optimizer(" in code and "optax.apply_updates" in code and "radii(" in code


def _block_id(index: int) -> str:
    page, block = BLOCKS[index]
    return f"{Path(page['path']).stem}-line{block['line']}"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=_block_id)
def test_python_block_runs_as_written(block_results, index):
    doc_blocks.check_block(block_results, *BLOCKS[index])


API_PAGES = {
    "ftp_jax": "ftp_jax",
    "ftp_jax.train": "train",
    "ftp_jax.convert": "convert",
    "ftp_jax.models": "models",
    "ftp_jax.data": "data",
}


@pytest.mark.parametrize("module_name", sorted(API_PAGES))
def test_the_api_reference_has_every_public_name(module_name):
    """autodoc documents what has a docstring; the page itself names everything else."""
    module = importlib.import_module(module_name)
    page = (DOCS / "api" / f"{API_PAGES[module_name]}.md").read_text()
    assert f".. automodule:: {module_name}\n   :members:" in page
    for name in module.__all__:
        obj = getattr(module, name)
        documented = (inspect.isclass(obj) or inspect.isfunction(obj)) and inspect.getdoc(obj)
        # A `#:` comment above its assignment in the package's own file is a docstring too.
        documented = documented or re.search(
            rf"^#:.*\n(?:#:.*\n)*{name}\b", inspect.getsource(module), re.M
        )
        named = re.search(rf"^\.\. (?:py:data|autodata):: (?:{module_name}\.)?{name}$", page, re.M)
        assert documented or named, (
            f"{module_name}.{name} has no docstring and docs/api/{API_PAGES[module_name]}.md "
            "does not name it: give it a docstring, or add it under 'Constants' there"
        )


def _modules() -> list[str]:
    names = ["ftp_jax"]
    for module in pkgutil.walk_packages(ftp_jax.__path__, "ftp_jax."):
        if not module.name.startswith("ftp_jax.configs") and not module.name.endswith("__main__"):
            names.append(module.name)
    return names


def test_every_docstring_example_runs(tmp_path):
    """Each module's ``>>>`` examples, with ``data_dir`` an empty directory to prepare into."""
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    ran, failures = [], []
    for name in _modules():
        module = importlib.import_module(name)
        for test in finder.find(module, name, globs={"data_dir": str(tmp_path / "tfds")}):
            if not test.examples:
                continue
            out: list[str] = []
            result = runner.run(test, out=out.append)
            ran.append(test.name)
            if result.failed:
                failures.append("".join(out))
    assert not failures, "\n".join(failures)
    # Every transform's factory has one; the data loader's too.
    for name in ("ftp", "tpgm", "l2sp", "mars_pgm", "spd", "lp_ft", "wise_ft", "open_split"):
        assert any(test.endswith(f".{name}") for test in ran), (name, ran)


@pytest.mark.parametrize("path", PAGE_FILES, ids=lambda path: path.stem)
def test_every_command_flag_path_and_link_a_page_names_exists(path):
    text = path.read_text()
    doc_blocks.check_commands(text, str(path.relative_to(ROOT)))
    doc_blocks.check_paths(text, str(path.relative_to(ROOT)), path.parent)


_SUBSTITUTION = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _prose(text: str) -> str:
    """``text`` without its code (fenced blocks and inline literals)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def test_every_value_a_page_names_comes_from_the_results_files():
    values = ftp_results.substitutions()
    used = set()
    for path in PAGE_FILES:
        names = set(_SUBSTITUTION.findall(_prose(path.read_text())))
        unknown = names - set(values)
        assert not unknown, f"{path.name} names {sorted(unknown)}, which ftp_results does not give"
        used |= names
    assert {"p100_ftp_dood", "pre_id", "bench_update_table", "ref_f64_params"} <= used
    assert all(values[name].strip() for name in used)


def test_the_results_pages_type_no_accuracy():
    """The results pages quote accuracies through values, never as typed numbers."""
    for name in ("experiment.md", "mixed_precision.md"):
        prose = _SUBSTITUTION.sub("", _prose((DOCS / name).read_text()))
        typed = re.findall(r"\b\d{2}\.\d\b", prose)
        assert not typed, f"docs/{name} types the numbers {typed}: name them as {{{{ values }}}}"


def test_the_readme_headline_is_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    marker = re.search(r"<!-- headline: .*? -->\n((?:\|.*\n)+)", readme)
    assert marker, "the README's headline table (after its '<!-- headline: ... -->' line) moved"
    expected = ftp_results.headline_table()
    assert marker[1].strip() == expected, (
        "README.md's headline table differs from experiments/results/renditions/results.json. "
        "Replace the table under the '<!-- headline: ... -->' line of README.md with:\n\n"
        f"{expected}\n\n(and check the sentence after it still says what the table shows)."
    )


def test_no_session_words_hashes_or_test_counts_in_user_facing_text():
    texts = {"README.md": (ROOT / "README.md").read_text(), "CHANGELOG.md": ""}
    texts["CHANGELOG.md"] = (ROOT / "CHANGELOG.md").read_text()
    texts |= {f"docs/{path.name}": path.read_text() for path in PAGE_FILES}
    for name, text in texts.items():
        for line in text.splitlines():
            found = re.findall(
                r"this session|design card|from the issue|\b\d+ (?:tests|passed)\b"
                r"|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b",
                line,
                re.I,
            )
            assert not found, f"{name}: {found} in {line!r}"
