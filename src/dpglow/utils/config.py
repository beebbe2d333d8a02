"""OmegaConf resolvers used by conf/ (registered on import)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> Path:
    """The checkout holding ``conf/`` when dpglow runs from its source tree, else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "train.yaml").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def register_resolvers() -> None:
    # Importing dpglow.data registers `dpglow_data_dir`.
    import dpglow.data  # noqa: F401

    OmegaConf.register_new_resolver(
        "dpglow_root", lambda: str(project_root()), replace=True, use_cache=True
    )


register_resolvers()
