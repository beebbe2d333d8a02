"""A fixed orthonormal basis P (k x d) over a flow's latents, fitted on PUBLIC training latents.

``subspace`` and ``label_channel`` releases privatize a = P u (k numbers) instead of the d-element
latent u, and redraw the orthogonal complement (I - P^T P) u from the prior: under u ~ N(0, I_d)
the two parts are independent, so the redraw is an exact sample of the unreleased part and costs
no privacy.

Kinds (``basis.kind``):

- ``supervised``: one direction per pathology that has at least ``min_count`` positive and
  negative training labels, the Fisher discriminant (LDA) w = (S + lambda I)^-1 (mu_1 - mu_0) with
  S the pooled within-class covariance shrunk towards a multiple of I, ordered by training
  ROC-AUC (best first) and orthonormalised in that order (Gram-Schmidt via QR), each signed so
  that positives project higher;
- ``pca``: the top principal directions of the training latents;
- ``supervised+pca``: the supervised directions first, principal directions of the training
  latents' orthogonal complement filling up to k;
- ``energy``: the directions that move the decoded image most (the top eigenvectors of the
  decoder's E[J^T J] over public images, :mod:`dpglow.privatizers.energy`): the detail
  channel's basis. It needs the flow, so :func:`~dpglow.privatizers.fit.fit_and_save` fits it.

The file also keeps the raw LDA probes (w, threshold: the equal-covariance Gaussian Bayes rule
with the training class frequencies) for the probe labeler, and the training projections
A = U P^T with their labels: the public empirical prior used by posterior post-processing.
Everything here is a function of public training data only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dpglow.flow import file_sha256
from dpglow.privatizers.latents import resolve_levels
from dpglow.utils.discovery import run_folder
from dpglow.utils.files import atomic_save

KINDS = ("supervised", "pca", "supervised+pca", "energy")
BASIS_FORMAT = 1


class BasisError(ValueError):
    """A basis that cannot be fitted with these settings, or a file that does not fit the flow."""


@dataclass
class Basis:
    """``matrix`` [k, d] with orthonormal rows over the flat latents of ``levels``."""

    matrix: torch.Tensor
    kind: str
    levels: list[int]
    directions: list[str]  # per row: a pathology name or "pc<i>"
    flow_sha256: str
    train_projections: torch.Tensor  # [N, k]: public training latents projected
    train_labels: torch.Tensor  # [N, P] NaN = unknown
    pathologies: list[str]
    probes: torch.Tensor  # [m, d] raw LDA directions (unit norm), one per probed pathology
    probe_thresholds: torch.Tensor  # [m]
    probe_pathologies: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""

    @property
    def k(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def d(self) -> int:
        return int(self.matrix.shape[1])

    def save(self, path: str | Path) -> Path:
        """Write atomically (:func:`~dpglow.utils.files.atomic_save`); returns the path.
        Loadable with ``weights_only=True``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": BASIS_FORMAT,
            "matrix": self.matrix.float().contiguous(),
            "kind": self.kind,
            "levels": list(self.levels),
            "directions": list(self.directions),
            "flow_sha256": self.flow_sha256,
            "train_projections": self.train_projections.float().contiguous(),
            "train_labels": self.train_labels.float().contiguous(),
            "pathologies": list(self.pathologies),
            "probes": self.probes.float().contiguous(),
            "probe_thresholds": self.probe_thresholds.float().contiguous(),
            "probe_pathologies": list(self.probe_pathologies),
            "meta": dict(self.meta),
        }
        atomic_save(payload, path)
        self.sha256, self.path = file_sha256(path), str(path.resolve())
        return path


def basis_file(flow_path: str | Path, *, kind: str, k: int, levels: list[int]) -> Path:
    """Where ``fit_basis.py`` saves a basis for a flow: ``<run>/bases/<ckpt>-<kind>-k<k>-l<levels>
    .pt`` in the flow's run folder, named by the checkpoint file."""
    tag = "-".join(map(str, levels))
    return run_folder(flow_path) / "bases" / f"{Path(flow_path).stem}-{kind}-k{k}-l{tag}.pt"


def load_basis(path: str | Path, *, flow_sha256: str | None = None) -> Basis:
    """Read a basis file; with ``flow_sha256``, refuse one fitted on another flow."""
    path = Path(path)
    if not path.is_file():
        raise BasisError(f"no basis file {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != BASIS_FORMAT:
        raise BasisError(f"{path} is not a dpglow basis file (format {BASIS_FORMAT})")
    if flow_sha256 is not None and payload["flow_sha256"] != flow_sha256:
        raise BasisError(
            f"{path} was fitted on another flow checkpoint (sha256 {payload['flow_sha256'][:12]}, "
            f"this flow {flow_sha256[:12]}): refit it with `python src/fit_basis.py`"
        )
    fields = {k: v for k, v in payload.items() if k != "format"}
    return Basis(**fields, sha256=file_sha256(path), path=str(path.resolve()))


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC-AUC by ranks (ties averaged), labels in {0, 1}."""
    ranks = torch.empty_like(scores)
    order = scores.argsort()
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    values, counts = scores.unique(return_counts=True)
    for value in values[counts > 1]:
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    pos = labels > 0.5
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fisher_probe(
    latents: torch.Tensor, labels: torch.Tensor, *, shrinkage: float = 0.1
) -> tuple[torch.Tensor, float, float]:
    """LDA direction (unit norm, positives project higher), its Bayes threshold and training AUC.

    ``latents`` [n, d] float64 with known binary ``labels`` [n]. The pooled within-class
    covariance S is shrunk: (1 - s) S + s (tr S / d) I. The threshold is the equal-covariance
    Gaussian rule on the projection: (m1 + m0) / 2 - v log(pi1 / pi0) / (m1 - m0), with m the
    class means, v the pooled variance of the projection and pi the class frequencies.
    """
    pos = labels > 0.5
    x1, x0 = latents[pos], latents[~pos]
    mu1, mu0 = x1.mean(0), x0.mean(0)
    centred = torch.cat([x1 - mu1, x0 - mu0])
    cov = centred.T @ centred / max(len(centred) - 2, 1)
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * (cov.diagonal().sum() / d) * torch.eye(
        d, dtype=cov.dtype
    )
    w = torch.linalg.solve(cov, mu1 - mu0)
    w = w / w.norm()
    a1, a0 = x1 @ w, x0 @ w
    m1, m0 = float(a1.mean()), float(a0.mean())
    var = float(torch.cat([a1 - m1, a0 - m0]).pow(2).mean())
    prior1 = len(x1) / len(latents)
    threshold = (m1 + m0) / 2 - var * math.log(prior1 / (1 - prior1)) / (m1 - m0)
    return w, threshold, _auc(latents @ w, labels)


def principal_directions(latents: torch.Tensor, k: int) -> torch.Tensor:
    """The top-``k`` principal directions [k, d] of ``latents`` (covariance about the mean)."""
    centred = latents - latents.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:k]


def _probes(u, labels, pathologies, min_count: int, shrinkage: float):
    """A Fisher probe per pathology with ``min_count`` known positives and negatives:
    (directions, thresholds, names, training AUCs)."""
    probes, thresholds, names, aucs = [], [], [], []
    for j, name in enumerate(pathologies):
        known = ~torch.isnan(labels[:, j])
        y = labels[known, j]
        if int((y > 0.5).sum()) < min_count or int((y < 0.5).sum()) < min_count:
            continue
        w, t, auc = fisher_probe(u[known], y, shrinkage=shrinkage)
        probes.append(w), thresholds.append(t), names.append(name), aucs.append(auc)
    return probes, thresholds, names, aucs


def _supervised_rows(kind, k, probes, names, aucs, min_count: int, d: int):
    """The orthonormal supervised rows (the best ``k`` probes by training AUC, signed so that
    positives project higher) and their names; none for ``kind=pca``."""
    order = sorted(range(len(names)), key=lambda i: -aucs[i])
    if kind == "pca":
        return torch.zeros(0, d, dtype=torch.float64), []
    if not order:
        raise BasisError(
            f"no pathology has {min_count} positive and negative training labels: use "
            "basis.kind=pca"
        )
    chosen = order[:k]
    if kind == "supervised" and len(order) < k:
        raise BasisError(
            f"basis.kind=supervised gives {len(order)} direction(s) here ({names}), k={k}: "
            "use basis.kind=supervised+pca to fill up with principal directions"
        )
    q, _ = torch.linalg.qr(torch.stack([probes[i] for i in chosen]).T)
    rows = q.T.contiguous()
    for r, i in enumerate(chosen):  # positives project higher on every supervised row
        if float(rows[r] @ probes[i]) < 0:
            rows[r] = -rows[r]
    return rows, [names[i] for i in chosen]


def fit_basis(
    latents: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str,
    k: int,
    pathologies: list[str],
    levels: list[int],
    flow_sha256: str,
    min_count: int = 20,
    shrinkage: float = 0.1,
) -> Basis:
    """Fit a :class:`Basis` on public training ``latents`` [N, d] with ``labels`` [N, P]."""
    if kind not in KINDS:
        raise BasisError(f"basis.kind must be one of {KINDS}, got {kind!r}")
    if kind == "energy":
        raise BasisError("basis.kind=energy needs the flow: fit it with fit.fit_and_save")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= latents.shape[1]:
        raise BasisError(f"basis.k must be an int in [1, d={latents.shape[1]}], got {k!r}")
    u = latents.double()
    probes, thresholds, names, aucs = _probes(u, labels, pathologies, min_count, shrinkage)
    rows, directions = _supervised_rows(kind, k, probes, names, aucs, min_count, u.shape[1])
    if len(directions) < k:
        residual = u - (u @ rows.T) @ rows
        extra = principal_directions(residual, k - len(directions))
        extra = extra - (extra @ rows.T) @ rows  # exactly orthogonal to the supervised rows
        rows = torch.cat([rows, torch.linalg.qr(extra.T)[0].T])
        directions += [f"pc{i}" for i in range(len(extra))]
    return Basis(
        matrix=rows.float(),
        kind=kind,
        levels=list(levels),
        directions=directions,
        flow_sha256=flow_sha256,
        train_projections=(u @ rows.T).float(),
        train_labels=labels.float(),
        pathologies=list(pathologies),
        probes=torch.stack(probes).float() if probes else torch.zeros(0, u.shape[1]),
        probe_thresholds=torch.tensor(thresholds, dtype=torch.float32),
        probe_pathologies=names,
        meta={
            "n_train": len(u),
            "min_count": min_count,
            "shrinkage": shrinkage,
            "probe_train_auc": dict(zip(names, aucs, strict=True)),
        },
    )


def energy_basis(
    rows: torch.Tensor,
    eigenvalues: torch.Tensor,
    latents: torch.Tensor,
    labels: torch.Tensor,
    *,
    pathologies: list[str],
    levels: list[int],
    flow_sha256: str,
    images: int,
) -> Basis:
    """The ``energy`` :class:`Basis`: ``rows`` [k, d] (orthonormal, largest image energy first,
    see :mod:`dpglow.privatizers.energy`) over the public training ``latents`` [N, d] of
    ``levels``, with the eigenvalues and the number of images they were estimated from."""
    return Basis(
        matrix=rows.float(),
        kind="energy",
        levels=list(levels),
        directions=[f"e{i}" for i in range(len(rows))],
        flow_sha256=flow_sha256,
        train_projections=(latents.double() @ rows.double().T).float(),
        train_labels=labels.float(),
        pathologies=list(pathologies),
        probes=torch.zeros(0, rows.shape[1]),
        probe_thresholds=torch.zeros(0),
        probe_pathologies=[],
        meta={
            "n_train": len(latents),
            "energy_images": images,
            "eigenvalues": [float(v) for v in eigenvalues],
            "probe_train_auc": {},
        },
    )


def configured_basis(spec: Any, flow: Any, flow_info: Any) -> Basis:
    """The basis a privacy config's ``basis`` node names for ``flow``: ``spec.path``, else the
    file ``fit_basis.py`` saves beside the flow's checkpoint; refused (:class:`BasisError`,
    saying how to fit one) when it is missing or fitted for other settings or another flow."""
    levels = resolve_levels(spec.get("levels", "coarsest"), len(flow.levels))
    path = spec.get("path")
    sha = (flow_info or {}).get("sha256")
    if not path:
        if not flow_info or not flow_info.get("path"):
            raise BasisError("privacy.basis.path is required without a flow checkpoint path")
        path = basis_file(flow_info["path"], kind=spec["kind"], k=int(spec["k"]), levels=levels)
    if not Path(path).is_file():
        raise BasisError(
            f"no fitted basis at {path}: fit it on the flow's training split with `python "
            f"src/fit_basis.py flow.ckpt_path={(flow_info or {}).get('path', '<ckpt>')} "
            f"basis.kind={spec['kind']} basis.k={spec['k']} basis.levels={spec.get('levels')}`"
        )
    basis = load_basis(path, flow_sha256=sha)
    d = sum(math.prod(flow.latent_shapes[i]) for i in levels)
    # an energy basis holds at most one direction per latent element
    k = min(int(spec["k"]), d) if spec["kind"] == "energy" else int(spec["k"])
    if basis.levels != levels or basis.kind != spec["kind"] or basis.k != k:
        raise BasisError(
            f"{path} holds kind={basis.kind} k={basis.k} levels={basis.levels}, not the "
            f"configured kind={spec['kind']} k={spec['k']} levels={levels}"
        )
    if basis.d != d:
        raise BasisError(f"{path} spans d={basis.d} latent elements, these levels have {d}")
    return basis
