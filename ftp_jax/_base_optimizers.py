"""The base optimizers of the references, built in one place.

The FTP shortcuts (:func:`ftp_jax.ftp_sgd`, :func:`ftp_jax.ftp_adamw`) and the
training loop (:mod:`ftp_jax.train.methods`) wrap the same two: SGD with momentum
and weight decay added to the gradient, as ``torch.optim.SGD`` (the reference's
``SGDP``), and AdamW with decoupled weight decay (``optax.adamw``, as
``torch.optim.AdamW``; the reference's ``AdamP``).
"""

from __future__ import annotations

import optax

__all__ = ["BASE_OPTIMIZERS", "torch_sgd"]

#: The base optimizers a run may choose (``MethodConfig.optimizer``).
BASE_OPTIMIZERS = ("sgd", "adamw")


def torch_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """SGD as ``torch.optim.SGD``: the weight decay is added to the gradient before momentum.

    ``optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate,
    momentum, nesterov))``; ``momentum=0`` is plain SGD (no momentum trace).
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
    )
