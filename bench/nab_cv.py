"""NAB in-process, cached, with leave-one-category-out cross-validation.

The machinery behind ``bench/bench_nab_cv.py``: load the NAB series and their
window layout once (the shared scorer's own ``FileLayout``), score every file
with a candidate model through the daemon's path
(:func:`batond.commands.backtest.score_rows`, strictly causal, retraining
inline), cache the scores on disk (keyed by the candidate and the model's
source code), and compute the normalised NAB standard score of any subset of
files at a fixed threshold.

Cross-validation: for each category, the candidate with the best pooled score
on the *other* categories (at the model's default threshold) scores the
held-out category; the held-out raw scores of all categories are pooled into
one normalised figure.  The default parameters are then the candidate the same
rule picks on all categories (the in-sample figure).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import batond.anomaly
from batond.anomaly.spec import DEFAULT_SPEC, ContextParams, ModelSpec

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "shared" / "nab-data"
SCORER = ROOT / "shared" / "nab" / "nab_score.py"
CACHE = Path(os.environ.get("BATOND_NAB_CACHE", "/tmp/batond-nab-cache"))
STANDARD = (1.0, 0.11, 1.0)  # A_TP, A_FP, A_FN of the standard profile

Candidate = Mapping[str, Any]  # ModelSpec or ContextParams field -> value


@dataclass(frozen=True)
class NabFile:
    relpath: str
    category: str
    ts: np.ndarray  # epoch seconds
    values: np.ndarray
    layout: Any  # the scorer's FileLayout


def load_scorer(path: Path = SCORER) -> ModuleType:
    spec = importlib.util.spec_from_file_location("nab_score", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_files(data: Path = DATA, scorer: Path = SCORER) -> list[NabFile]:
    import pandas as pd

    nab = load_scorer(scorer)
    labels = json.loads((data / "labels" / "combined_windows.json").read_text())
    out = []
    for relpath in sorted(labels):
        frame = pd.read_csv(data / "data" / relpath)
        stamps = pd.to_datetime(frame["timestamp"])
        epochs = stamps.to_numpy().astype("datetime64[ns]").astype(np.int64) / 1e9
        layout = nab.FileLayout(relpath, stamps, labels[relpath])
        values = frame["value"].to_numpy(dtype=float)
        out.append(NabFile(relpath, relpath.split("/")[0], epochs, values, layout))
    return out


def make_spec(candidate: Candidate, base: ModelSpec = DEFAULT_SPEC) -> ModelSpec:
    param_names = {f.name for f in fields(ContextParams)}
    params = {k: v for k, v in candidate.items() if k in param_names}
    top = {k: v for k, v in candidate.items() if k not in param_names}
    if "offsets" in params:
        params["offsets"] = tuple(params["offsets"])
    return replace(base, params=replace(base.params, **params), **top)


def _code_hash() -> str:
    folder = Path(batond.anomaly.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def candidate_key(candidate: Candidate) -> str:
    text = json.dumps(dict(candidate), sort_keys=True, default=list)
    return hashlib.sha256(f"{_code_hash()} {text}".encode()).hexdigest()[:16]


def _score_one(args: tuple[dict[str, Any], str, np.ndarray, np.ndarray]) -> np.ndarray:
    from batond.commands.backtest import score_rows

    candidate, _, ts, values = args
    spec = make_spec(candidate)
    return np.asarray(score_rows(spec, list(zip(ts.tolist(), values.tolist(), strict=True))))


def score_candidates(
    candidates: Sequence[Candidate], files: Sequence[NabFile], workers: int = 2
) -> list[dict[str, np.ndarray]]:
    """Per candidate, relpath -> scores; cached under ``CACHE``."""
    todo: list[tuple[int, NabFile, Path]] = []
    results: list[dict[str, np.ndarray]] = [{} for _ in candidates]
    for i, candidate in enumerate(candidates):
        folder = CACHE / candidate_key(candidate)
        for f in files:
            path = folder / (f.relpath.replace("/", "__") + ".npy")
            if path.exists():
                results[i][f.relpath] = np.load(path)
            else:
                todo.append((i, f, path))
    if todo:
        jobs = [(dict(candidates[i]), f.relpath, f.ts, f.values) for i, f, _ in todo]
        # the longest files first, so the pool's last job is a short one
        order = sorted(range(len(jobs)), key=lambda k: -len(jobs[k][2]))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = pool.map(_score_one, [jobs[k] for k in order], chunksize=1)
            for k, scores in zip(order, done, strict=True):
                i, f, path = todo[k]
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, scores.astype(np.float64))
                results[i][f.relpath] = scores
    return results


def raw_scores(
    files: Sequence[NabFile], scores: Mapping[str, np.ndarray], threshold: float
) -> dict[str, tuple[float, float, float]]:
    """relpath -> (raw, null, perfect) of the standard profile at ``threshold``."""
    a_tp, a_fp, a_fn = STANDARD
    out = {}
    for f in files:
        lay = f.layout
        det = lay.scored & (scores[f.relpath] >= threshold)
        raw = 0.0
        for k, (s, e) in enumerate(lay.bounds):
            if not lay.counted[k]:
                continue
            hits = np.flatnonzero(det[s : e + 1])
            raw += a_tp * lay.tp_val[s + hits[0]] if len(hits) else -a_fn
        raw += a_fp * float(lay.fp_val[det & (lay.win < 0)].sum())
        counted = int(lay.counted.sum())
        out[f.relpath] = (raw, -a_fn * counted, a_tp * lay.n_windows)
    return out


def normalised(parts: Sequence[tuple[float, float, float]]) -> float:
    raw = sum(p[0] for p in parts)
    null = sum(p[1] for p in parts)
    perfect = sum(p[2] for p in parts)
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class CvResult:
    cv: float  # pooled held-out score
    picks: dict[str, int]  # held-out category -> candidate index chosen without it
    in_sample_pick: int  # chosen on every category
    in_sample: float
    per_candidate: list[float]  # every candidate's score on every category


def cross_validate(
    files: Sequence[NabFile],
    per_candidate: Sequence[Mapping[str, np.ndarray]],
    threshold: float,
) -> CvResult:
    raws = [raw_scores(files, s, threshold) for s in per_candidate]
    categories = sorted({f.category for f in files})

    def pooled(i: int, keep: set[str]) -> float:
        return normalised([raws[i][f.relpath] for f in files if f.category in keep])

    held: list[tuple[float, float, float]] = []
    picks = {}
    everything = set(categories)
    for category in categories:
        others = everything - {category}
        # ties go to the earlier candidate: list the preferred (simpler) ones first
        best = max(range(len(raws)), key=lambda i: (pooled(i, others), -i))
        picks[category] = best
        held.extend(raws[best][f.relpath] for f in files if f.category == category)
    totals = [pooled(i, everything) for i in range(len(raws))]
    pick = max(range(len(raws)), key=lambda i: (totals[i], -i))
    return CvResult(normalised(held), picks, pick, totals[pick], totals)
