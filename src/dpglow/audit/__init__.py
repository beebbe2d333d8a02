"""The end-to-end privacy audit of released files: input pairs as far apart as a mechanism
allows, distinguishing events on the released PNGs, Clopper-Pearson lower bounds on epsilon
(``python src/audit.py``; the mechanisms' own unit audits use :mod:`dpglow.audit.bounds`)."""
