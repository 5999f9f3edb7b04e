"""DomainNet, CLIP ResNet-50: the reference's `vanilla` run (train on real, test on 4 domains).

Command (data prepared with TFDS in DATA_DIR, CLIP's RN50 weights as a PyTorch file)::

    python -m ftp_jax.recipes --config experiments/configs/domainnet_vanilla.py \
        --data_dir DATA_DIR --weights RN50.pt --workdir runs/domainnet_vanilla

For MoCo-v3's torchvision-layout ResNet-50, write a config whose ``get_config``
returns ``ftp_jax.recipes.domainnet("vanilla", model="torchvision_resnet50")``.

Expected result: not run in this project (no DomainNet data or GPU here); the
reference reports FTP and TPGM above vanilla fine-tuning in OOD average
(mean over sketch, painting, infograph, clipart) at similar ID accuracy. The
numbers of a run land in ``runs/domainnet_vanilla/recipe_result.json``.
"""

from ftp_jax.recipes import domainnet


def get_config():
    return domainnet("vanilla")
