"""Runs the Python blocks of Markdown pages as a reader would: in a fresh process, as written.

A page's blocks run in order. Each block runs in a fresh namespace, unless the
page says its blocks continue one another (the MyST comment line
``% The Python blocks of this page continue one another.``): then the page's
blocks share one namespace, as one script. A block preceded by
``<!-- doc-test: expected to fail: REASON -->`` must fail (strict: once it runs,
the marker must go).

The process is a user's: JAX on the CPU with its default flags (no simulated
devices, no test codegen flags), in an empty working directory where
:data:`WEIGHTS_STAND_IN` has written ``RN50.pt`` when a page loads it (the
weights are the reader's own: a CLIP ResNet-50 state dict of zeros stands in).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import io
import json
import os
import re
import runpy
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTINUES = "% The Python blocks of this page continue one another."
_BLOCK = re.compile(
    r"(?:<!-- doc-test: expected to fail: (?P<reason>.*?) -->\n)?```python\n(?P<code>.*?)```",
    re.S,
)

# The reader's weights file, for a page that loads ``RN50.pt``: CLIP ResNet-50's backbone
# tensors (zeros, float16 as OpenAI's file), as safetensors (the converter sniffs the format).
WEIGHTS_STAND_IN = textwrap.dedent(
    """
    import numpy as np
    from flax import nnx
    from ftp_jax import convert, models
    from ftp_jax.convert._names import leaf_entries, torch_shape

    abstract = nnx.eval_shape(lambda: models.clip_resnet50(num_classes=345, rngs=nnx.Rngs(0)))
    tensors = {
        "visual." + e.key: np.zeros(torch_shape(e.variable.shape, e.layout), np.float16)
        for e in leaf_entries(abstract)
        if not e.path.startswith("head/")
    }
    convert.write_safetensors("RN50.pt", tensors)
    """
)

RUNNER = textwrap.dedent(
    """
    import json, sys, traceback
    pages, weights = json.load(open(sys.argv[1]))
    if any("RN50.pt" in block["code"] for page in pages for block in page["blocks"]):
        exec(compile(weights, "<weights stand-in>", "exec"), {})
    results = {}
    for page in pages:
        shared = {"__name__": "__main__"}
        for block in page["blocks"]:
            namespace = shared if page["continues"] else {"__name__": "__main__"}
            where = f"{page['path']}, line {block['line']}"
            try:
                exec(compile(block["code"], where, "exec"), namespace)
                results[where] = None
            except BaseException:
                results[where] = traceback.format_exc(limit=-3)
    json.dump(results, open(sys.argv[2], "w"))
    """
)


def page_blocks(path: Path) -> dict:
    """``{"path", "continues", "blocks": [{"line", "code", "expected_failure"}]}`` of a page."""
    text = path.read_text()
    return {
        "path": str(path.relative_to(ROOT)),
        "continues": CONTINUES in text,
        "blocks": [
            {
                "line": text.count("\n", 0, match.start("code")) + 1,
                "code": match["code"],
                "expected_failure": match["reason"],
            }
            for match in _BLOCK.finditer(text)
        ],
    }


def run_pages(pages: list[dict]) -> dict[str, str | None]:
    """``{"page, line N": None or the traceback}`` of every block, run in one fresh process."""
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
        env.pop("XLA_FLAGS", None)  # a user's process
        source, results = Path(directory, "pages.json"), Path(directory, "results.json")
        source.write_text(json.dumps([pages, WEIGHTS_STAND_IN]))
        subprocess.run(
            [sys.executable, "-c", RUNNER, str(source), str(results)],
            cwd=directory,
            env=env,
            check=True,
            timeout=600,
        )
        return json.loads(results.read_text())


def block_ids(pages: list[dict]) -> list[tuple[dict, dict]]:
    return [(page, block) for page in pages for block in page["blocks"]]


def check_block(results: dict[str, str | None], page: dict, block: dict) -> None:
    where = f"{page['path']}, line {block['line']}"
    error = results[where]
    if block["expected_failure"]:
        assert error is not None, (
            f"the block at {where} runs now: remove its 'doc-test: expected to fail' marker"
        )
        pytest.xfail(f"{where}: {block['expected_failure']}")
    assert error is None, f"the block at {where} fails:\n{error}"


# Commands: our programs, whose flags must exist; others (pip, tfds, pytest) are not checked.
PROGRAMS = {
    "ftp_jax.experiment": "ftp_jax.experiment.__main__",
    "ftp_jax.recipes": "ftp_jax.recipes.__main__",
    "ftp_jax.data.prepare": "ftp_jax.data.prepare",
    "ftp_jax.experiment.compare": "ftp_jax.experiment.compare",
    "ftp_jax.experiment.regime_study": "ftp_jax.experiment.regime_study",
}
_COMMAND = re.compile(
    r"python3? (?:-m (?P<module>[\w.]+)|(?P<script>(?:experiments|benchmarks)/\w+\.py))"
    r"(?P<args>(?:[ \t]+(?:\\\n\s*)?[^\s`|&;#]+)*)"
)


@functools.cache
def help_text(program: str) -> str:
    """``program --help``, run in this process."""
    out = io.StringIO()
    argv = sys.argv
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            if program.endswith(".py"):
                sys.argv = [program, "--help"]
                runpy.run_path(str(ROOT / program), run_name="__main__")
            else:
                importlib.import_module(PROGRAMS[program]).main(["--help"])
    finally:
        sys.argv = argv
    return out.getvalue()


def commands_in(text: str, name: str) -> list[tuple[str, list[str]]]:
    """``(program, flags)`` of every command ``text`` shows for this project's programs."""
    commands = []
    for match in _COMMAND.finditer(text):
        program = match["module"] or match["script"]
        if program.startswith("ftp_jax") and program not in PROGRAMS:
            raise AssertionError(f"{name} runs an unknown module {program}")
        if program.startswith("ftp_jax") or program.endswith(".py"):
            commands.append((program, re.findall(r"(?<![\w-])--[a-z][\w-]*", match["args"])))
    return commands


@functools.cache
def _other_flags() -> str:
    """The help of the other tools a page may name a flag of: `tfds build`'s file format,
    `tensorboard`'s log directory, pytest with pytest-xdist (README command 2), sphinx (the
    documentation's build), and XLA's flags as tests/conftest.py sets them."""
    helps = [
        subprocess.run(
            [sys.executable, "-m", tool, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for tool in ("pytest", "sphinx")
    ]
    xla_flags = re.findall(r'"(--xla_\w+)', (ROOT / "tests" / "conftest.py").read_text())
    # `tfds build --file_format`, `tensorboard --logdir`: tools not installed with the tests.
    return "\n".join([*helps, "--file_format", "--logdir", *xla_flags])


def check_commands(text: str, name: str) -> set[str]:
    """Checks every command and flag ``text`` shows; returns the programs it runs."""
    commands = commands_in(text, name)
    programs = {program for program, _ in commands}
    helps = {program: help_text(program) for program in programs}
    for program, flags in commands:
        for flag in flags:
            assert re.search(rf"{flag}\b", helps[program]), f"{name}: {program} has no {flag}"
    # A flag named in the prose belongs to a program the text runs, to one of PROGRAMS,
    # or to one of the other tools.
    known = "\n".join([*helps.values(), *map(help_text, PROGRAMS), _other_flags()])
    for flag in set(re.findall(r"(?<![\w-])--[a-z][\w-]*", text)):
        assert re.search(rf"{flag}\b", known), f"no program has the {flag} of {name}"
    return programs


_PATH = re.compile(r"`((?:\.ci|benchmarks|docs|experiments|ftp_jax|tests)/[^`\s]*)`")
_LINK = re.compile(r"\]\((?!https?:|#)([^)\s#]+)(?:#[^)]*)?\)")


def check_paths(text: str, name: str, base: Path) -> int:
    """Checks every repository path ``text`` names (in backticks, from the root) and every
    relative link (from ``base``); returns how many it checked."""
    ignored = [line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()]
    paths = {match.group(1) for match in _PATH.finditer(text)}
    links = {os.path.relpath(base / match.group(1), ROOT) for match in _LINK.finditer(text)}
    for path in sorted(paths | links):
        if path.strip("/") in ignored:  # made by a command (.ci/venv), not in the repository
            continue
        path, _, cls = path.partition("::")
        braces = re.fullmatch(r"(.*)\{(.*)\}(.*)", path)
        options = (
            [braces[1] + part + braces[3] for part in braces[2].split(",")] if braces else [path]
        )
        for option in options:
            found = glob.glob(str(ROOT / option))
            assert found, f"{name} names {option}, which does not exist"
            if cls:
                assert re.search(rf"^class {cls}\b", Path(found[0]).read_text(), re.M), (
                    f"{name} names {path}::{cls}, which does not exist"
                )
    return len(paths | links)
