"""Parameter shape lists of ResNet-50 and ViT-B/16 in Flax layout.

The update-only benchmark builds random parameter trees from these lists, so it
needs no model code; :mod:`benchmarks._resnet` builds the same ResNet-50 as a
Flax NNX module, and the train-step benchmark checks that their shapes agree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SHAPE_LISTS",
    "resnet50_shapes",
    "vit_b16_shapes",
    "shape_tree",
    "random_tree",
    "torch_layout_shape",
]

Shapes = list[tuple[str, tuple[int, ...]]]


def _conv_bn(prefix: str, kernel: tuple[int, int], cin: int, cout: int) -> Shapes:
    return [
        (f"{prefix}/conv/kernel", (*kernel, cin, cout)),
        (f"{prefix}/norm/scale", (cout,)),
        (f"{prefix}/norm/bias", (cout,)),
    ]


def resnet50_shapes(num_classes: int = 1000) -> Shapes:
    """ResNet-50 (v1.5, torchvision's layout of blocks) in Flax layout: 25,557,032 params.

    Convolutions have no bias; batch-norm scale and bias are params (their running
    statistics are not). Paths follow :class:`benchmarks._resnet.ResNet50`.
    """
    shapes = _conv_bn("stem", (7, 7), 3, 64)
    cin = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for block in range(blocks):
            prefix = f"stages/{stage}/{block}/"
            shapes += _conv_bn(prefix + "reduce", (1, 1), cin, width)
            shapes += _conv_bn(prefix + "spatial", (3, 3), width, width)
            shapes += _conv_bn(prefix + "expand", (1, 1), width, 4 * width)
            if block == 0:
                shapes += _conv_bn(prefix + "shortcut", (1, 1), cin, 4 * width)
            cin = 4 * width
    shapes += [("head/kernel", (cin, num_classes)), ("head/bias", (num_classes,))]
    return shapes


def vit_b16_shapes(num_classes: int = 1000, image_size: int = 224) -> Shapes:
    """ViT-B/16 in Flax layout (attention kernels ``(in, heads, head_dim)``): 86,567,656
    params at 224x224."""
    width, heads, mlp, depth, patch = 768, 12, 3072, 12, 16
    tokens = (image_size // patch) ** 2 + 1
    shapes: Shapes = [
        ("patch_embedding/kernel", (patch, patch, 3, width)),
        ("patch_embedding/bias", (width,)),
        ("cls_token", (1, 1, width)),
        ("pos_embedding", (1, tokens, width)),
    ]
    for layer in range(depth):
        prefix = f"encoder/{layer}/"
        shapes += [(prefix + "norm1/scale", (width,)), (prefix + "norm1/bias", (width,))]
        for name in ("query", "key", "value"):
            shapes += [
                (prefix + f"attention/{name}/kernel", (width, heads, width // heads)),
                (prefix + f"attention/{name}/bias", (heads, width // heads)),
            ]
        shapes += [
            (prefix + "attention/out/kernel", (heads, width // heads, width)),
            (prefix + "attention/out/bias", (width,)),
            (prefix + "norm2/scale", (width,)),
            (prefix + "norm2/bias", (width,)),
            (prefix + "mlp/fc1/kernel", (width, mlp)),
            (prefix + "mlp/fc1/bias", (mlp,)),
            (prefix + "mlp/fc2/kernel", (mlp, width)),
            (prefix + "mlp/fc2/bias", (width,)),
        ]
    shapes += [
        ("encoder_norm/scale", (width,)),
        ("encoder_norm/bias", (width,)),
        ("head/kernel", (width, num_classes)),
        ("head/bias", (num_classes,)),
    ]
    return shapes


SHAPE_LISTS = {"resnet50": resnet50_shapes, "vit_b16": vit_b16_shapes}


def shape_tree(shapes: Shapes) -> dict[str, Any]:
    """Nested dicts (the layout of ``nnx.to_pure_dict``) with the shapes at the leaves.

    Path components that are integers (block indices) become int keys, as NNX lists do.
    """
    tree: dict[Any, Any] = {}
    for path, shape in shapes:
        node = tree
        *parents, leaf = [int(k) if k.isdigit() else k for k in path.split("/")]
        for key in parents:
            node = node.setdefault(key, {})
        if leaf in node:
            raise ValueError(f"duplicate parameter path {path!r}")
        node[leaf] = tuple(shape)
    return tree


def random_tree(
    shapes: Shapes, seed: int, scale: float = 0.02, dtype=jnp.float32
) -> dict[str, Any]:
    """A tree of ``scale``-sized normal values with the given shapes, drawn by NumPy.

    (Values do not change the benchmarks' times or memory; NumPy draws them without
    compiling a program per leaf shape.)
    """
    tree = shape_tree(shapes)
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=lambda x: isinstance(x, tuple))
    rng = np.random.default_rng(seed)
    return treedef.unflatten(
        [jnp.asarray(scale * rng.standard_normal(s, np.float32), dtype) for s in leaves]
    )


def torch_layout_shape(path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch-layout shape of the Flax-layout leaf ``path`` (same number of elements).

    Conv kernels HWIO -> OIHW, Dense ``(in, out)`` -> Linear ``(out, in)``; ViT
    attention kernels ``(in, heads, head_dim)`` -> ``(heads * head_dim, in)``, the
    output projection ``(heads, head_dim, out)`` -> ``(out, heads * head_dim)`` and
    the ``(heads, head_dim)`` biases -> ``(heads * head_dim,)`` (query, key and value
    stay separate leaves: torch's fused ``in_proj_weight`` would be one leaf of three
    times the rows). Everything else (norms, biases, tokens, position embeddings) is
    the same in both layouts.
    """
    shape = tuple(shape)
    leaf = path.rsplit("/", 1)[-1]
    if "/attention/" in path and leaf == "kernel" and len(shape) == 3:
        if path.endswith("/out/kernel"):
            heads, head_dim, out = shape
            new = (out, heads * head_dim)
        else:
            cin, heads, head_dim = shape
            new = (heads * head_dim, cin)
    elif "/attention/" in path and leaf == "bias" and len(shape) == 2:
        new = (shape[0] * shape[1],)
    elif leaf == "kernel" and len(shape) == 4:
        kh, kw, cin, cout = shape
        new = (cout, cin, kh, kw)
    elif leaf == "kernel" and len(shape) == 2:
        new = (shape[1], shape[0])
    else:
        new = shape
    assert np.prod(new, dtype=np.int64) == np.prod(shape, dtype=np.int64), (path, shape, new)
    return new


def count(shapes: Shapes) -> int:
    """Number of parameters in a shape list."""
    return int(sum(np.prod(s, dtype=np.int64) for _, s in shapes))
