"""The ``host`` detector: a host's vector of metrics scored jointly.

Fitted with scikit-learn (PCA on the standardised history, in a worker
thread); each vector is scored in plain numpy on the fitted parameters (a
scikit-learn call per vector would cost tens of microseconds).  The score
is the larger of two ratios, each over its own 99.5th percentile on the
training history:

- the PCA reconstruction error (what the components that explain
  ``variance`` of the history cannot express: metrics unusual *together*);
- the largest per-metric ``|z|`` (one metric unusual on its own).

A ratio of 1 is as unusual as the 0.5 % most unusual training vectors; the
score is ``0.99 * ratio`` below 1 and ``1 - 0.01 / ratio`` above (see
:func:`ratio_score`), so the default threshold 0.99 is a ratio of 1 and every
ratio keeps its order.  ``bench/bench_smd_host.py`` chose this
combination on the Server Machine Dataset (leave-one-machine-out).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Floats = npt.NDArray[np.float64]

__all__ = [
    "HostFit",
    "HostParams",
    "decode_floats",
    "encode_floats",
    "fit_from_state",
    "fit_host",
    "fit_to_state",
    "ratio_score",
    "sensitive_score",
    "vector_ratio",
]

_QUANTILE = 0.995  # a ratio of 1: as unusual as the top 0.5 % of the training history


@dataclass(frozen=True, slots=True)
class HostParams:
    """Parameters of the ``host`` detector.

    ``variance``: the share of the standardised history's variance the kept
    principal components explain; ``history``: vectors kept for (re)training
    (4 bytes a metric each); ``min_std``: the floor of a metric's standard
    deviation (a metric that never moved does not make every wobble infinite);
    ``top``: how many contributing metrics ``top_metrics`` names;
    ``learn_below``: a vector whose ratio (before ``sensitivity``) is at or above
    this is not learned, so an incident does not become the normal the next fit
    is judged against (see :mod:`batond.anomaly.hostset` for the way out of a
    lasting change).
    """

    variance: float = 0.95
    history: int = 4000
    min_std: float = 0.05
    top: int = 3
    learn_below: float = 1.5

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HostFit:
    """What scoring needs: standardisation, the PCA basis and the two scales."""

    mean: Floats
    std: Floats
    center: Floats  # the PCA mean of the standardised history (about 0)
    basis: Floats  # metrics x components
    pca_scale: float
    z_scale: float


def fit_host(history: Floats, params: HostParams) -> HostFit:
    """Fit on ``history`` (vectors x metrics); for a worker thread (it takes ~ms)."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread: a fit must leave the other core to the event loop (with two
    # OpenBLAS threads spinning on a loaded 2-core host, a 6000 x 40 fit stalled the
    # loop 0.35 s and took 10x longer)
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(history, params)


def _fit(history: Floats, params: HostParams) -> HostFit:
    import numpy as np
    from sklearn.decomposition import PCA

    data = np.asarray(history, dtype=np.float64)
    mean = data.mean(axis=0)
    std = np.maximum(data.std(axis=0), params.min_std)
    z = (data - mean) / std
    if data.shape[0] > data.shape[1] and params.variance < 1.0:
        pca = PCA(n_components=params.variance, svd_solver="full").fit(z)
        center = pca.mean_.astype(np.float64)
        basis = pca.components_.T.astype(np.float64)
    else:  # fewer vectors than metrics: no residual to learn from
        center = np.zeros(data.shape[1])
        basis = np.eye(data.shape[1])
    shifted = z - center
    residual = shifted - (shifted @ basis) @ basis.T
    errors = np.einsum("ij,ij->i", residual, residual)
    pca_scale = max(float(np.quantile(errors, _QUANTILE)), 1e-9)
    z_scale = max(float(np.quantile(np.abs(z).max(axis=1), _QUANTILE)), 1e-9)
    return HostFit(mean, std, center, basis, pca_scale, z_scale)


def vector_ratio(fit: HostFit, vector: Floats) -> tuple[float, Floats]:
    """(ratio, per-metric contribution) of one vector, in plain numpy (a few µs)."""
    import numpy as np

    z = (vector - fit.mean) / fit.std
    shifted = z - fit.center
    residual = shifted - (shifted @ fit.basis) @ fit.basis.T
    squared = residual * residual
    parts = np.maximum(squared / fit.pca_scale, np.abs(z) / fit.z_scale)
    return max(float(squared.sum()) / fit.pca_scale, float(parts.max())), parts


def sensitive_score(ratio: float, sensitivity: float) -> float:
    """A :func:`vector_ratio` as the score in [0, 1) under ``sensitivity`` (0.5 leaves it)."""
    return ratio_score(ratio * sensitivity / 0.5)


def ratio_score(ratio: float) -> float:
    """A ratio as a score in [0, 1): 0.99 at 1, never saturating.

    ``1 - 0.01 / ratio`` above 1 keeps every ratio's order (float64 tells ratios apart
    up to about 1e13); ``1 - 0.01 ** ratio`` reached 1.0 at a ratio of 8, and the ties
    among the strongest anomalies cost machine-2-8 of SMD 0.948 -> 0.049 point-wise F1.
    """
    return 0.99 * ratio if ratio < 1.0 else 1.0 - 0.01 / ratio


def fit_state(fit: HostFit) -> dict[str, Any]:
    """A JSON-able summary (for tests and the page)."""
    return {
        "metrics": int(fit.mean.shape[0]),
        "components": int(fit.basis.shape[1]),
        "pca_scale": fit.pca_scale,
        "z_scale": fit.z_scale,
    }


def fit_to_state(fit: HostFit) -> dict[str, Any]:
    """The fit for ``anomaly.state``: arrays as base64 little-endian float64."""
    return {
        "mean": encode_floats(fit.mean, "<f8"),
        "std": encode_floats(fit.std, "<f8"),
        "center": encode_floats(fit.center, "<f8"),
        "basis": encode_floats(fit.basis, "<f8"),
        "components": int(fit.basis.shape[1]),
        "pca_scale": fit.pca_scale,
        "z_scale": fit.z_scale,
    }


def fit_from_state(state: dict[str, Any], metrics: int) -> HostFit:
    """Adopt :func:`fit_to_state` output for ``metrics`` metrics; ValueError if malformed."""
    components = int(state["components"])
    if not 1 <= components <= metrics:
        raise ValueError(f"a host fit of {components} components for {metrics} metrics")
    basis = decode_floats(state["basis"], "<f8", metrics * components)
    return HostFit(
        mean=decode_floats(state["mean"], "<f8", metrics),
        std=decode_floats(state["std"], "<f8", metrics),
        center=decode_floats(state["center"], "<f8", metrics),
        basis=basis.reshape(metrics, components),
        pca_scale=float(state["pca_scale"]),
        z_scale=float(state["z_scale"]),
    )


def encode_floats(values: Any, dtype: str) -> str:
    import base64

    import numpy as np

    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def decode_floats(text: object, dtype: str, size: int) -> Floats:
    """``size`` floats of ``dtype`` from base64 (as float64); ValueError/TypeError if not."""
    import base64

    import numpy as np

    if not isinstance(text, str):
        raise TypeError(f"expected base64 {dtype} array data")
    data = base64.b64decode(text, validate=True)
    values = np.frombuffer(data, dtype=dtype) if len(data) % np.dtype(dtype).itemsize == 0 else None
    if values is None or values.size != size:
        raise ValueError(f"{dtype} array data of {len(data)} bytes, expected {size} values")
    return values.astype(np.float64)
