"""The lightweight anomaly model: per-series streaming scores in [0, 1].

Pure core (no file, network or clock access): :class:`ModelSet` scores
samples; :mod:`.modelfile`, :mod:`.persist` and :mod:`.backtest` are the
edges that read and write files.  Importing this package is cheap: numpy is
imported only when a series first trains, scikit-learn never on this path.
"""

from __future__ import annotations

from batond.anomaly.modelset import ModelSet
from batond.anomaly.spec import DEFAULT_SPEC, DETECTORS, ContextParams, HostParams, ModelSpec

__all__ = ["DEFAULT_SPEC", "DETECTORS", "ContextParams", "HostParams", "ModelSet", "ModelSpec"]
