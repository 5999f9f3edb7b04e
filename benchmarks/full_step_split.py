"""Fused vs split (gradient jit + update jit) full ResNet-50 steps, base vs FTP, paired rounds.

An investigation of the full-step overhead (docs/benchmarks.md), not part of the
benchmark suite. Command: ``.venv/bin/python benchmarks/full_step_split.py 8 224 8
adamw,sgd+momentum`` (batch, image size, rounds, bases). Output of that run committed
in ``benchmarks/results/full_step_split_cpu.txt``.
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
import jax.numpy as jnp
import optax
from flax import nnx

import ftp_jax
from benchmarks import _common, _resnet
from benchmarks.train_step import _split, make_train_step

bs, img, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
pairs = sys.argv[4].split(",") if len(sys.argv) > 4 else ["adamw"]
modes = sys.argv[5].split(",") if len(sys.argv) > 5 else ["fused", "split"]
model = _resnet.ResNet50(rngs=nnx.Rngs(0))
graphdef, params0, ms0 = _split(model)
images = jax.random.normal(jax.random.key(1), (bs, img, img, 3))
labels = jnp.zeros((bs,), jnp.int32)
zoo = _common.base_optimizers()
opts = {}
for b in pairs:
    opts[b] = zoo[b]
    opts[f"ftp({b})"] = ftp_jax.ftp(zoo[b])


def copy(t):
    return jax.tree_util.tree_map(jnp.copy, t)


def grad_fn(params, model_state, images, labels):
    def loss_fn(params):
        model = nnx.merge(graphdef, params, model_state)
        model.train()
        logits = model(images)
        new_state = nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[2])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state

    (loss, ms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, ms, loss


grad_c = jax.jit(grad_fn, donate_argnums=(1,)).lower(params0, ms0, images, labels).compile()
steps = {}
extra = {}
for name, tx in opts.items():
    if "fused" in modes:
        h = {"p": copy(params0), "m": copy(ms0)}
        h["s"] = tx.init(h["p"])
        c = (
            jax.jit(make_train_step(graphdef, tx), donate_argnums=(0, 1, 2))
            .lower(h["p"], h["m"], h["s"], images, labels)
            .compile()
        )

        def run(c=c, h=h):
            out = c(h["p"], h["m"], h["s"], images, labels)
            h["p"], h["m"], h["s"], _ = out
            jax.block_until_ready(out)

        steps["fused " + name] = run
    if "split" in modes:
        h2 = {"p": copy(params0), "m": copy(ms0)}
        h2["s"] = tx.init(h2["p"])

        def upd(params, state, grads, tx=tx):
            u, state = tx.update(grads, state, params)
            return optax.apply_updates(params, u), state

        g0 = jax.tree_util.tree_map(jnp.zeros_like, params0)
        uc = jax.jit(upd, donate_argnums=(0, 1, 2)).lower(h2["p"], h2["s"], g0).compile()
        extra["split " + name] = []

        def run2(uc=uc, h=h2, key="split " + name):
            t0 = time.perf_counter()
            grads, h["m"], loss = grad_c(h["p"], h["m"], images, labels)
            jax.block_until_ready(grads)
            t1 = time.perf_counter()
            h["p"], h["s"] = uc(h["p"], h["s"], grads)
            jax.block_until_ready((h["p"], h["s"]))
            extra[key].append((t1 - t0, time.perf_counter() - t1))

        steps["split " + name] = run2
print("compiled", flush=True)
cpu = {}
times = _common.interleaved_times(steps, rounds=rounds, warmup=1, cpu_times=cpu)
for k in extra:
    extra[k] = extra[k][-rounds:]
res = {"load": os.getloadavg(), "flags": os.environ.get("XLA_FLAGS", "")}
for name in steps:
    res[name] = {"wall": statistics.median(times[name]), "cpu": statistics.median(cpu[name])}
    if name in extra:
        res[name]["grad"] = statistics.median(x[0] for x in extra[name])
        res[name]["upd"] = statistics.median(x[1] for x in extra[name])
for mode in modes:
    for b in pairs:
        f, base = f"{mode} ftp({b})", f"{mode} {b}"
        wall = 100 * (_common.paired_ratio(times, f, base) - 1)
        cpu_change = 100 * (_common.paired_ratio(cpu, f, base) - 1)
        line = (
            f"{mode:5s} {b:13s}: base {res[base]['wall']:.3f}s ftp {res[f]['wall']:.3f}s  "
            f"paired wall {wall:+.2f}%  cpu {cpu_change:+.2f}%  "
            f"util base {res[base]['cpu'] / res[base]['wall']:.2f} "
            f"ftp {res[f]['cpu'] / res[f]['wall']:.2f}"
        )
        if mode == "split":
            add = [
                (e1[1] - e0[1]) / (e0[0] + e0[1])
                for e1, e0 in zip(extra[f], extra[base], strict=True)
            ]
            line += (
                f"  upd {1e3 * res[base]['upd']:.0f}->{1e3 * res[f]['upd']:.0f} ms "
                f"(added {100 * statistics.median(add):+.2f}% of step)  "
                f"grad {1e3 * res[base]['grad']:.0f}/{1e3 * res[f]['grad']:.0f} ms"
            )
        print(line, flush=True)
print(json.dumps(res), flush=True)
