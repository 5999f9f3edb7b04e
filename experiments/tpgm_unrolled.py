"""TPGM's truncated hypergradient (the reference) against the unrolled option.

Command (from the repository root)::

    .venv/bin/python experiments/tpgm_unrolled.py

A small problem: a 2-layer MLP "pre-trained" on a teacher's labels, fine-tuned on
a shifted training distribution (inputs scaled by 1.5 and a few flipped labels),
with held-out data from the original distribution. Both variants run the same
Adam on the radii (proj_lr 5e-2) for 40 projection-update steps; the unrolled
one differentiates the held-out loss through K inner SGD steps on training
batches. It prints the radius trajectory of the first layer and the held-out
loss after projection, and the compiled temporary memory of one update step
for K = 0 (truncated), 1, 2, 4, 8 (XLA's memory analysis on this machine).
It only prints; ``--out FILE`` also writes the results as JSON (the committed
``experiments/results/tpgm_unrolled.json`` came from
``--out experiments/results/tpgm_unrolled.json``).

Expected (CPU, float32): the unrolled radii follow a different trajectory
(they account for where the next training steps take the weights), both end
with a held-out loss below the unprojected fine-tuned weights', and the
temporary memory grows about linearly with K.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import ftp_jax

STEPS, INNER_LR, WIDTH = 40, 0.2, 64


def make_problem():
    keys = jax.random.split(jax.random.key(0), 8)
    pre = {
        "fc1": {"kernel": jax.random.normal(keys[0], (16, WIDTH)) / 4, "bias": jnp.zeros(WIDTH)},
        "fc2": {"kernel": jax.random.normal(keys[1], (WIDTH, 4)) / 8, "bias": jnp.zeros(4)},
    }

    def logits(params, x):
        hidden = jnp.tanh(x @ params["fc1"]["kernel"] + params["fc1"]["bias"][None])
        return hidden @ params["fc2"]["kernel"] + params["fc2"]["bias"][None]

    def loss(params, batch):
        return optax.softmax_cross_entropy_with_integer_labels(
            logits(params, batch["x"]), batch["y"]
        ).mean()

    def batches(key, count, scale, flip):
        x = jax.random.normal(key, (count, 32, 16)) * scale
        y = jnp.argmax(logits(pre, x / scale), axis=-1)
        flips = jax.random.bernoulli(jax.random.fold_in(key, 1), flip, y.shape)
        return {"x": x, "y": jnp.where(flips, (y + 1) % 4, y)}

    train = batches(keys[2], STEPS * 8, 1.5, 0.3)
    heldout = batches(keys[3], STEPS, 1.0, 0.0)
    # Fine-tune on the shifted training data: these weights have drifted.
    tuned, opt = pre, optax.sgd(INNER_LR, momentum=0.9)
    state = opt.init(tuned)
    for i in range(60):
        batch = jax.tree_util.tree_map(lambda x, i=i: x[i], train)
        updates, state = opt.update(jax.grad(loss)(tuned, batch), state)
        tuned = optax.apply_updates(tuned, updates)
    return pre, tuned, loss, train, heldout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="experiments/tpgm_unrolled.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    pre, tuned, loss, train, heldout = make_problem()
    eval_batch = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), heldout)
    results = {"unprojected_heldout_loss": float(loss(tuned, eval_batch)), "runs": {}}
    memory = {}
    for unroll in (0, 1, 2, 4, 8):
        kwargs = (
            {}
            if unroll == 0
            else dict(unroll_steps=unroll, train_loss=loss, inner_learning_rate=INNER_LR)
        )
        # One radius-Adam step per update, around a base optimizer that does not move.
        tx = ftp_jax.tpgm(
            optax.set_to_zero(), loss, radius_learning_rate=5e-2, max_iters=1, **kwargs
        )
        state = tx.init(pre)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, tuned)
        inner = None
        if unroll:
            inner = jax.tree_util.tree_map(
                lambda x, k=unroll: x[: STEPS * k].reshape(STEPS, k, *x.shape[1:]), train
            )

        def step(params, state, heldout_batch, train_batches, tx=tx, zeros=zeros):
            extra = {} if train_batches is None else {"train_batches": train_batches}
            return tx.update(zeros, state, params, heldout_batch=heldout_batch, **extra)

        step = jax.jit(step)
        first_inner = None if inner is None else jax.tree_util.tree_map(lambda x: x[0], inner)
        first_heldout = jax.tree_util.tree_map(lambda x: x[0], heldout)
        compiled = step.lower(tuned, state, first_heldout, first_inner).compile()
        analysis = compiled.memory_analysis()
        memory[unroll] = int(getattr(analysis, "temp_size_in_bytes", -1))
        if unroll not in (0, 2):
            continue
        trajectory = []
        for i in range(STEPS):
            hb = jax.tree_util.tree_map(lambda x, i=i: x[i], heldout)
            tb = None if inner is None else jax.tree_util.tree_map(lambda x, i=i: x[i], inner)
            updates, state = step(tuned, state, hb, tb)
            trajectory.append(float(state.radius["fc1"]["kernel"]))
        projected = optax.apply_updates(tuned, updates)
        results["runs"][f"K={unroll}"] = {
            "fc1_kernel_radius": trajectory,
            "heldout_loss_after_projection": float(loss(projected, eval_batch)),
        }
    results["update_step_temp_bytes"] = memory
    print(
        f"held-out loss of the fine-tuned weights, unprojected: "
        f"{results['unprojected_heldout_loss']:.4f}"
    )
    print(f"{'step':>5} {'truncated (K=0)':>16} {'unrolled (K=2)':>16}")
    t0 = results["runs"]["K=0"]["fc1_kernel_radius"]
    t2 = results["runs"]["K=2"]["fc1_kernel_radius"]
    for i in list(range(0, STEPS, 5)) + [STEPS - 1]:
        print(f"{i + 1:>5} {t0[i]:>16.4f} {t2[i]:>16.4f}")
    for name, run in results["runs"].items():
        print(f"{name}: held-out loss after projection {run['heldout_loss_after_projection']:.4f}")
    print("temporary memory of one jitted update step (XLA memory analysis):")
    for unroll, size in memory.items():
        print(f"  K={unroll}: {size / 1024:.1f} KiB")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
