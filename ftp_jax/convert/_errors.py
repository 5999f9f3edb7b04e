"""The converter's error for checkpoints that do not fit the model.

In a module of its own so that every step of the conversion (reading shards,
renaming keys, resampling positional embeddings, mapping tensors) raises the
same class without import cycles; :mod:`ftp_jax.convert` re-exports it.
"""

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: a missing tensor, a shape, a prefix, a shard."""
