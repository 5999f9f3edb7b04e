"""The default experiment: pre-train across digit renditions, fine-tune on one, test on the others.

Command (from the repository root, after the README's install)::

    .venv/bin/python -m ftp_jax.experiment \
        --config experiments/configs/renditions.py --workdir runs/renditions

(``--config`` and ``--workdir`` can be left out: this is the default.) Six
renditions of the digits 0-9 are built offline from data inside PyPI packages
(``ftp_jax.data._renditions``): ``hand``, ``mnistm``, ``uci``, ``print``,
``photo``, ``outline``. A small CNN (RGB input) is pre-trained on the five that
are not ``photo`` (cached in ``runs/renditions/pretrain``), then fine-tuned
with a new head on 100% and on 10% of ``photo`` train (the DomainNet protocol
of FTP and TPGM: ``photo`` is the analogue of DomainNet-real), best epoch on
``photo`` validation, 3 seeds: vanilla, linear probe, LP-FT, L2-SP, MARS-PGM,
SPD, FTP, TPGM (SGD), vanilla and FTP (AdamW), vanilla from the pre-trained
head; WiSE-FT of both vanilla (SGD) rows. FTP and TPGM run their published
defaults; the peers' main hyper-parameter (and WiSE-FT's alpha) is chosen on
``photo`` validation from a grid of three, tried on seed 0. ID = ``photo``
test; OOD = the five other renditions' test splits. Writes
``runs/renditions/results/{results.md,results.json,*.png}``.

Expected result: the committed run, ``experiments/results/renditions/results.md``
(the README's "Default experiment" section has the table and what it shows).
"""

from ftp_jax.experiment.config import renditions_config


def get_config():
    return renditions_config()
