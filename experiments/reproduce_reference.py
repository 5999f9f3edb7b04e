"""Replays the authors' reference FTP trajectories with ftp_jax and prints the agreement.

Command (from the repository root, after the README's install)::

    .venv/bin/python experiments/reproduce_reference.py

It runs the four FTP configurations of the reference code (AdamP, AdamP with
weight decay and k=0.5, SGDP, SGDP with Nesterov and weight decay) for 80 steps,
in float64 and float32, in PyTorch layout (``torch_row_axes``) and in Flax layout
(the default row rule), and prints the largest deviation from the reference's
params and radii. Expected: float64 deviations below 1e-12 relative, float32
below 1e-5 of each leaf's scale. It only prints; ``--out FILE`` also writes the
rows as JSON (the committed ``experiments/results/reference.json`` was written
with ``--out experiments/results/reference.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ftp_jax  # noqa: E402
from tests import golden  # noqa: E402


def _deviation(actual, expected, *, relative_to_scale: bool) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if relative_to_scale:
        return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="experiments/reproduce_reference.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    rows = []
    for precision in ("float64", "float32"):
        for layout in ("torch", "flax"):
            for config in golden.FTP_CONFIGS:
                with jax.enable_x64(precision == "float64"):
                    problem = golden.FTPProblem(precision, layout)
                    thetas, radii = golden.run_trajectory(
                        problem.optimizer(config),
                        problem.tree("problem/w0"),
                        problem.gradient_fn(),
                        problem.steps,
                    )
                    expected = problem.reference_params(config)
                scale = precision == "float32"
                params_dev = max(
                    _deviation(a, e, relative_to_scale=scale)
                    for a, e in zip(
                        jax.tree_util.tree_leaves(thetas),
                        jax.tree_util.tree_leaves(expected),
                        strict=True,
                    )
                )
                by_path = {
                    ftp_jax.leaf_path(kp): r
                    for kp, r in jax.tree_util.tree_flatten_with_path(radii)[0]
                }
                radius_dev = max(
                    _deviation(
                        by_path[problem.path(n)],
                        problem.reference_radii(config)[:, i],
                        relative_to_scale=scale,
                    )
                    for i, n in enumerate(problem.constrained)
                )
                rows.append(
                    dict(
                        precision=precision,
                        layout=layout,
                        config=config,
                        params_deviation=params_dev,
                        radius_deviation=radius_dev,
                    )
                )
    print(f"{'precision':<10}{'layout':<8}{'config':<20}{'params dev':>12}{'radius dev':>12}")
    for r in rows:
        print(
            f"{r['precision']:<10}{r['layout']:<8}{r['config']:<20}"
            f"{r['params_deviation']:>12.2e}{r['radius_deviation']:>12.2e}"
        )
    print("float64: max relative deviation; float32: max deviation / leaf scale.")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"backend": jax.default_backend(), "rows": rows}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
