"""The converter's error for checkpoints that do not fit the model.

In a module of its own, with the helper that lists examples in its messages, so
that every step of the conversion (reading shards, renaming keys, resampling
positional embeddings, mapping tensors) raises the same class without import
cycles; :mod:`ftp_jax.convert` re-exports it.
"""

__all__ = ["CheckpointError", "examples"]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: a missing tensor, a shape, a prefix, a shard."""


def examples(items, limit: int = 8) -> str:
    """The first ``limit`` items, repr'd, for an error message: ``'a', 'b', ... (12 in all)``."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:limit])
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return (shown + more) or "none"
