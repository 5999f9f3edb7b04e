"""DomainNet, CLIP ResNet-50, FTP with SGD on 10% of the real training split.

Command::

    python -m ftp_jax.recipes --config experiments/configs/domainnet_ftp_sgd_10pct.py \
        --data_dir DATA_DIR --weights RN50.pt --workdir runs/domainnet_ftp_sgd_10pct

Expected result: not run in this project (no DomainNet data or GPU here); the
reference's low-label runs show FTP's OOD advantage over vanilla growing as the
labelled fraction shrinks. Numbers land in ``runs/.../recipe_result.json``.
"""

from ftp_jax.recipes import domainnet


def get_config():
    return domainnet("ftp_sgd", percent=10)
