"""Rebuild an evaluation sweep's results.csv, results.md, privacy-utility plot and image grid from
its rows: ``python src/report.py outputs/evaluate/multiruns/<date>_<time>``."""

from __future__ import annotations

import argparse
import logging
import sys

from dpglow.evaluation.report import NoRowsError, build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", help="folder of an evaluate.py run or multirun")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        frame = build_report(args.sweep_dir)
    except NoRowsError as err:
        logging.error("%s", err)
        return 2
    logging.info("%d rows -> %s/results.{csv,md}", len(frame), args.sweep_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
