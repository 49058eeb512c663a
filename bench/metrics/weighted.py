"""Case-weighted image metrics, vectorised over bootstrap resamples.

A bootstrap resample is a vector of case multiplicities, so a metric on resample ``b`` is the
weighted metric with weights ``W[b]`` (see :mod:`bench.analysis.stats`). These are the ``weighted=``
implementations the image metrics declare in :mod:`bench.metrics.image`.
"""

from __future__ import annotations

import numpy as np


def _as_weight_matrix(weights, n: int) -> tuple[np.ndarray, bool]:
    if weights is None:
        return np.ones((1, n)), True
    w = np.asarray(weights, dtype=float)
    single = w.ndim == 1
    w = np.atleast_2d(w)
    if w.shape[1] != n:
        raise ValueError(f"weights have {w.shape[1]} cases, scores have {n}")
    return w, single


def _check_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return s, y.astype(bool)


def _tied_counts(scores, labels, weights, descending: bool):
    """Weighted positives/negatives per distinct score, scores sorted ascending or descending."""
    s, y = _check_scores(scores, labels)
    w, single = _as_weight_matrix(weights, s.size)
    order = np.argsort(-s if descending else s, kind="mergesort")
    s, y, w = s[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    return pos, neg, single


def _finish(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def weighted_auroc(scores, labels, weights=None):
    """Area under the ROC curve with case weights (ties count one half; Mann-Whitney form).

    ``weights`` is ``None``, ``[N]`` or ``[B, N]``; returns a float or ``[B]`` (NaN where a
    resample has no positive or no negative case).
    """
    pos, neg, single = _tied_counts(scores, labels, weights, descending=False)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return _finish(auc, single)


def weighted_average_precision(scores, labels, weights=None):
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` (scikit-learn's definition) with case weights."""
    pos, neg, single = _tied_counts(scores, labels, weights, descending=True)
    tps, fps = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    total_pos = tps[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / np.where(tps + fps > 0, tps + fps, 1.0), 0.0)
        recall = tps / np.where(total_pos > 0, total_pos, 1.0)
    gain = np.diff(recall, axis=1, prepend=0.0)
    ap = np.sum(gain * precision, axis=1)
    ap = np.where(total_pos[:, 0] > 0, ap, np.nan)
    return _finish(ap, single)


def weighted_fpr_at_tpr(scores, labels, weights=None, tpr: float = 0.95):
    """False-positive rate at the highest threshold reaching ``tpr`` (FPR95 for 0.95; lower is better)."""
    pos, neg, single = _tied_counts(scores, labels, weights, descending=True)
    tps, fps = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    total_pos, total_neg = tps[:, -1], fps[:, -1]
    valid = (total_pos > 0) & (total_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr_curve = tps / np.where(total_pos > 0, total_pos, 1.0)[:, None]
        fpr_curve = fps / np.where(total_neg > 0, total_neg, 1.0)[:, None]
    first = np.argmax(tpr_curve >= tpr - 1e-12, axis=1)
    fpr = fpr_curve[np.arange(len(first)), first]
    return _finish(np.where(valid, fpr, np.nan), single)


def weighted_f1_max(scores, labels, weights=None):
    """The best F1 over every threshold (an oracle: the threshold is chosen on the scored cases)."""
    pos, neg, single = _tied_counts(scores, labels, weights, descending=True)
    tps, fps = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    total_pos = tps[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tps > 0, 2 * tps / (tps + fps + total_pos), 0.0)
    best = np.where(total_pos[:, 0] > 0, f1.max(axis=1), np.nan)
    return _finish(best, single)


def _confusion_at(scores, labels, weights, threshold: float):
    """Weighted true/false positives and negatives with "anomalous when score >= threshold"."""
    s, y = _check_scores(scores, labels)
    w, single = _as_weight_matrix(weights, s.size)
    flagged = s >= threshold
    tp, fp = w @ (y & flagged), w @ (~y & flagged)
    fn, tn = w @ (y & ~flagged), w @ (~y & ~flagged)
    return tp, fp, fn, tn, single


def weighted_f1_at(scores, labels, weights=None, threshold: float = 0.0):
    """F1 of the decisions "anomalous when score >= threshold" (0 when nothing is flagged correctly)."""
    tp, fp, fn, _, single = _confusion_at(scores, labels, weights, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp + fn > 0, np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0), np.nan)
    return _finish(f1, single)


def weighted_sensitivity_at(scores, labels, weights=None, threshold: float = 0.0):
    """Share of anomalous cases flagged at ``threshold`` (recall, true-positive rate)."""
    tp, _, fn, _, single = _confusion_at(scores, labels, weights, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finish(np.where(tp + fn > 0, tp / np.where(tp + fn > 0, tp + fn, 1.0), np.nan), single)


def weighted_specificity_at(scores, labels, weights=None, threshold: float = 0.0):
    """Share of normal cases not flagged at ``threshold`` (true-negative rate)."""
    _, fp, _, tn, single = _confusion_at(scores, labels, weights, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finish(np.where(tn + fp > 0, tn / np.where(tn + fp > 0, tn + fp, 1.0), np.nan), single)
