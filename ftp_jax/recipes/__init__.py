"""Paper-scale recipes (DomainNet, ImageNet) as configs and a runner."""

from ftp_jax._extras import require_extra

require_extra("train", "ftp_jax.recipes")

from ftp_jax.recipes.config import RecipeConfig, domainnet, imagenet_vit_posthoc
from ftp_jax.recipes.run import build_model, run_recipe

__all__ = ["RecipeConfig", "build_model", "domainnet", "imagenet_vit_posthoc", "run_recipe"]
