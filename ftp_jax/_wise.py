"""WiSE-FT: interpolate the weights of the pre-trained and the fine-tuned model."""

from __future__ import annotations

from typing import Any

from ftp_jax._skeleton import MaskOrFn, check_nonnegative, given_anchor, leaf_plans, map_leaves

__all__ = ["wise_ft"]

PyTree = Any


def wise_ft(
    anchor: PyTree,
    finetuned: PyTree,
    alpha: float,
    *,
    mask: MaskOrFn = None,
) -> PyTree:
    r"""WiSE-FT: the weight-space ensemble of a pre-trained and a fine-tuned model.

    Symbols: :math:`w_0` = ``anchor`` (pre-trained), :math:`w_{\text{ft}}` =
    ``finetuned``, :math:`\alpha` = ``alpha``.

    .. math::

      w_\alpha = (1 - \alpha)\, w_0 + \alpha\, w_{\text{ft}}
        \text{ on the leaves ``mask`` marks True}, \qquad
      w_\alpha = w_{\text{ft}} \text{ elsewhere}

    :math:`\alpha = 0` is the pre-trained model (with the fine-tuned values at the
    excluded leaves), :math:`\alpha = 1` the fine-tuned one. A pure function,
    jittable (``alpha`` may be traced, e.g. ``jax.vmap`` over a sweep).

    .. note::
      The reference interpolates the whole model, head included, because CLIP has
      a zero-shot head (built from class-name prompts) to interpolate with. A new
      head trained from a random initialization has no pre-trained value: exclude
      it with ``mask`` (False) and it keeps its fine-tuned value for every
      :math:`\alpha`, which is what the default experiment does. The anchor's
      values at excluded leaves are not read, so they may be ``None`` or a source
      head of another shape.

    Args:
      anchor: the pre-trained params (the params' structure; values at excluded
        leaves unread).
      finetuned: the fine-tuned params.
      alpha: :math:`\alpha \in [0, 1]`, the weight of the fine-tuned model.
      mask: which leaves are interpolated (True) or taken from ``finetuned``
        (False); a tree of bools or a function of the params, as in
        :func:`ftp_jax.ftp`. Default: every leaf (the reference).

    Returns:
      The interpolated params, with ``finetuned``'s structure and dtypes.

    Raises:
      ValueError: ``alpha`` outside ``[0, 1]``; a ``mask`` or ``anchor`` that does
        not fit ``finetuned`` (naming the leaf).

    Example:
      >>> import jax.numpy as jnp, ftp_jax
      >>> w0 = {"body": jnp.array([0.0, 2.0]), "head": None}
      >>> ft = {"body": jnp.array([4.0, 0.0]), "head": jnp.array([1.0])}
      >>> ftp_jax.wise_ft(w0, ft, 0.25, mask={"body": True, "head": False})
      {'body': Array([1. , 1.5], dtype=float32), 'head': Array([1.], dtype=float32)}

    References:
      Wortsman, Ilharco, Kim, Li, Kornblith, Roelofs, Gontijo-Lopes, Hajishirzi,
      Farhadi, Namkoong, Schmidt, "Robust fine-tuning of zero-shot models",
      CVPR 2022, arXiv:2109.01903.
    """
    check_nonnegative(
        "alpha", alpha, "wise_ft", upper=1.0, hint=" alpha is the fine-tuned model's weight."
    )
    plans = leaf_plans(finetuned, mask, None, method="WiSE-FT")
    (interpolated,) = map_leaves(
        lambda plan, finetuned, anchor: (
            ((1 - alpha) * anchor + alpha * finetuned).astype(finetuned.dtype),
        ),
        plans,
        finetuned,
        state={"anchor": given_anchor(finetuned, anchor, plans)},
        excluded_fn=lambda plan, finetuned, anchor: (finetuned,),
        method="WiSE-FT",
    )
    return interpolated
