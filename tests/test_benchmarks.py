"""Smoke runs of the benchmark scripts (``--quick``): they run and write their JSON.

Each script runs in its own process, without the test-wide XLA flags (8 simulated
devices), as a user would run it. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _subprocess(script: str, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run(script: str, out: Path, *flags: str) -> dict:
    completed = _subprocess(script, out, *flags)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "|" in completed.stdout  # printed a table
    return json.loads(out.read_text())


def _check_machine(result: dict) -> None:
    machine = result["machine"]
    for key in ("jax", "backend", "cpu_count", "cpu_model"):
        assert key in machine, key
    assert machine["backend"] == "cpu"


# A stand-in for the authors' optimizer file (GT-RIPL/FTP util/FTP.py), not its code:
# the same class names and constructor signatures, plain SGD/AdamW steps. It checks the
# parameter group the reference's step() reads: "params", "pre" (anchors), "name".
STAND_IN_REFERENCE = """
import torch


def _check_groups(optimizer):
    for group in optimizer.param_groups:
        assert len(group["pre"]) == len(group["name"]) == len(group["params"])
        for p, pre in zip(group["params"], group["pre"]):
            assert p.shape == pre.shape and p.requires_grad and p.grad is not None


class SGDP(torch.optim.SGD):
    def __init__(self, params, lr=0.1, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, k=1.0, exclude_set={}):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)
        self.k, self.exclude_set = k, exclude_set
        _check_groups(self)


class AdamP(torch.optim.AdamW):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, k=1.0, exclude_set={}):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)
        self.k, self.exclude_set = k, exclude_set
        _check_groups(self)
"""


def test_update_step_with_before_and_reference(tmp_path):
    """One smoke run of update_step.py with every option: the JAX rows (all bases and
    buffer options), another FTP version (--ftp-before) and the PyTorch reference."""
    before = tmp_path / "ftp_before.py"
    before.write_text((ROOT / "ftp_jax" / "_ftp.py").read_text())
    flags = ["--ftp-before", str(before)]
    torch = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        reference = tmp_path / "FTP.py"
        reference.write_text(STAND_IN_REFERENCE)
        flags += ["--reference", str(reference), "--torch-threads", "1"]
    result = _run("update_step.py", tmp_path / "update.json", *flags)
    _check_machine(result)
    methods = result["models"]["quick"]["methods"]
    for name in ("sgd", "ftp(sgd)", "adamw", "ftp(adamw)", "ftp(adamw) [before]"):
        assert methods[name]["median_s"] > 0, name
    assert methods["ftp(adamw)"]["base"] == "adamw"
    assert methods["ftp(adamw)"]["ratio_to_base"] > 0
    assert "ftp(adamw) bf16 displacement" in methods
    if torch is None:
        assert "reference" not in result
        return
    ref = result["reference"]
    assert ref["torch"] == torch.__version__
    assert ref["threads"] == 1
    assert ref["file"] == str(reference)
    methods = ref["models"]["quick"]["methods"]
    for name, base in (
        ("reference SGDP", "torch.optim.SGD"),
        ("reference AdamP", "torch.optim.AdamW"),
    ):
        assert methods[name]["median_s"] > 0, name
        assert methods[base]["median_s"] > 0, base
        assert methods[name]["base"] == base
        assert methods[name]["ratio_to_base"] > 0
    # Set side by side with the JAX row of the same method where the run has it.
    assert methods["reference AdamP"]["jax_counterpart"] == "ftp(adamw)"
    assert methods["reference AdamP"]["torch_over_jax"] > 0
    assert "torch_over_jax" not in methods["reference SGDP"]  # no sgd+momentum JAX row


def _refused_reference(tmp_path, capsys, source: str) -> str:
    """update_step.py's command line with ``--reference`` a file of ``source``: it must
    exit with a usage error (code 2) before timing anything; returns its stderr."""
    from benchmarks import update_step

    reference, out = tmp_path / "FTP.py", tmp_path / "update.json"
    reference.write_text(source)
    with pytest.raises(SystemExit) as exit_info:
        update_step.main(["--quick", "--out", str(out), "--reference", str(reference)])
    assert exit_info.value.code == 2
    assert not out.exists()  # failed before timing anything
    return capsys.readouterr().err


def test_update_step_reference_without_adamp(tmp_path, capsys):
    pytest.importorskip("torch")
    stderr = _refused_reference(tmp_path, capsys, STAND_IN_REFERENCE.split("class AdamP")[0])
    assert "defines no `AdamP`" in stderr, stderr[-2000:]


def test_update_step_reference_wrong_signature(tmp_path, capsys):
    pytest.importorskip("torch")
    # Plain torch optimizers under the reference's names: no `k`, no `exclude_set`.
    source = (
        "import torch\n\n"
        "class SGDP(torch.optim.SGD):\n    pass\n\n"
        "class AdamP(torch.optim.AdamW):\n    pass\n"
    )
    stderr = _refused_reference(tmp_path, capsys, source)
    assert "does not take k, exclude_set" in stderr, stderr[-2000:]


def test_state_memory(tmp_path):
    result = _run("state_memory.py", tmp_path / "memory.json")
    _check_machine(result)
    methods = result["models"]["quick"]["methods"]
    # Counted from the actual state pytrees: FTP keeps two parameter-sized buffers
    # (plus per-row norms and scalars) beyond its base optimizer.
    assert methods["sgd"]["state_per_param"] == 0
    assert methods["adamw"]["state_per_param"] == pytest.approx(2.0, abs=1e-3)
    assert methods["ftp(adamw)"]["extra_over_base_per_param"] == pytest.approx(2.0, abs=0.05)
    assert methods["ftp(adamw) bf16 displacement"]["extra_over_base_per_param"] == (
        pytest.approx(1.5, abs=0.05)
    )
    assert methods["ftp(adamw) bf16 anchor+displacement"]["extra_over_base_per_param"] == (
        pytest.approx(1.0, abs=0.05)
    )
    assert methods["tpgm (projection state alone)"]["state_per_param"] == pytest.approx(
        1.0, abs=0.01
    )


def test_buffer_options(tmp_path):
    result = _run("buffer_options.py", tmp_path / "options.json")
    _check_machine(result)
    problems = {row["problem"] for row in result["rows"]}
    assert any(p.startswith("reference") for p in problems)
    assert any(p.startswith("SmallCNN") for p in problems)
    for row in result["rows"]:
        assert row["params_vs_leaf_scale"] >= 0


def test_train_step(tmp_path):
    result = _run("train_step.py", tmp_path / "train.json", "--ftp-layouts", "buckets")
    _check_machine(result)
    steps = result["steps"]
    for name in ("sgd+momentum", "ftp(sgd+momentum)", "adamw", "ftp(adamw)", "tpgm apply"):
        assert steps[name]["median_s"] > 0, name
    assert "overhead_vs_base" in steps["ftp(adamw)"]
    assert "overhead_vs_base" in steps["ftp(adamw) layout=buckets"]
    assert steps["tpgm update_step"]["relative_to_sgd_momentum_step"] > 0


def test_input_pipeline_batches_equal_the_calling_thread():
    # The benchmark times the recipes' pipeline (SourceTrainData, uint8 crops): with worker
    # threads it yields the batches the calling thread makes, on DomainNet-sized photos.
    from benchmarks import input_pipeline
    from ftp_jax.data import _photos

    photos = [_photos.photo(index) for index in range(6)]
    for picture in photos:
        assert picture.dtype == np.uint8 and picture.shape[2] == 3
        assert all(_photos.SIDES[0] <= side <= _photos.SIDES[1] for side in picture.shape[:2])
    source = [{"image": picture, "label": index} for index, picture in enumerate(photos)]
    settings = dict(batch_size=3, size=32, seed=1, epoch=2)
    threaded = list(input_pipeline.pipeline(source, workers=2, **settings))
    in_thread = list(input_pipeline.pipeline(source, workers=0, **settings))
    assert len(threaded) == len(in_thread) == 2
    for a, b in zip(threaded, in_thread, strict=True):
        assert a["image"].dtype == np.uint8 and a["image"].shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    decoded = np.asarray(PIL.Image.open(io.BytesIO(_photos.jpeg(0))))
    assert decoded.shape == photos[0].shape  # the JPEG the dataset stores


def test_committed_input_pipeline_results():
    result = json.loads((ROOT / "benchmarks/results/input_pipeline_cpu.json").read_text())
    _check_machine(result)
    assert result["dataset"] == "synthetic_photos" and result["examples"] == 320
    for kind in ("threads", "processes"):
        for entry in result[kind].values():
            assert entry["images_per_s"] > 0 and entry["images_per_cpu_s"] > 0
            assert entry["scaling_efficiency"] > 0
    assert set(result["threads"]) == {str(w) for w in range(result["cores"] + 1)}
    assert result["images_per_s_per_core"] == result["threads"]["1"]["images_per_cpu_s"]
    for need in result["gpu_needs"].values():
        assert need["source"]
        expected = need["images_per_s"] / result["images_per_s_per_core"]
        assert need["cores_needed"] == pytest.approx(expected)


def test_committed_recipe_throughput_results():
    result = json.loads((ROOT / "benchmarks/results/recipe_throughput_cpu.json").read_text())
    _check_machine(result)
    assert not result["quick"] and result["workers"] == 2
    rates = result["images_per_s"]
    assert rates["real"] > 0 and rates["synthetic"] > 0
    # The bar: real input sustains at least 0.9 of the step rate with 2 workers.
    assert result["real_over_synthetic"] >= 0.9
    assert result["params"] > 1_000_000  # a real model, not a trivially tiny step


def test_state_layout_counts_in_process():
    """benchmarks/state_layout.py's figures on a tiny tree (in process, one round): the
    bucketed state's arrays do not grow with same-shape leaves, the kernels are counted."""
    import argparse

    from benchmarks import _common, state_layout

    shapes = [
        (f"block{i}/{name}", shape)
        for i in range(4)
        for name, shape in (("kernel", (3, 3, 4, 4)), ("bias", (4,)))
    ]
    args = argparse.Namespace(bases=["adamw"], layouts=["leaves", "buckets"], rounds=1, warmup=0)
    before = _common.load_ftp_module(ROOT / "benchmarks" / "_ftp_per_leaf.py")
    methods = state_layout.run_model("tiny", shapes, args, before)["methods"]
    base = methods["adamw"]["state_arrays"]
    extra = {name: m["state_arrays"] - base for name, m in methods.items()}
    assert extra["ftp(adamw) [before]"] == 1 + 6 * 8  # count, 6 arrays per leaf
    assert extra["ftp(adamw) layout=leaves"] == 1 + 3 * 8 + 3  # 3 buffers per leaf, 3 vectors
    assert extra["ftp(adamw) layout=buckets"] == 1 + 3 * 2 + 3  # 2 buckets
    for m in methods.values():
        assert m["kernels"] > 0 and m["step_arrays_out"] == 8 + m["state_arrays"]
    assert (
        methods["ftp(adamw) layout=buckets"]["kernels"] < methods["ftp(adamw) [before]"]["kernels"]
    )


def test_count_kernels():
    from benchmarks.state_layout import count_kernels

    hlo = """HloModule m
ENTRY %main (p: f32[4]) -> (f32[4], f32[4]) {
  %p = f32[4]{0} parameter(0)
  %c = f32[] constant(1)
  %f = f32[4]{0} fusion(%p, %c), kind=kLoop, calls=%fused
  %b = f32[4]{0} bitcast(%f)
  %g = f32[4]{0} copy(%b)
  ROOT %t = (f32[4]{0}, f32[4]{0}) tuple(%f, %g)
}
"""
    assert count_kernels(hlo) == {"fusion": 1, "copy": 1}


def test_dispatch_probe_in_process():
    import argparse

    from benchmarks import dispatch_probe

    entry = dispatch_probe.run_size(4, argparse.Namespace(rounds=1, warmup=0))
    steps = entry["steps"]
    assert steps["buffers N=4"]["arrays_in_out"] == 8 and steps["vector N=4"]["kernels"] >= 1
    assert steps["kernels N=4"]["kernels"] >= 4
    assert set(entry["derived"]) == {"per_buffer_us", "per_kernel_us"}


def test_committed_state_layout_results():
    """RESULTS_LAYOUT.md's tables are state_layout.py --markdown of the committed JSON,
    and the committed counts show what the layouts promise (issue 24)."""
    from benchmarks import state_layout

    result = json.loads((ROOT / "benchmarks/results/state_layout_cpu_arrays.json").read_text())
    gpu = json.loads((ROOT / "benchmarks/results/update_step_gpu.json").read_text())
    page = (ROOT / "benchmarks/RESULTS_LAYOUT.md").read_text()
    begin = page.index("<!-- generated: state_layout.py")
    block = page[page.index("\n", begin) + 1 : page.index("<!-- end generated -->")]
    assert block.strip() == state_layout.markdown(result, gpu).strip(), (
        "regenerate the tables: benchmarks/state_layout.py --markdown "
        "benchmarks/results/state_layout_cpu_arrays.json"
    )
    for model in ("resnet50", "vit_b16"):
        methods = result["models"][model]["methods"]
        before = methods["ftp(adamw) [before]"]
        leaves = methods["ftp(adamw) layout=leaves"]
        buckets = methods["ftp(adamw) layout=buckets"]
        bucketed_base = methods["ftp(adamw) layout=buckets+base"]
        assert (
            bucketed_base["state_arrays"]
            < buckets["state_arrays"]
            < leaves["state_arrays"]
            < before["state_arrays"]
        )
        # "leaves": the 3 scalars per leaf are 3 vectors (one dtype); "buckets": FTP's own
        # state is the count, 3 buffers per bucket and 3 vectors, whatever the depth.
        n = result["models"][model]["leaves"]
        assert before["state_arrays"] - leaves["state_arrays"] == 3 * n - 3
        base = methods["adamw"]["state_arrays"]
        assert (buckets["state_arrays"] - base - 4) % 3 == 0
