"""Solvers: one engine (:mod:`.engine`: kernels, folds, per-target runner, result protocol) and
the methods written on it (:mod:`.ridge`, :mod:`.banded`, :mod:`.pls`, :mod:`.readout`), with
thin scikit-learn estimators (:mod:`.estimators`) and conditioning checks (:mod:`.diagnostics`)."""
