"""How far FTP's memory options depart from the exact trajectory.

Command (from the repository root)::

    .venv/bin/python benchmarks/buffer_options.py            # ~1 min on 2 CPU cores
    .venv/bin/python benchmarks/buffer_options.py --quick    # smoke run (seconds)

The options (``ftp(..., displacement_dtype=jnp.bfloat16)``, and with
``anchor_dtype=jnp.bfloat16`` too) are run next to the exact default on

1. the reference's 80-step problem (``tests/golden.py``: all four FTP
   configurations, float32 and float64, Flax layout);
2. a small fine-tuning run: the project's ``SmallCNN`` pre-trained on
   scikit-learn's 8x8 digits (upsampled to 28x28), then fine-tuned on the same
   digits rotated by 90 degrees with ``ftp(adamw)`` and ``ftp(sgd+momentum)``,
   head excluded, both trajectories fed the same batches.

Deviations, each the maximum over steps and constrained leaves:
``params/leaf scale`` = max|theta_option - theta_exact| / max|theta_exact| (the
tests' float32 criterion); ``params/displacement`` = the same over the largest
distance the exact run moved that leaf from its anchor; ``radius`` =
|gamma_option - gamma_exact| / max over steps of gamma_exact. A control row gives
the same figures for the exact method started one float32 ulp away: how far a
rounding-level change carries the training trajectory at all.

Prints its tables; ``--out benchmarks/results/buffer_options_<device>.json`` updates the
committed JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _common  # noqa: E402

OPTIONS = {
    "bf16 displacement": {"displacement_dtype": "bfloat16"},
    "bf16 anchor+displacement": {"anchor_dtype": "bfloat16", "displacement_dtype": "bfloat16"},
}


def _options(quick: bool = False):
    import jax.numpy as jnp

    names = list(OPTIONS)[:1] if quick else list(OPTIONS)
    return {name: {key: jnp.dtype(value) for key, value in OPTIONS[name].items()} for name in names}


def _deviations(thetas, radii, exact_thetas, exact_radii, anchor, mask_fn) -> dict:
    """The three deviation figures over a trajectory (leading axis = steps)."""
    import jax
    import numpy as np

    worst = {"params_vs_leaf_scale": 0.0, "params_vs_displacement": 0.0, "radius": 0.0}
    leaves = zip(
        jax.tree_util.tree_leaves(thetas),
        jax.tree_util.tree_leaves(exact_thetas),
        jax.tree_util.tree_leaves(anchor),
        jax.tree_util.tree_leaves(mask_fn(anchor)),
        strict=True,
    )
    for theta, exact, w0, constrained in leaves:
        if not constrained:
            continue
        theta, exact = np.asarray(theta, np.float64), np.asarray(exact, np.float64)
        w0 = np.asarray(w0, np.float64)
        diff = np.max(np.abs(theta - exact))
        worst["params_vs_leaf_scale"] = max(
            worst["params_vs_leaf_scale"], diff / np.max(np.abs(exact))
        )
        worst["params_vs_displacement"] = max(
            worst["params_vs_displacement"], diff / np.max(np.abs(exact - w0[None]))
        )
    for r, e in zip(
        jax.tree_util.tree_leaves(radii), jax.tree_util.tree_leaves(exact_radii), strict=True
    ):
        r, e = np.asarray(r, np.float64), np.asarray(e, np.float64)
        worst["radius"] = max(worst["radius"], np.max(np.abs(r - e)) / np.max(np.abs(e)))
    return worst


def golden_deviations(quick: bool) -> list[dict]:
    """Options vs exact on the reference's 80-step problem."""
    import jax
    import optax

    import ftp_jax
    from tests import golden

    rows = []
    for precision in ("float32",) if quick else ("float32", "float64"):
        with jax.enable_x64(precision == "float64"):
            problem = golden.FTPProblem(precision, "flax")
            w0 = problem.tree("problem/w0")
            steps = 5 if quick else problem.steps
            for config in golden.FTP_CONFIGS[:1] if quick else golden.FTP_CONFIGS:
                lr, wd = problem.config(config, "lr"), problem.config(config, "weight_decay")
                if problem.config(config, "opt") == "adamp":
                    base = optax.adamw(lr, weight_decay=wd)
                else:
                    base = optax.chain(
                        optax.add_decayed_weights(wd),
                        optax.sgd(
                            lr,
                            momentum=problem.config(config, "momentum") or None,
                            nesterov=bool(problem.config(config, "nesterov", False)),
                        ),
                    )
                kwargs = {"k": problem.config(config, "k"), "mask": problem.mask}
                exact = golden.run_trajectory(
                    ftp_jax.ftp(base, **kwargs), w0, problem.gradient_fn(), steps
                )
                for name, option in _options(quick).items():
                    thetas, radii = golden.run_trajectory(
                        ftp_jax.ftp(base, **kwargs, **option), w0, problem.gradient_fn(), steps
                    )
                    rows.append(
                        {
                            "problem": f"reference {config} {precision}",
                            "option": name,
                            **_deviations(thetas, radii, *exact, w0, problem.mask),
                        }
                    )
    return rows


def _digits():
    """scikit-learn's 1797 8x8 digits as (N, 28, 28, 1) float32 in [0, 1], labels, split."""
    import jax
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.asarray(data.images, np.float32) / 16.0
    images = np.asarray(jax.image.resize(images, (len(images), 28, 28), "linear"))[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], np.asarray(data.target, np.int32)[order]
    return images[:1400], labels[:1400], images[1400:], labels[1400:]


def training_deviations(quick: bool) -> list[dict]:
    """Options vs exact on a small fine-tuning run (SmallCNN, digits -> rotated digits)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    import ftp_jax
    from ftp_jax.models import SmallCNN

    train_x, train_y, test_x, test_y = (jnp.asarray(a) for a in _digits())
    pretrain_steps, finetune_steps, batch = (20, 10, 16) if quick else (300, 150, 32)
    model = SmallCNN(rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model, nnx.Param)
    params0 = nnx.to_pure_dict(state)

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def accuracy(params, x, y):
        return float(jnp.mean(jnp.argmax(nnx.merge(graphdef, params)(x), -1) == y))

    rng = np.random.default_rng(1)

    def batches(n):
        return np.stack([rng.choice(len(train_x), batch, replace=False) for _ in range(n)])

    # Python loops over jitted steps: XLA:CPU runs convolutions far slower inside a scan.
    def run(tx, params, images, indices, record):
        @jax.jit
        def step(params, state, index):
            grads = jax.grad(loss_fn)(params, images[index], train_y[index])
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        state, trajectory = jax.jit(tx.init)(params), []
        for index in indices:
            params, state = step(params, state, index)
            if record:
                trajectory.append((params, ftp_jax.ftp_radii(state)))
        if not record:
            return params
        return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trajectory)

    pretrained = run(optax.adamw(1e-3), params0, train_x, batches(pretrain_steps), False)
    rotated_x, rotated_test_x = jnp.rot90(train_x, 1, (1, 2)), jnp.rot90(test_x, 1, (1, 2))
    indices = batches(finetune_steps)
    mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
    bases = {
        "adamw": optax.adamw(1e-3, weight_decay=1e-4),
        "sgd+momentum": optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(1e-2, momentum=0.9)),
    }

    def finetune(tx, start=pretrained):
        return run(tx, start, rotated_x, indices, True)

    # The control: the exact method from the pre-trained params moved by one float32 ulp,
    # i.e. how far any rounding-level change carries this trajectory.
    nudged = jax.tree_util.tree_map(lambda x: np.nextafter(x, np.inf), pretrained)

    if quick:
        del bases["sgd+momentum"]
    rows = []
    for base_name, base in bases.items():
        exact = finetune(ftp_jax.ftp(base, mask=mask))
        exact_accuracy = accuracy(
            jax.tree_util.tree_map(lambda x: x[-1], exact[0]), rotated_test_x, test_y
        )
        runs = {
            name: (ftp_jax.ftp(base, mask=mask, **option), pretrained)
            for name, option in _options(quick).items()
        }
        runs["control: exact, params +1 ulp"] = (ftp_jax.ftp(base, mask=mask), nudged)
        for name, (tx, start) in runs.items():
            thetas, radii = finetune(tx, start)
            final = jax.tree_util.tree_map(lambda x: x[-1], thetas)
            rows.append(
                {
                    "problem": f"SmallCNN fine-tuning, ftp({base_name}), {finetune_steps} steps",
                    "option": name,
                    **_deviations(thetas, radii, *exact, pretrained, mask),
                    "test_accuracy_exact": exact_accuracy,
                    "test_accuracy_option": accuracy(final, rotated_test_x, test_y),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    _common.select_device(args.device)
    rows = golden_deviations(args.quick) + training_deviations(args.quick)
    table = [
        [
            row["problem"],
            row["option"],
            row["params_vs_leaf_scale"],
            row["params_vs_displacement"],
            row["radius"],
            (
                f"{100 * row['test_accuracy_exact']:.1f} / {100 * row['test_accuracy_option']:.1f}"
                if "test_accuracy_exact" in row
                else ""
            ),
        ]
        for row in rows
    ]
    _common.print_table(
        [
            "problem",
            "option",
            "params/leaf scale",
            "params/displacement",
            "radius",
            "test acc. exact / option (%)",
        ],
        table,
        title="Deviation of the memory options from the exact trajectory",
    )
    result = {
        "benchmark": "buffer_options",
        "machine": _common.machine(),
        "options": OPTIONS,
        "rows": rows,
    }
    default_name = f"buffer_options_{args.device}{'_quick' if args.quick else ''}.json"
    _common.write_json(result, args.out, default_name)
    return result


if __name__ == "__main__":
    main()
