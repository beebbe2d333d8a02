"""Evaluation (docs/evaluation.md): one job privatizes the evaluated split with one setting and
measures utility, privacy, fidelity and realism (:func:`~dpglow.evaluation.task.evaluate`); a
sweep's rows are merged by :mod:`~dpglow.evaluation.report`. The steps of a job live in
``models``, ``inputs``, ``sweep_cache``, ``shards``, ``rows``, ``realism``, ``utility`` and
``outputs``; ``noise_table`` tabulates the mechanisms' calibration."""
