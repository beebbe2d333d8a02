"""A release folder's privacy report, written before the first image and kept true afterwards.

``privacy_report.json`` holds the settings and the privacy record of every image in the folder.
It is written atomically before any image, so a folder with outputs always says how they were
made; a run with other settings is refused, and so is a folder with files but no report (made by
something else, or by a version of dpglow that wrote the report only at the end). Each run adds
its token to ``runs``: the next run deletes the temporaries of those runs only.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpglow.release.files import REPORT, check_token, shown
from dpglow.utils.files import atomic_write_bytes

log = logging.getLogger(__name__)

__all__ = ["REPORT", "SettingsMismatchError", "UnrecordedOutputsError", "open_release"]


class SettingsMismatchError(ValueError):
    """output_dir holds images privatized with other settings."""


class UnrecordedOutputsError(ValueError):
    """output_dir holds files but no privacy report saying how they were made."""


def canonical(value: Any) -> str:
    """``value`` as sorted JSON: what a report stores, compared as text (tuples become lists,
    NaN equals NaN)."""
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    return json.loads(canonical(value))


def read_report(dst: Path) -> dict[str, Any] | None:
    path = dst / REPORT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UnrecordedOutputsError(
            f"{shown(str(path))} cannot be read ({type(err).__name__}: {err}), so what made the "
            "images in this folder is unknown. Choose a new output_dir."
        ) from err


def write_report(dst: Path, report: dict[str, Any], *, run_token: str) -> None:
    text = json.dumps(report, indent=2, default=str)
    atomic_write_bytes(dst / REPORT, text.encode("utf-8"), token=check_token(run_token))


def _check_previous(dst: Path, previous: dict[str, Any], settings: Any, record: Any) -> None:
    for key, value in (("settings", settings), ("record", record)):
        if key in previous and canonical(previous[key]) != canonical(value):
            raise SettingsMismatchError(
                f"{shown(str(dst))} already holds images privatized with other settings "
                f"({REPORT}: its {key} differ from this run's); a folder must hold one release. "
                "Choose a new output_dir, or re-run with the same settings to resume."
            )


def open_release(
    dst: Path,
    *,
    settings: dict[str, Any],
    record: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    config: dict[str, Any],
    run_token: str,
) -> tuple[dict[str, Any], list[str]]:
    """Check ``dst`` may take this run's images, then write its report (status ``"running"``)
    before any image. Returns the report and the tokens of the earlier runs into ``dst``."""
    previous = read_report(dst)
    if previous is None:
        if dst.exists() and any(dst.iterdir()):
            raise UnrecordedOutputsError(
                f"output_dir {shown(str(dst))!r} holds files but no {REPORT}, so nothing says "
                "how they were made (another tool, or a run of an older dpglow killed before it "
                "wrote its report). Choose a new or empty output_dir."
            )
        previous = {}
    else:
        _check_previous(dst, previous, settings, record)
    runs = [run for run in previous.get("runs", []) if isinstance(run, dict)]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = {
        "status": "running",
        "record": record,
        "private": bool(record.get("private")),
        "settings": _plain(settings),
        "checkpoint": _plain(checkpoint),
        "counts": previous.get("counts"),
        "runs": [*runs, {"token": run_token, "started": now}],
        "config": _plain(config),
    }
    dst.mkdir(parents=True, exist_ok=True)
    write_report(dst, report, run_token=run_token)
    return report, [str(run.get("token")) for run in runs]


def check_record(up_front: dict[str, Any], seen: dict[str, Any] | None) -> None:
    """Refuse a run whose images were made under another record than the one reported."""
    if seen is None:
        return
    if canonical(_plain(seen)) != canonical(up_front):
        raise RuntimeError(
            "the privatizer's record while running differs from the one written to "
            f"{REPORT} before the first image ({seen} vs {up_front}); this is a bug in dpglow: "
            "do not publish this folder"
        )
