"""Compiled full ResNet-50 steps, base vs FTP: XLA flops, bytes, convolutions, entry ops.

An investigation of the full-step overhead (docs/benchmarks.md), not part of the
benchmark suite. Command: ``.venv/bin/python benchmarks/full_step_hlo.py 8 224``
(batch size, image size). Output committed in
``benchmarks/results/full_step_hlo_cpu.txt``; writes each HLO to /tmp/full_step_hlo/.
"""

import collections
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
import jax.numpy as jnp
from flax import nnx

import ftp_jax
from benchmarks import _common, _resnet
from benchmarks.train_step import _split, make_train_step

bs, img = int(sys.argv[1]), int(sys.argv[2])
model = _resnet.ResNet50(rngs=nnx.Rngs(0))
graphdef, params0, ms0 = _split(model)
images = jnp.zeros((bs, img, img, 3))
labels = jnp.zeros((bs,), jnp.int32)
zoo = _common.base_optimizers()
opts = {
    "sgd+momentum": zoo["sgd+momentum"],
    "ftp(sgd+momentum)": ftp_jax.ftp(zoo["sgd+momentum"]),
    "adamw": zoo["adamw"],
    "ftp(adamw)": ftp_jax.ftp(zoo["adamw"]),
}
os.makedirs("/tmp/full_step_hlo", exist_ok=True)
for name, tx in opts.items():
    st = jax.eval_shape(tx.init, params0)
    c = (
        jax.jit(make_train_step(graphdef, tx), donate_argnums=(0, 1, 2))
        .lower(params0, ms0, st, images, labels)
        .compile()
    )
    txt = c.as_text()
    open(f"/tmp/full_step_hlo/{name}.hlo", "w").write(txt)
    # entry computation instructions
    entry = txt[txt.index("ENTRY") :]
    ops = collections.Counter()
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?\S+ = \S+(?:\{[^}]*\})? ([\w-]+)\(", line)
        if m:
            ops[m.group(1)] += 1
    conv = len(re.findall(r"convolution\(", txt))
    cc = collections.Counter(re.findall(r'custom_call_target="([^"]+)"', txt))
    cost = c.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    print(
        name,
        f"flops {cost.get('flops', 0):.4g}",
        f"bytes {cost['bytes accessed']:.4g}",
        "convs",
        conv,
        dict(cc),
        "entry ops",
        sum(ops.values()),
        dict(ops.most_common(8)),
        flush=True,
    )
