"""A tiny fine-tuning problem for the loop's tests; also runnable as a script.

``python -m tests.tiny_fit WORKDIR METHOD`` runs ``fit`` on it, slowly (used by
the tests that kill a run with a signal and resume it).
"""

from __future__ import annotations

import sys
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ftp_jax.train import MethodConfig, TrainConfig, fit
from ftp_jax.train.loop import ArrayTrainData, EvalSet


class TinyNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.head = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.head(jnp.tanh(self.norm(self.body(x))))


def data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(300, 2, 2, 2)).astype(np.float32)
    labels = np.argmax(images.reshape(300, -1) @ rng.normal(size=(8, 3)), -1).astype(np.int32)
    train = ArrayTrainData(images[:200], labels[:200], 16)
    validation = EvalSet("val", images[200:250], labels[200:250])
    test = EvalSet("test", images[250:], labels[250:])
    return train, validation, [test]


def config(method: str, **overrides) -> TrainConfig:
    kwargs = dict(epochs=3, batch_size=16, checkpoint_every=4, progress=False)
    kwargs.update(overrides)
    return TrainConfig(method=MethodConfig(name=method, learning_rate=0.05), **kwargs)


def run(workdir, method: str, stop_after_steps=None, **overrides):
    train, validation, tests = data()
    return fit(
        TinyNet(nnx.Rngs(0)),
        config(method, **overrides),
        train,
        validation,
        tests,
        workdir,
        stop_after_steps=stop_after_steps,
    )


class SlowTrainData(ArrayTrainData):
    """Pauses before each batch, so that a test can kill the run mid-way."""

    def batches(self, seed, epoch, start):
        for batch in super().batches(seed, epoch, start):
            time.sleep(0.1)
            yield batch


if __name__ == "__main__":
    workdir, method = sys.argv[1], sys.argv[2]
    train, validation, tests = data()
    slow = SlowTrainData(train.images, train.labels, train.batch_size)
    fit(TinyNet(nnx.Rngs(0)), config(method), slow, validation, tests, workdir)
