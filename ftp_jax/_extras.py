"""Optional dependencies: a clear error naming the extra to install."""

from __future__ import annotations

import importlib.util

__all__ = ["require_extra"]

# What each extra of pyproject.toml provides, by import name.
EXTRAS = {
    "train": (
        "flax",
        "orbax.checkpoint",
        "tensorflow_datasets",
        "grain",
        "PIL",
        "tqdm",
        "safetensors",
    ),
    "experiments": ("mlxtend", "sklearn", "matplotlib"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing
        return False


def require_extra(extra: str, package: str) -> None:
    """Raises an ImportError naming ``extra`` if one of its modules is not installed.

    Called at the top of the subpackages that need more than the core (jax, optax,
    numpy), so that ``import ftp_jax.train`` without the extra says what to
    install instead of failing deep inside an import chain.
    """
    needed = EXTRAS["train"] + (EXTRAS["experiments"] if extra == "experiments" else ())
    missing = [module for module in needed if not _installed(module)]
    if missing:
        raise ImportError(
            f"{package} needs the '{extra}' extra of ftp_jax, which is not installed "
            f"(missing: {', '.join(missing)}). Install it with: pip install 'ftp_jax[{extra}]' "
            f"(from a clone: pip install -e '.[{extra}]'). The core, `import ftp_jax` (FTP, "
            "TPGM and the peer methods as Optax transforms), needs only jax, optax and numpy."
        )
