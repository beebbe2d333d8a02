"""``manifest.csv``: one row per file under the input folder, matching what is on disk.

Rows are ``input, output, status, error``: status ``ok`` (the output exists), ``failed`` (with
the error) or ``skipped`` (with the reason). Ranks stream their rows to row files named with the
run's token while they work; :func:`reconcile` merges them with the previous manifest and the
folders as they are now, so a deleted input's row goes, and the exit status follows.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from dpglow.release.files import MANIFEST, check_token, is_done, iter_inputs, shown
from dpglow.utils.files import TEMP_PREFIX, TEXT, atomic_writer

log = logging.getLogger(__name__)

__all__ = ["MANIFEST", "MANIFEST_FIELDS", "read_manifest", "reconcile", "write_manifest"]
MANIFEST_FIELDS = ("input", "output", "status", "error")
STATUSES = ("ok", "failed", "skipped")
# The manifest in memory: input -> (output, status, error), a few hundred bytes per file (50,000
# files: ~15 MB); images are never held.
Rows = dict[str, tuple[str, str, str]]
_STATUSES = {s: s for s in STATUSES}  # one string object per status, not one per row
UNPROCESSED = "appeared while the run was going, so it was not privatized: re-run to do it"


def row(output: str, status: str, error: str) -> tuple[str, str, str]:
    return output, _STATUSES.get(status, status), error


def rows_path(output_dir: Path, rank: int, *, run_token: str) -> Path:
    """Where rank ``rank`` of run ``run_token`` streams its rows, one JSON object per line, and
    its privacy record last. Merged and removed when the run finishes; a run that was killed or
    failed while finishing leaves it, and the next run merges it."""
    return output_dir / f"{TEMP_PREFIX}{run_token}-rows{rank}.jsonl"


def read_manifest(path: Path) -> Rows:
    if not path.is_file():
        return {}
    with open(path, **TEXT) as fh:
        return {r["input"]: row(r["output"], r["status"], r["error"]) for r in csv.DictReader(fh)}


def write_manifest(path: Path, rows: Rows, *, run_token: str) -> None:
    with atomic_writer(path, token=check_token(run_token)) as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_FIELDS)
        for key in sorted(rows):
            writer.writerow((key, *rows[key]))


def merge_rows_file(path: Path, rows: Rows) -> tuple[int, dict[str, Any] | None]:
    """Add the rows one rank streamed to ``rows``; returns how many images it wrote and its
    privacy record (a line cut short by a kill is ignored)."""
    written, record = 0, None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a killed run
            if "record" in entry:
                record = entry["record"]
                continue
            rows[entry["input"]] = row(entry["output"], entry["status"], entry["error"])
            written += entry["status"] == "ok"
    return written, record


def stale_rows_files(dst: Path, run_tokens: list[str]) -> list[Path]:
    """Row files that earlier runs (``run_tokens``) left unmerged."""
    found = []
    for token in run_tokens:
        found.extend(sorted(dst.glob(f"{TEMP_PREFIX}{token}-rows*.jsonl")))
    return found


def reconcile(src: Path, dst: Path, rows: Rows, *, dicom_output: bool) -> list[str]:
    """Make ``rows`` (the previous manifest updated with this run's rows) describe the folders
    as they are now; returns the inputs whose rows were dropped.

    Every file under ``src`` gets a row: finished by an earlier (maybe killed) run -> ok, added
    during the run -> failed (re-run). A row whose input is gone is dropped, unless its output is
    still in the release: then it stays ``ok`` (the image was released under this folder's
    settings, and the manifest lists every output).
    """
    for entry in iter_inputs(src):
        if entry.input in rows:
            continue
        if entry.status != "pending":
            rows[entry.input] = row(entry.output, entry.status, entry.reason)
        elif is_done(dst, entry, dicom_output=dicom_output):
            rows[entry.input] = row(entry.output, "ok", "")
        else:
            rows[entry.input] = row(entry.output, "failed", UNPROCESSED)
    dropped, kept = [], 0
    for key, (output, status, _) in rows.items():
        if os.path.lexists(src / key.rstrip("/")):
            continue
        if status == "ok" and output and (dst / output).is_file():
            kept += 1
        else:
            dropped.append(key)
    for key in dropped:
        del rows[key]
    if dropped:
        log.info(
            "dropped %d manifest rows of inputs no longer in input_dir: %s%s",
            len(dropped),
            ", ".join(shown(k) for k in dropped[:10]),
            " ..." if len(dropped) > 10 else "",
        )
    if kept:
        log.info("kept %d released outputs whose input is no longer in input_dir", kept)
    return dropped


def count(rows: Rows) -> dict[str, int]:
    statuses = Counter(status for _, status, _ in rows.values())
    return {status: statuses[status] for status in STATUSES}
