"""The README as a newcomer reads it: its Python blocks run as written, its flags and paths exist.

The Python blocks run in order in one fresh process, in one namespace (each
block continues the previous ones, as the README reads), after the install of
command 1 and nothing else. What the README leaves to the user (their model,
data, loss and weights file) is given by the stand-ins below, and only by those
names: the blocks must import and define everything else themselves.

A block preceded by ``<!-- readme-test: expected to fail: REASON -->`` is still
run, and must fail; once it runs, the marker must go (strict).
"""

from __future__ import annotations

import contextlib
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
README = (ROOT / "README.md").read_text()

# The user's own things, which the README's blocks assume: declared here, nothing else.
STAND_INS = textwrap.dedent(
    '''
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    class MyPretrainedModel(nnx.Module):
        """The user's model: a backbone and a new classification head."""

        def __init__(self, rngs):
            self.backbone = nnx.Linear(8, 16, rngs=rngs)
            self.head = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.head(jax.nn.relu(self.backbone(x)))

    _model = MyPretrainedModel(nnx.Rngs(0))
    pretrained_params = nnx.state(_model, nnx.Param)  # the user's pre-trained weights
    pretrained = pretrained_params
    finetuned = jax.tree_util.tree_map(lambda p: p + 0.1, pretrained_params)

    def _batch(seed):
        rng = np.random.default_rng(seed)
        return {"image": rng.normal(size=(4, 8)).astype(np.float32), "label": rng.integers(0, 3, 4)}

    train_batches = [_batch(i) for i in range(3)]  # the user's data
    heldout_loader = [_batch(100 + i) for i in range(3)]

    def heldout_loss(params, batch):  # the user's loss on held-out data
        model = nnx.merge(nnx.graphdef(_model), params)
        log_probs = jax.nn.log_softmax(model(batch["image"]))
        return -jnp.mean(jnp.take_along_axis(log_probs, batch["label"][:, None], 1))
    '''
)
DECLARED = (
    "MyPretrainedModel",
    "pretrained_params",
    "pretrained",
    "finetuned",
    "train_batches",
    "heldout_loader",
    "heldout_loss",
)
# The user's weights file (``RN50.pt``): a CLIP ResNet-50 state dict of zeros, written by
# the test in the blocks' working directory (as safetensors; the converter sniffs the format).
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
    blocks, stand_ins, weights, declared = json.load(open(sys.argv[1]))
    exec(compile(weights, "<weights stand-in>", "exec"), {})
    scope = {}
    exec(compile(stand_ins, "<stand-ins>", "exec"), scope)
    namespace = {"__name__": "__main__", **{name: scope[name] for name in declared}}
    results = []
    for block in blocks:
        try:
            exec(compile(block["code"], f"README.md, line {block['line']}", "exec"), namespace)
            results.append(None)
        except BaseException:
            results.append(traceback.format_exc(limit=-3))
    json.dump(results, open(sys.argv[2], "w"))
    """
)
_BLOCK = re.compile(
    r"(?:<!-- readme-test: expected to fail: (?P<reason>.*?) -->\n)?```python\n(?P<code>.*?)```",
    re.S,
)


def python_blocks() -> list[dict]:
    return [
        {
            "line": README.count("\n", 0, match.start("code")) + 1,
            "code": match["code"],
            "expected_failure": match["reason"],
        }
        for match in _BLOCK.finditer(README)
    ]


BLOCKS = python_blocks()


@pytest.fixture(scope="module")
def block_results():
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
        env.pop("XLA_FLAGS", None)  # a user's process
        source, results = Path(directory, "blocks.json"), Path(directory, "results.json")
        source.write_text(json.dumps([BLOCKS, STAND_INS, WEIGHTS_STAND_IN, DECLARED]))
        subprocess.run(
            [sys.executable, "-c", RUNNER, str(source), str(results)],
            cwd=directory,
            env=env,
            check=True,
            timeout=600,
        )
        return json.loads(results.read_text())


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"line{BLOCKS[i]['line']}")
def test_python_block_runs_as_written(block_results, index):
    block, error = BLOCKS[index], block_results[index]
    if block["expected_failure"]:
        assert error is not None, (
            f"the README block at line {block['line']} runs now: remove its "
            "'readme-test: expected to fail' marker"
        )
        pytest.xfail(f"README line {block['line']}: {block['expected_failure']}")
    assert error is None, f"README block at line {block['line']} fails:\n{error}"


# Commands: our programs, whose flags must exist; others (pip, tfds, pytest) are not checked.
PROGRAMS = {
    "ftp_jax.experiment": "ftp_jax.experiment.__main__",
    "ftp_jax.recipes": "ftp_jax.recipes.__main__",
    "ftp_jax.data.prepare": "ftp_jax.data.prepare",
    "ftp_jax.experiment.compare": "ftp_jax.experiment.compare",
}
_COMMAND = re.compile(
    r"python3? (?:-m (?P<module>[\w.]+)|(?P<script>(?:experiments|benchmarks)/\w+\.py))"
    r"(?P<args>(?:[ \t]+(?:\\\n\s*)?[^\s`|&;#]+)*)"
)


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


def readme_commands() -> list[tuple[str, list[str]]]:
    """``(program, flags)`` of every command the README shows for this project's programs."""
    commands = []
    for match in _COMMAND.finditer(README):
        program = match["module"] or match["script"]
        if program.startswith("ftp_jax") and program not in PROGRAMS:
            raise AssertionError(f"the README runs an unknown module {program}")
        if program.startswith("ftp_jax") or program.endswith(".py"):
            commands.append((program, re.findall(r"(?<![\w-])--[a-z][\w-]*", match["args"])))
    return commands


def test_every_command_and_flag_the_readme_shows_exists():
    commands = readme_commands()
    programs = {program for program, _ in commands}
    assert {"ftp_jax.experiment", "ftp_jax.recipes", "ftp_jax.data.prepare"} <= programs
    helps = {program: help_text(program) for program in programs}
    for program, flags in commands:
        for flag in flags:
            assert re.search(rf"{flag}\b", helps[program]), f"{program} has no {flag}"
    # A flag named in the prose belongs to one of the programs (or to `tfds build`, to
    # pytest with pytest-xdist: README command 2, or to XLA, as tests/conftest.py sets it).
    pytest_help = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True
    ).stdout
    xla_flags = re.findall(r'"(--xla_\w+)', (ROOT / "tests" / "conftest.py").read_text())
    known = "\n".join([*helps.values(), "--file_format", pytest_help, *xla_flags])
    for flag in set(re.findall(r"(?<![\w-])--[a-z][\w-]*", README)):
        assert re.search(rf"{flag}\b", known), f"no program has the README's {flag}"


_PATH = re.compile(r"`((?:\.ci|benchmarks|experiments|ftp_jax|tests)/[^`\s]*)`")


def test_every_path_the_readme_names_exists():
    ignored = [line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()]
    paths = {match.group(1) for match in _PATH.finditer(README)}
    assert len(paths) > 30
    for path in sorted(paths):
        if path.strip("/") in ignored:  # made by a command (.ci/venv), not in the repository
            continue
        path, _, name = path.partition("::")
        braces = re.fullmatch(r"(.*)\{(.*)\}(.*)", path)
        options = (
            [braces[1] + part + braces[3] for part in braces[2].split(",")] if braces else [path]
        )
        for option in options:
            found = glob.glob(str(ROOT / option))
            assert found, f"the README names {option}, which does not exist"
            if name:
                assert re.search(rf"^class {name}\b", Path(found[0]).read_text(), re.M), (
                    f"the README names {path}::{name}, which does not exist"
                )


DOCS_BUILD = ".venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html"


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
