"""The PyTorch reference side by side: ``update_step.py --reference path/to/FTP.py``.

The project contains none of the reference's code: the user supplies the authors'
optimizer file (GT-RIPL/FTP ``util/FTP.py``), which defines two ``torch.optim``
optimizers with FTP built in::

    SGDP(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False,
         k=1.0, exclude_set={})
    AdamP(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
          amsgrad=False, k=1.0, exclude_set={})

and whose ``step()`` walks ``zip(group["params"], group["name"], group["pre"])``:
the reference's training script (``main_finetune.py``) builds one parameter group
``{"params": [...], "pre": [deep copies of the params], "name": [parameter
names]}`` and passes ``exclude_set`` as a set of those names (the new head). This
module builds the same group (every parameter constrained, ``exclude_set`` empty,
as FTP's default mask on the JAX side) from the JAX tree's shapes in PyTorch
layout, sets preallocated random gradients once, and times ``opt.step()`` against
``torch.optim.SGD`` / ``torch.optim.AdamW`` with the same hyperparameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from benchmarks import _common, _shapes

# Arguments the benchmark passes; the reference's constructors take them all.
EXPECTED_ARGUMENTS = {
    "SGDP": ("params", "lr", "momentum", "weight_decay", "nesterov", "k", "exclude_set"),
    "AdamP": ("params", "lr", "betas", "eps", "weight_decay", "k", "exclude_set"),
}
EXPECTED_SIGNATURES = {
    "SGDP": "SGDP(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, "
    "k=1.0, exclude_set={})",
    "AdamP": "AdamP(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, "
    "amsgrad=False, k=1.0, exclude_set={})",
}

# Hyperparameters: the JAX rows' (``_common.base_optimizers``). SGD: the reference
# recipe's momentum 0.9 and weight decay 5e-4 (its scripts also set nesterov=True;
# here False, as the JAX ``sgd+momentum`` row: one add per element less).
SGD_KWARGS = {"lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
ADAMW_KWARGS = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05}
FTP_KWARGS = {"k": 1.0}

# Row name -> (torch base row or None, the JAX row it corresponds to).
ROWS = {
    "torch.optim.SGD": (None, "sgd+momentum"),
    "reference SGDP": ("torch.optim.SGD", "ftp(sgd+momentum)"),
    "torch.optim.AdamW": (None, "adamw"),
    "reference AdamP": ("torch.optim.AdamW", "ftp(adamw)"),
}


class ReferenceError(Exception):
    """The reference file cannot be used; the message says why."""


def load(path: Path) -> tuple[Any, Any]:
    """Imports torch and the user's reference file; returns ``(torch, module)``.

    Raises :class:`ReferenceError` if torch is missing, the file cannot be
    imported, or it lacks ``SGDP``/``AdamP`` with the reference's constructor
    signature.
    """
    path = Path(path)
    try:
        import torch
    except ImportError as error:
        raise ReferenceError(
            f"--reference needs PyTorch, which is not installed here ({error}); "
            "install it (e.g. `pip install torch`) or leave out --reference."
        ) from None
    if not path.is_file():
        raise ReferenceError(f"--reference {path}: no such file.")
    spec = importlib.util.spec_from_file_location("ftp_reference_optimizers", path)
    if spec is None or spec.loader is None:
        raise ReferenceError(f"--reference {path}: not an importable Python file.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure is the file's problem
        raise ReferenceError(
            f"--reference {path}: importing it failed: {type(error).__name__}: {error}"
        ) from error
    for name, arguments in EXPECTED_ARGUMENTS.items():
        expected = (
            f"--reference expects the authors' optimizer file (GT-RIPL/FTP util/FTP.py) "
            f"with {EXPECTED_SIGNATURES[name]}"
        )
        cls = getattr(module, name, None)
        if cls is None:
            raise ReferenceError(f"{path} defines no `{name}`: {expected}.")
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ReferenceError(
                f"{path}: `{name}` is not a torch.optim.Optimizer subclass: {expected}."
            )
        try:
            parameters = inspect.signature(cls).parameters
        except (TypeError, ValueError) as error:
            raise ReferenceError(f"{path}: cannot read `{name}`'s signature ({error}).") from None
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        missing = [a for a in arguments if a not in parameters and not takes_any]
        if missing or next(iter(parameters), None) != "params":
            raise ReferenceError(
                f"{path}: `{name}{inspect.signature(cls)}` does not take "
                f"{', '.join(missing) or '`params` first'}: {expected}."
            )
    return torch, module


def file_digest(path: Path) -> str:
    """SHA-256 of the reference file (which version was timed)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def torch_shapes(shapes: _shapes.Shapes) -> list[tuple[str, tuple[int, ...]]]:
    """``(dotted name, PyTorch-layout shape)`` for each Flax-layout ``(path, shape)``."""
    return [
        (path.replace("/", "."), _shapes.torch_layout_shape(path, shape)) for path, shape in shapes
    ]


def build_optimizers(torch, module, shapes, device: str, seed: int = 0) -> dict[str, Any]:
    """``row -> optimizer``, each over its own copy of one random tree.

    Params ``0.02 * N(0, 1)`` as the JAX rows, gradients ``1e-3 * N(0, 1)``,
    created once and shared by the four optimizers (none of them writes to
    ``.grad``). The FTP optimizers get the reference's parameter group, with their
    anchors (``pre``) a copy of the initial params.
    """
    generator = torch.Generator().manual_seed(seed)
    named = torch_shapes(shapes)
    values = [0.02 * torch.randn(shape, generator=generator) for _, shape in named]
    grads = [(1e-3 * torch.randn(shape, generator=generator)).to(device) for _, shape in named]
    names = [name for name, _ in named]

    def params():
        tensors = []
        for value, grad in zip(values, grads, strict=True):
            p = torch.nn.Parameter(value.clone().to(device))
            p.grad = grad
            tensors.append(p)
        return tensors

    def reference_group():
        tensors = params()
        anchors = [p.detach().clone() for p in tensors]
        return [{"params": tensors, "pre": anchors, "name": list(names)}]

    sgd = dict(SGD_KWARGS)
    adamw = dict(ADAMW_KWARGS)
    ftp = {**FTP_KWARGS, "exclude_set": set()}
    built = {}
    for row, make in (
        ("torch.optim.SGD", lambda: torch.optim.SGD(params(), **sgd)),
        ("reference SGDP", lambda: module.SGDP(reference_group(), **sgd, **ftp)),
        ("torch.optim.AdamW", lambda: torch.optim.AdamW(params(), **adamw)),
        ("reference AdamP", lambda: module.AdamP(reference_group(), **adamw, **ftp)),
    ):
        try:
            built[row] = make()
        except Exception as error:  # noqa: BLE001
            raise ReferenceError(
                f"constructing {row} failed: {type(error).__name__}: {error}"
            ) from error
    return built


def run_model(name: str, shapes, args, torch, module, jax_methods: dict | None) -> dict:
    """Times the four torch rows on ``shapes``; prints the table, returns the JSON entry."""
    device = "cuda" if args.device == "gpu" else "cpu"
    optimizers = build_optimizers(torch, module, shapes, device)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def stepper(opt):
        def run():
            with torch.no_grad():
                opt.step()
            synchronize()

        return run

    steps = {row: stepper(opt) for row, opt in optimizers.items()}
    try:
        times = _common.interleaved_times(steps, rounds=args.rounds, warmup=args.warmup)
    except Exception as error:  # noqa: BLE001
        raise ReferenceError(
            f"a step of the reference's optimizers failed: {type(error).__name__}: {error}"
        ) from error
    del steps, optimizers
    info, table = {}, []
    for row, samples in times.items():
        base, counterpart = ROWS[row]
        entry: dict[str, Any] = {"base": base, **_common.summarize(samples)}
        if base is not None:
            entry["ratio_to_base"] = _common.paired_ratio(times, row, base)
            entry["ratio_of_medians"] = (
                entry["median_s"] / _common.summarize(times[base])["median_s"]
            )
        jax_row = (jax_methods or {}).get(counterpart)
        entry["jax_counterpart"] = counterpart
        if jax_row is not None:
            entry["jax_median_s"] = jax_row["median_s"]
            entry["torch_over_jax"] = entry["median_s"] / jax_row["median_s"]
        info[row] = entry
        table.append(
            [
                row,
                1e3 * entry["median_s"],
                f"{1e3 * entry['p10_s']:.1f}-{1e3 * entry['p90_s']:.1f}",
                entry.get("ratio_to_base", 1.0),
                counterpart,
                1e3 * jax_row["median_s"] if jax_row is not None else "-",
            ]
        )
    n_params = _shapes.count(shapes)
    _common.print_table(
        ["method", "median ms", "p10-p90 ms", "x base", "JAX row", "JAX ms"],
        table,
        title=(
            f"{name}, PyTorch {torch.__version__} reference ({torch.get_num_threads()} threads, "
            f"{device}): {n_params:,} params, {args.rounds} rounds"
        ),
    )
    return {"params": n_params, "methods": info}


def settings(path: Path, torch, threads: int, default: int, device: str) -> dict[str, Any]:
    """What the reference rows were measured with, for the JSON."""
    return {
        "file": str(path),
        "sha256": file_digest(path),
        "torch": torch.__version__,
        "threads": threads,
        "torch_default_threads": default,
        "device": device,
        "sgd": {k: v for k, v in SGD_KWARGS.items()},
        "adamw": {k: list(v) if isinstance(v, tuple) else v for k, v in ADAMW_KWARGS.items()},
        "ftp": {**FTP_KWARGS, "exclude_set": "empty: every parameter constrained"},
        "layout": "PyTorch: conv (out, in, kh, kw), linear and attention (out, in)",
        "implementation": "torch.optim defaults (foreach=None: the per-tensor loop on CPU, "
        "foreach kernels on CUDA)",
        "timed": "opt.step() under torch.no_grad() with preallocated gradients; "
        "the four rows round-robin in rotated order, in a phase after the JAX rows",
    }
