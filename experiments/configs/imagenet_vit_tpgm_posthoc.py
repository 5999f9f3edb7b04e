"""ImageNet, CLIP ViT-B/16, fine-tuned with AdamW, then post-hoc TPGM (200 iterations, L2).

Command::

    python -m ftp_jax.recipes --config experiments/configs/imagenet_vit_tpgm_posthoc.py \
        --data_dir DATA_DIR --weights ViT-B-16.pt --workdir runs/imagenet_vit_tpgm

OOD average = mean over imagenet_v2, imagenet_a, imagenet_r, imagenet_sketch.
ImageNet-A and -R cover 200 of the 1000 classes and are scored on those 200
logits (``class_subsets``), as in their papers and the reference.
Expected result: not run in this project (no ImageNet or GPU here).
"""

from ftp_jax.recipes import imagenet_vit_posthoc


def get_config():
    return imagenet_vit_posthoc()
