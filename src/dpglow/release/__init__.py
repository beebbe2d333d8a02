"""The release folder: ``privatize(cfg)`` (the task behind ``src/privatize.py``) reads every image
under ``input_dir``, privatizes it with a :mod:`dpglow.privatizers` privatizer and writes the
outputs, ``privacy_report.json`` (the record, every model with its path and SHA-256, the
settings) and ``manifest.csv`` atomically, resumable after a crash; DICOM outputs get a
de-identified header."""

from dpglow.release.task import MANIFEST, REPORT, build_release, privatize

__all__ = ["MANIFEST", "REPORT", "build_release", "privatize"]
