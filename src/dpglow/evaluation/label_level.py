"""Label-level evaluation of the label channel: no images, only NIH's label table.

Patients are split by a stated hash (:func:`patient_part`) into public-train, public-validation
and private. The label-set domain is fitted on public-train, its settings (rule, domain size K,
subset size s) are chosen per epsilon on public-validation, and the private part is reported: per
epsilon, the AUC retention (AUC - 0.5) / 0.5 of the posterior P(finding | release) against the
true label, per finding and its mean, for per-label randomized response at epsilon / m each (its
Bayes posterior under the public prevalences) and for :class:`~dpglow.privacy.LabelSetResponse`.
Nothing is chosen on the private part.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dpglow.data.paths import DataFormatError, DatasetNotFoundError, not_found_message
from dpglow.data.sources import NIH_PATHOLOGIES
from dpglow.data.sources.base import labels_from_findings, read_label_csv
from dpglow.metrics import auc_per_pathology, auc_retention, mean_auc
from dpglow.privacy import (
    LabelDomain,
    LabelSetResponse,
    PrivacyRecord,
    RandomizedResponse,
    fit_label_domain,
)
from dpglow.utils.tables import markdown_table

log = logging.getLogger(__name__)

PARTS = ("public_train", "public_validation", "private")
PER_LABEL, LABEL_SETS = "per_label_rr", "label_sets"


def read_nih_labels(path: str | Path) -> tuple[torch.Tensor, pd.Series]:
    """NIH's ``Data_Entry_2017*.csv(.gz)``: float64 [N, 14] 0/1 labels in ``NIH_PATHOLOGIES``
    order ("No Finding" is all 0) and the ``Patient ID`` of every row (str)."""
    path = Path(path)
    if not path.is_file():
        hint = "\n  - or name the file itself: labels_csv=/path/to/Data_Entry_2017_v2020.csv.gz"
        raise DatasetNotFoundError(not_found_message(path, "NIH label table") + hint)
    df = read_label_csv(path, ["Finding Labels", "Patient ID"])
    tokens = set(itertools.chain.from_iterable(df["Finding Labels"].fillna("").str.split("|")))
    unknown = tokens - {*NIH_PATHOLOGIES, "No Finding", ""}
    if unknown:
        raise DataFormatError(f"{path}: unknown findings {sorted(unknown)} in 'Finding Labels'")
    labels = labels_from_findings(df["Finding Labels"], NIH_PATHOLOGIES)
    return torch.tensor(labels.to_numpy(), dtype=torch.float64), df["Patient ID"].str.strip()


def patient_part(
    patient_id: str, *, seed: int, private_fraction: float, validation_fraction: float
) -> str:
    """The part of one patient: u = the first 8 bytes of SHA-256("<seed>:<patient_id>") as a
    big-endian integer / 2^64; "private" if u < private_fraction, else "public_validation" if
    u < private_fraction + (1 - private_fraction) validation_fraction, else "public_train"."""
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < private_fraction:
        return "private"
    if u < private_fraction + (1 - private_fraction) * validation_fraction:
        return "public_validation"
    return "public_train"


def split_patients(
    patient_ids: Iterable[str], *, seed: int, private_fraction: float, validation_fraction: float
) -> pd.DataFrame:
    """One row per distinct patient (sorted): ``patient_id`` and its ``part``."""
    fractions = {"private_fraction": private_fraction, "validation_fraction": validation_fraction}
    for name, value in fractions.items():
        if not 0 < value < 1:
            raise ValueError(f"split.{name} must lie in (0, 1), got {value}")
    patients = sorted(set(patient_ids))
    parts = [
        patient_part(
            p, seed=seed, private_fraction=private_fraction, validation_fraction=validation_fraction
        )
        for p in patients
    ]
    return pd.DataFrame({"patient_id": patients, "part": parts})


def retention(scores: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """Per finding (AUC - 0.5) / 0.5 of ``scores`` against ``labels`` (NaN: AUC undefined)."""
    aucs = auc_per_pathology(scores, labels, names)
    return auc_retention(aucs, dict.fromkeys(aucs, 1.0))


def per_label_scores(
    labels: torch.Tensor,
    *,
    epsilon: float,
    prevalence: Sequence[float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, PrivacyRecord]:
    """P(finding | release) of per-label randomized response at epsilon / m per label."""
    rr = RandomizedResponse(epsilon=epsilon, num_labels=labels.shape[1])
    noisy, record = rr(labels, generator=generator)
    return rr.posterior_positive(noisy, prior=list(prevalence)), record


def label_set_scores(
    domain: LabelDomain,
    labels: torch.Tensor,
    *,
    epsilon: float,
    subset_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, PrivacyRecord]:
    """P(finding | release) of :class:`LabelSetResponse` over a fitted domain."""
    mech = LabelSetResponse.from_domain(domain, epsilon=epsilon, subset_size=subset_size)
    noisy, record = mech(labels, generator=generator)
    return mech.posterior_findings(noisy), record


def select_settings(
    train: torch.Tensor,
    validation: torch.Tensor,
    *,
    epsilons: Sequence[float],
    rules: Sequence[str],
    sizes: Sequence[int],
    subset_sizes: Sequence[int],
    repeats: int,
    generator: torch.Generator,
    names: Sequence[str],
) -> tuple[list[dict[str, Any]], dict[float, dict[str, Any]]]:
    """Every (epsilon, rule, K, s) of the grid on the validation labels (a domain fitted on
    ``train``; mean retention over ``repeats`` releases), and per epsilon the best row.
    Subset sizes s >= K + 1 are skipped (nothing to choose)."""
    domains = {(r, k): fit_label_domain(train, size=k, rule=r) for r in rules for k in sizes}
    rows = []
    for eps, (rule, size), s in itertools.product(epsilons, domains, subset_sizes):
        domain = domains[rule, size]
        if s > domain.size:
            continue
        means = [
            mean_auc(
                retention(
                    label_set_scores(
                        domain, validation, epsilon=eps, subset_size=s, generator=generator
                    )[0],
                    validation,
                    names,
                )
            )
            for _ in range(repeats)
        ]
        row = {"epsilon": eps, "rule": rule, "domain_size": domain.size, "subset_size": s}
        rows.append({**row, "validation_retention": sum(means) / len(means)})
    best = {}
    for row in rows:
        if row["epsilon"] not in best or (
            row["validation_retention"] > best[row["epsilon"]]["validation_retention"]
        ):
            best[row["epsilon"]] = row
    return rows, best


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) and not math.isnan(value) else str(value)


def report_tables(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """Markdown: mean retention per epsilon (both mechanisms, the chosen settings), then per
    finding."""
    by = {(row["epsilon"], row["mechanism"]): row for row in rows}
    epsilons = sorted({row["epsilon"] for row in rows})
    summary = [
        {
            "epsilon": eps,
            "per-label RR": by[eps, PER_LABEL]["mean_retention"],
            "label sets": by[eps, LABEL_SETS]["mean_retention"],
            "rule": by[eps, LABEL_SETS]["rule"],
            "K": by[eps, LABEL_SETS]["domain_size"],
            "s": by[eps, LABEL_SETS]["subset_size"],
            "validation": by[eps, LABEL_SETS]["validation_retention"],
        }
        for eps in epsilons
    ]
    findings = [
        {
            "finding": name,
            **{
                f"{short} eps {eps:g}": by[eps, mech][name]
                for eps in epsilons
                for mech, short in ((PER_LABEL, "RR"), (LABEL_SETS, "sets"))
            },
        }
        for name in names
    ]
    return (
        markdown_table(summary, fmt=_cell)
        + "\n\nRetention per finding:\n\n"
        + markdown_table(findings, fmt=_cell)
    )


def label_level_rows(
    private: torch.Tensor,
    public_train: torch.Tensor,
    best: dict[float, dict[str, Any]],
    *,
    epsilons: Sequence[float],
    names: Sequence[str],
    generator: torch.Generator,
) -> list[dict[str, Any]]:
    """Per epsilon, one row for per-label randomized response and one for the label-set
    mechanism with the settings validation chose (``best``): the mean and per-finding retention
    on the ``private`` label vectors."""
    prevalence = public_train.mean(0).tolist()
    rows = []
    for eps in epsilons:
        chosen = best[eps]
        domain = fit_label_domain(public_train, size=chosen["domain_size"], rule=chosen["rule"])
        for mech in (PER_LABEL, LABEL_SETS):
            if mech == PER_LABEL:
                scores, record = per_label_scores(
                    private, epsilon=eps, prevalence=prevalence, generator=generator
                )
                settings = {"rule": "", "domain_size": "", "subset_size": "", "domain_sha256": ""}
                settings["validation_retention"] = ""
            else:
                scores, record = label_set_scores(
                    domain,
                    private,
                    epsilon=eps,
                    subset_size=chosen["subset_size"],
                    generator=generator,
                )
                settings = {**chosen, "domain_sha256": domain.domain_sha256}
                del settings["epsilon"]
            per_finding = retention(scores, private, names)
            rows.append(
                {
                    "epsilon": eps,
                    "mechanism": mech,
                    **settings,
                    "n": len(private),
                    "mean_retention": mean_auc(per_finding),
                    **per_finding,
                    "record_mechanism": record.mechanism,
                    "private": record.private,
                }
            )
    return rows
