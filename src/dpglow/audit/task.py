"""``audit(cfg)``: the end-to-end black-box privacy audit of a release (the plain function behind
``src/audit.py``; docs/method.md, "What the audit shows").

Two inputs as far apart as the mechanism allows (:mod:`dpglow.audit.pairs`) are each released
``audit.runs`` times through the real ``privatize`` path (the file reader, the labeler, every
mechanism with fresh OS-entropy noise, post-processing, rendering, decoding, 8-bit quantisation
and the PNG writer), each copy in a batch beside public filler images, and read back from the
PNG files. A distinguishing event chosen on half of the runs is counted on the other half
(:mod:`dpglow.audit.attack`): its Clopper-Pearson bound is a lower bound on the epsilon the
released files actually have, at confidence ``audit.confidence``. The report puts the claim
beside it; a bound above the claim is a privacy bug.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from dpglow.audit.attack import held_out_bound
from dpglow.audit.pairs import choose_pair
from dpglow.data.subsets import load_split
from dpglow.privatizers.labelers import fill_dataset_source
from dpglow.release.task import build_release, privatize
from dpglow.utils.files import atomic_write_text
from dpglow.utils.tables import markdown_table

log = logging.getLogger(__name__)

REPORT_JSON = "audit_report.json"
REPORT_MD = "audit_report.md"
LABEL_TABLE = "labels.csv"


def _write_inputs(
    folder: Path,
    image: torch.Tensor,
    fillers: torch.Tensor,
    runs: int,
    per_run: int,
    labels: dict[str, Any] | None = None,
    side: str = "a",
) -> None:
    """``runs`` copies of ``image``, each followed by ``per_run`` filler images (sorted names
    interleave them), so that every batch of the release holds both: with ``per_run`` =
    batch size - 1, each batch holds one copy beside quiet fillers, the layout that exposes a
    clip or a normalisation over the batch. With ``labels`` (a dataset labeler's pair), the
    folder's label table ``labels.csv`` (:class:`~dpglow.data.TableSource`) gives every copy
    the labels of the audited image (``labels[side]``) and every filler its own."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = image[0, 0].numpy()
    rows = []
    for r in range(runs):
        Image.fromarray(pixels).save(folder / f"{r:06d}_a.png")
        if labels is not None:
            rows.append((f"{r:06d}_a.png", labels[side][0]))
        for j in range(per_run if len(fillers) else 0):
            k = (r * per_run + j) % len(fillers)
            Image.fromarray(fillers[k, 0].numpy()).save(folder / f"{r:06d}_f{j:03d}.png")
            if labels is not None:
                rows.append((f"{r:06d}_f{j:03d}.png", labels["fillers"][k]))
    if labels is not None:
        cell = lambda v: "" if math.isnan(float(v)) else str(int(v))  # noqa: E731
        lines = [",".join(["path", *labels["names"]])]
        lines += [",".join([name, *(cell(v) for v in row)]) for name, row in rows]
        atomic_write_text(folder / LABEL_TABLE, "\n".join(lines) + "\n")


def _read_releases(folder: Path, runs: int) -> torch.Tensor:
    arrays = [np.asarray(Image.open(folder / f"{r:06d}_a.png")) for r in range(runs)]
    return torch.from_numpy(np.stack(arrays))[:, None]


def _release(cfg: DictConfig, side: str, pair, out: Path) -> torch.Tensor:
    """``audit.runs`` releases of the pair's ``side`` through ``privatize``, read back from the
    PNGs (a dataset labeler reads the labels from the inputs' own label table)."""
    runs = int(cfg.audit.runs)
    inputs, release = out / side / "inputs", out / side / "release"
    image = getattr(pair, side)
    per_run = int(cfg.audit.fillers_per_run)
    _write_inputs(inputs, image, pair.fillers, runs, per_run, pair.labels, side)
    side_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(side_cfg):
        side_cfg.input_dir, side_cfg.output_dir = str(inputs), str(release)
        if pair.labels is not None:
            side_cfg.privacy.labeler.source = {
                "_target_": "dpglow.data.TableSource",
                "root": str(inputs),
                "csv": LABEL_TABLE,
                "pathologies": pair.labels["names"],
            }
    counts, _ = privatize(side_cfg)
    if counts["failed"]:
        raise RuntimeError(f"{counts['failed']} audit inputs failed to privatize; see {release}")
    return _read_releases(release, runs)


def _markdown(report: dict[str, Any]) -> str:
    rows = [
        {
            "privatizer": report["privatizer"]["mechanism"],
            "claimed epsilon": report["claimed_epsilon"],
            "lower bound": report["epsilon_lower_bound"],
            "runs per input": report["runs"],
            "confidence": report["confidence"],
            "separation": report["pair"].get("separation"),
            "statistic": report["attack"].get("statistic"),
        }
    ]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    table = markdown_table(rows, columns=list(rows[0]), fmt=fmt)
    verdict = "within its claim" if report["within_claim"] else "ABOVE ITS CLAIM: a privacy bug"
    return f"# Privacy audit\n\n{table}\n\nThe lower bound is {verdict}.\n"


def audit(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Audit ``cfg.privacy`` at ``cfg.epsilon``; writes the report into the run folder."""
    out = Path(cfg.paths.output_dir)
    fill_dataset_source(cfg)  # the audited data's own label table
    privatizer, image_size, checkpoint = build_release(cfg)
    public = load_split(cfg, image_size=image_size, split="train", limit=cfg.audit.candidates)
    names = getattr(getattr(privatizer, "inner", privatizer), "label_names", [])
    labels = None
    if names and all(n in public.pathologies for n in names):
        labels = public.labels[:, [public.pathologies.index(n) for n in names]]
    pair = choose_pair(privatizer, public.images, fillers=int(cfg.audit.fillers), labels=labels)
    log.info("audit pair: %s", pair.description)
    releases = {side: _release(cfg, side, pair, out) for side in ("a", "b")}
    alpha = 1.0 - float(cfg.audit.confidence)
    result = held_out_bound(releases["a"], releases["b"], pair.statistics, alpha=alpha)
    record = privatizer.record(noise_source="os_entropy")
    claimed = float(record.epsilon_per_image)
    report = {
        "claimed_epsilon": claimed,
        "delta": record.delta,
        "epsilon_lower_bound": result["epsilon_lower_bound"],
        "within_claim": result["epsilon_lower_bound"] <= claimed or math.isinf(claimed),
        "runs": int(cfg.audit.runs),
        "confidence": float(cfg.audit.confidence),
        "pair": pair.description,
        "attack": result,
        "privatizer": privatizer.describe(),
        "record": record.as_dict(),
        "flow_sha256": checkpoint["sha256"] if checkpoint else None,
        "noise_seed": cfg.get("noise_seed"),
    }
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2, default=str))
    atomic_write_text(out / REPORT_MD, _markdown(report))
    log.info(
        "audit of %s: claimed epsilon %.4g, lower bound %.4g at confidence %.4g from %d runs "
        "per input (statistic %s)",
        privatizer.name, claimed, report["epsilon_lower_bound"], report["confidence"],
        report["runs"], result.get("statistic"),
    )  # fmt: skip
    return report, {"releases": releases, "pair": pair}
