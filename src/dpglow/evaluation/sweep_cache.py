"""The keys of the tensors the jobs of one sweep share (:mod:`dpglow.utils.cache`).

The original images' classifier scores and embeddings are computed once per sweep, and a
privatized set is reused by every job that only changes the attacker or a metric: each is stored
under ``<sweep>/cache/<kind>/<key>.pt`` where ``key`` hashes everything that determines it.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from dpglow.data.subsets import LabelledImages, tensor_digest
from dpglow.utils.cache import key_of


def cache_keys(
    cfg: DictConfig, images: LabelledImages, clf_info: dict, flow, flow_info: dict, privatizer
) -> tuple[str, str]:
    """(key of the originals' scores and embeddings, key of the privatized set): each hashes
    everything its tensors depend on, so a sweep computes each once."""
    images_key = tensor_digest(images.images)
    # (The "p2" tag keeps caches written before that entry existed from being read.)
    originals = key_of([clf_info["sha256"], images_key, "p2"])
    noise_seed = cfg.get("noise_seed")
    private = key_of(
        {
            "flow": flow_info["sha256"] if privatizer.needs_flow else flow.image_size,
            "privatizer": privatizer.describe(),
            "privacy": OmegaConf.to_container(cfg.privacy, resolve=True),
            "noise_seed": noise_seed,
            # Seeded noise is drawn per fixed batch of the images.
            "noise": "per batch" if noise_seed is None else f"per batch of {cfg.eval.batch_size}",
            "images": images_key,
        }
    )
    return originals, private
