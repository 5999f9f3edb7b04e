"""FTP's regime study: k x batch size x schedule length, and why FTP's radii pin.

Command (from the repository root, after the README's install)::

    .venv/bin/python -m ftp_jax.experiment.regime_study \
        --config experiments/configs/ftp_regime.py --workdir runs/ftp_regime

Vanilla SGD and FTP (SGD) with k in {0, 0.1, 0.5, 1} fine-tune the default
experiment's pre-trained model on 100% of ``photo``: batch 64 for 4, 16 and 50
epochs, 16 epochs at batch 16 and 256, and batch 64 for 16 epochs without
momentum at lr 0.1 (vanilla, k=0 and k=1); seeds 0 and 1. The committed run,
its plots and the written findings are in ``experiments/results/ftp_regime/``.
"""

from ftp_jax.experiment.regime_study import default_study_config


def get_config():
    return default_study_config()
