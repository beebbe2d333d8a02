"""Helpers every layer may use (they import nothing else from dpglow): the atomic file writer
(:mod:`~dpglow.utils.files`), the Markdown table writer (:mod:`~dpglow.utils.tables`), run
discovery under ``outputs/`` (:mod:`~dpglow.utils.discovery`), renamed config keys
(:mod:`~dpglow.utils.deprecation`), logger and callback instantiation
(:mod:`~dpglow.utils.instantiate`) and the entry points' task wrapper (:mod:`~dpglow.utils.runs`).
"""
