"""Where the data lives, and the errors that tell a user how to point dpglow at it."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

DATA_DIR_ENV = "DPGLOW_DATA_DIR"
# Returned by the OmegaConf resolver when no data folder exists, so that a config still
# composes (e.g. for MedMNIST with an explicit data.root) and a missing root fails later
# with an actionable message instead of at config time.
NO_DATA_DIR = "<no-data-dir>"

# src/dpglow/data/paths.py -> parents[3] is the repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root (or the images it should hold) does not exist."""


class DataFormatError(ValueError):
    """A label file lacks expected columns, or an image file cannot be decoded."""


def default_data_dir() -> Path | None:
    """Return ``$DPGLOW_DATA_DIR`` if set, else the first existing ``shared/data`` folder.

    Candidates in order: ``<repo>/../shared/data``, ``<cwd>/../shared/data``,
    ``<cwd>/shared/data``. Returns None when none exists.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cwd = Path.cwd()
    for candidate in (
        REPO_ROOT.parent / "shared" / "data",
        cwd.parent / "shared" / "data",
        cwd / "shared" / "data",
    ):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _resolve_data_dir() -> str:
    found = default_data_dir()
    return NO_DATA_DIR if found is None else str(found)


def project_root() -> Path:
    """The checkout holding ``conf/`` when dpglow runs from its source tree, else the cwd."""
    if (REPO_ROOT / "conf" / "train.yaml").is_file() and (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT
    return Path.cwd()


def register_resolvers() -> None:
    """Register the resolvers of ``conf/paths``: ``${dpglow_data_dir:}`` (:func:`default_data_dir`)
    and ``${dpglow_root:}`` (:func:`project_root`). Idempotent."""
    OmegaConf.register_new_resolver("dpglow_data_dir", _resolve_data_dir, replace=True)
    OmegaConf.register_new_resolver(
        "dpglow_root", lambda: str(project_root()), replace=True, use_cache=True
    )


def not_found_message(root: str | os.PathLike[str], what: str = "dataset root") -> str:
    """Explain which path was tried and every way to point dpglow at the data."""
    root_s = str(root)
    if NO_DATA_DIR in root_s:
        tried = (
            f"No data folder was found: ${DATA_DIR_ENV} is not set and none of "
            f"{REPO_ROOT.parent / 'shared' / 'data'}, <cwd>/../shared/data, <cwd>/shared/data "
            f"exists (data.root resolved to {root_s!r})."
        )
    else:
        tried = f"The {what} {root_s!r} does not exist."
    return (
        f"{tried}\nPoint dpglow at your data in one of these ways:\n"
        f"  - on the command line: data.root=/path/to/dataset_folder\n"
        f"  - or set the parent of all dataset folders: paths.data_dir=/path/to/data\n"
        f"  - or in the shell: export {DATA_DIR_ENV}=/path/to/data\n"
        f"Without local data, `data=chestmnist data.download=true` or "
        f"`data=pneumoniamnist data.download=true` downloads a public MedMNIST set (ChestMNIST is "
        f"from NIH ChestX-ray14, PneumoniaMNIST from the pediatric set; internet needed once)."
    )


def require_dir(root: str | os.PathLike[str], what: str = "dataset root") -> Path:
    """Return ``root`` as a Path, or raise DatasetNotFoundError with instructions."""
    if root is None or NO_DATA_DIR in str(root) or not Path(root).expanduser().is_dir():
        raise DatasetNotFoundError(not_found_message(root, what))
    return Path(root).expanduser()
