"""What a run reports about itself beyond accuracy: FTP's pinned leaves, TensorBoard events.

- :func:`pinned_leaves`: the constrained leaves whose learned radius has sat at
  its floor for a large share of the epochs so far. FTP's radius is clipped to
  ``1e-8`` from below; a leaf held there is projected back onto its pre-trained
  value after every step, as if it were frozen, and FTP then behaves like a
  linear probe that also trains the other leaves. ``fit`` warns once when it
  happens (naming the leaves and the step) and the report lists them.
- :func:`radius_gradient_sums` and :func:`radius_gradient_record`: the per-epoch
  mean of FTP's radius gradient ``h_t`` per leaf (:func:`ftp_jax.radius_gradients`)
  and the share of steps where it was positive (a positive ``h_t`` shrinks the
  radius), when ``TrainConfig.log_radius_gradients`` is on.
- :class:`EventLog`: the epoch records as TensorBoard event files in
  ``<workdir>/tensorboard`` (tensorboardX; ``tensorboard --logdir runs/`` shows
  every run), the steps after a resumed run's checkpoint purged.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

__all__ = [
    "PINNED_RADIUS",
    "PINNED_SHARE",
    "EventLog",
    "pinned_leaves",
    "pinned_message",
    "radius_gradient_record",
    "radius_gradient_sums",
]

# A radius at most this is at FTP's floor (1e-8), up to float32 rounding and the last steps.
PINNED_RADIUS = 1e-6
# A leaf is pinned when its radius sat at the floor at the end of at least this share of
# the epochs so far (and of at least two epochs).
PINNED_SHARE = 0.5


def pinned_leaves(history: list[dict[str, Any]]) -> dict[str, int]:
    """The leaves whose radius sat at the floor for ``PINNED_SHARE`` of the epochs so far.

    Args:
      history: the run's epoch records (each with ``radius``: leaf path -> radius,
        and ``step``).

    Returns:
      Leaf path -> the step of the first epoch end at which its radius was at the
      floor; empty for a method without radii, or before two epochs.
    """
    if len(history) < 2:
        return {}
    leaves = history[-1].get("radius") or {}
    pinned = {}
    for leaf in leaves:
        at_floor = [
            record["step"]
            for record in history
            if leaf in (record.get("radius") or {}) and record["radius"][leaf] <= PINNED_RADIUS
        ]
        if len(at_floor) >= 2 and len(at_floor) >= PINNED_SHARE * len(history):
            pinned[leaf] = at_floor[0]
    return pinned


def pinned_message(pinned: dict[str, int], method: str, epochs_seen: int) -> str:
    """The warning ``fit`` gives once when leaves are pinned."""
    names = ", ".join(f"{leaf} (from step {step})" for leaf, step in pinned.items())
    return (
        f"method {method!r} pins {len(pinned)} leaf/leaves at their pre-trained values: {names}. "
        f"Their learned radius has sat at its floor (<= {PINNED_RADIUS:g}) at the end of at "
        f"least {PINNED_SHARE:.0%} of the {epochs_seen} epochs so far, so every step is "
        "projected back onto the anchor, as if those layers were frozen. "
        + (
            "FTP's radius gradient is positive on average there; a smaller gradient "
            "annealing factor (method.options.k=0 or 0.1) lets the radius grow (see the FTP "
            "regime study in the documentation)."
            if method == "ftp"
            else "The method's radius update shrinks them: check its radius learning rate "
            "and held-out data."
        )
    )


def radius_gradient_sums(sums: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Adds one step's ``metrics["radius_gradient"]`` (leaf -> h_t) to the epoch's sums."""
    gradients = metrics.get("radius_gradient")
    if not gradients:
        return
    total = sums.setdefault("radius_gradient", {})
    positive = sums.setdefault("radius_gradient_positive", {})
    steps = sums.setdefault("radius_gradient_steps", {})
    for leaf, value in gradients.items():
        value = float(value)
        total[leaf] = total.get(leaf, 0.0) + value
        positive[leaf] = positive.get(leaf, 0) + int(value > 0)
        steps[leaf] = steps.get(leaf, 0) + int(value != 0)  # step 1 has no h_t (0)


def radius_gradient_record(sums: dict[str, Any]) -> dict[str, Any]:
    """The epoch record's ``radius_gradient`` (mean h_t per leaf over the steps that had
    one) and ``radius_gradient_positive`` (their share with h_t > 0); empty without."""
    steps = sums.get("radius_gradient_steps")
    if not steps:
        return {}
    total, positive = sums["radius_gradient"], sums["radius_gradient_positive"]
    return {
        "radius_gradient": {leaf: total[leaf] / max(n, 1) for leaf, n in steps.items()},
        "radius_gradient_positive": {leaf: positive[leaf] / max(n, 1) for leaf, n in steps.items()},
    }


class EventLog:
    """Epoch records as TensorBoard scalars in ``<workdir>/tensorboard``.

    Tags: ``train/loss``, ``train/accuracy``, ``validation/loss``,
    ``validation/accuracy``, ``radius/<leaf>``, ``distance/<leaf>`` and, when
    logged, ``radius_gradient/<leaf>`` and ``radius_gradient_positive/<leaf>``, at
    the record's training step. A resumed run purges the events after its
    checkpoint's step, so the curves show each step once.
    """

    def __init__(self, workdir: Path, resume_step: int | None, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(
            logdir=str(workdir / "tensorboard"),
            purge_step=None if resume_step is None else resume_step + 1,
            flush_secs=3600,
        )

    def epoch(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(record["step"])
        scalars = {
            "train/loss": record["train_loss"],
            "train/accuracy": record["train_accuracy"],
            "validation/loss": record["val_loss"],
            "validation/accuracy": record["val_accuracy"],
        }
        for group in ("radius", "distance", "radius_gradient", "radius_gradient_positive"):
            for leaf, value in (record.get(group) or {}).items():
                scalars[f"{group}/{leaf}"] = value
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            writer.close()
        except OSError:
            # A full disk: stop tensorboardX's writer thread and mark its files closed, or
            # its exit hook retries and prints tracebacks. The rerun writes these events
            # again (it purges past its checkpoint).
            for file_writer in (writer.all_writers or {}).values():
                events = file_writer.event_writer
                if getattr(events, "_worker", None) is not None:
                    with contextlib.suppress(Exception):
                        events._worker.stop()
                events._closed = True
            raise
