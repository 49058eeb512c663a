"""Representation diagnostics: what an encoder's embedding looks like, independent of any head.

The question behind them: does a representation that scores well on generic geometry (tight
positive pairs, spread-out points, many used dimensions) also detect anomalies well? Each
diagnostic is computed per encoder embedding (one ``encoder_cache``) and later related to the
detection AUROC of every cell that used it.

* **Alignment** and **uniformity** (Wang & Isola 2020, "Understanding contrastive representation
  learning through alignment and uniformity on the hypersphere", ICML), on L2-normalised
  embeddings. Alignment needs positive pairs, which anomaly detection does not have; here a
  positive pair is *a normal validation embedding and its nearest training embedding* (the
  training set is all normal), i.e. "how close is a new normal image to the normal data it was
  fitted on". Validation labels are used only to pick the normal validation cases (the
  validation split is labelled by design); when none is labelled normal, training embeddings
  are paired with their nearest *other* training embedding. Lower is better.
  Uniformity = ``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` with ``t = 2`` on training embeddings;
  lower (more negative) = more uniform.
* **Effective rank** (Roy & Vetterli 2007, "The effective rank: a measure of effective
  dimensionality", EUSIPCO): ``exp(H(p))`` with ``p`` the singular values of the centred
  training embeddings normalised to sum to one.
* **Separability** of normal vs anomalous *test* embeddings by a linear probe (logistic
  regression) and by a kNN classifier, as cross-validated AUROC. **These use test labels. They
  are analysis only and never feed any selection.**
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

#: Bump when a definition changes so cached values are recomputed.
DIAGNOSTICS_VERSION = 1
EMBEDDING_KEYS = ("train", "val", "test", "val_labels", "test_labels")
#: Diagnostic name -> (label for figures, True if higher is "better" geometry).
DIAGNOSTICS = {
    "alignment": ("alignment ↓", False),
    "uniformity": ("uniformity ↓", False),
    "effective_rank": ("effective rank", True),
    "linear_probe_auroc": ("linear probe AUROC*", True),
    "knn_probe_auroc": ("kNN probe AUROC*", True),
}


class DegenerateEmbedding(ValueError):
    """Embeddings that must not reach native code (t-SNE, SVD, probes): non-finite or (nearly) constant.

    A degenerate encoder (an untrained ResNet-18 at 32 px whose embeddings are all equal) crashed
    the interpreter with a segfault inside scikit-learn's t-SNE; these checks run first.
    """


def check_embedding(z: np.ndarray, name: str, min_distinct: int = 3) -> np.ndarray:
    """``z`` as float64 ``[N, D]`` when finite with at least ``min_distinct`` distinct rows, else
    :class:`DegenerateEmbedding` saying what is wrong."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise DegenerateEmbedding(f"{name} embeddings have shape {z.shape}; expected [N, D] with N, D > 0")
    bad = int(np.count_nonzero(~np.isfinite(z)))
    if bad:
        raise DegenerateEmbedding(f"{name} embeddings hold {bad} non-finite values (NaN or inf)")
    scale = float(np.abs(z).max())
    spread = z.max(axis=0) - z.min(axis=0)
    if not np.any(spread > 1e-9 * max(scale, 1e-30)):
        raise DegenerateEmbedding(f"{name} embeddings are constant: all {len(z)} rows are equal")
    distinct = len(np.unique(z, axis=0))
    if distinct < min(min_distinct, len(z)):
        raise DegenerateEmbedding(f"{name} embeddings have only {distinct} distinct rows among {len(z)}")
    return z


def l2_normalize(z: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), eps)


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = np.sum(a**2, axis=1)[:, None] + np.sum(b**2, axis=1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


def uniformity(z: np.ndarray, t: float = 2.0, max_points: int = 1000, seed: int = 0) -> float:
    """``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` on L2-normalised rows (Wang & Isola 2020)."""
    z = l2_normalize(z)
    if len(z) < 2:
        return float("nan")
    z = z[_subsample(len(z), max_points, seed)]
    sq = _squared_distances(z, z)[np.triu_indices(len(z), k=1)]
    # log-mean-exp, stabilised
    x = -t * sq
    top = x.max()
    return float(top + np.log(np.mean(np.exp(x - top))))


def alignment(z_a: np.ndarray, z_b: np.ndarray, alpha: float = 2.0) -> float:
    """``mean ||f(x) - f(y)||^alpha`` over positive pairs (rows of ``z_a``, ``z_b``), L2-normalised."""
    if z_a.shape != z_b.shape:
        raise ValueError(f"alignment needs paired rows, got {z_a.shape} and {z_b.shape}")
    d = np.linalg.norm(l2_normalize(z_a) - l2_normalize(z_b), axis=1)
    return float(np.mean(d**alpha))


def nearest_neighbours(queries: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Index in ``reference`` of each query's nearest neighbour (Euclidean, on normalised rows)."""
    q, r = l2_normalize(queries), l2_normalize(reference)
    out = np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), 1024):
        d = _squared_distances(q[start:start + 1024], r)
        if exclude_self:
            idx = np.arange(start, min(start + 1024, len(q)))
            d[np.arange(len(idx)), idx] = np.inf
        out[start:start + 1024] = np.argmin(d, axis=1)
    return out


def normal_pair_alignment(train: np.ndarray, val: np.ndarray | None = None,
                          val_labels: np.ndarray | None = None, max_points: int = 2000,
                          seed: int = 0) -> float:
    """Alignment of normal validation embeddings with their nearest training embedding.

    Falls back to training embeddings paired with their nearest other training embedding when
    no validation case is labelled normal (see the module docstring).
    """
    train = np.asarray(train, dtype=np.float64)
    reference = train[_subsample(len(train), max_points, seed)]
    if val is not None and val_labels is not None and np.any(np.asarray(val_labels) == 0):
        queries = np.asarray(val, dtype=np.float64)[np.asarray(val_labels) == 0]
        queries = queries[_subsample(len(queries), max_points, seed)]
        return alignment(queries, reference[nearest_neighbours(queries, reference)])
    if len(reference) < 2:
        return float("nan")
    return alignment(reference, reference[nearest_neighbours(reference, reference, exclude_self=True)])


def effective_rank(z: np.ndarray, center: bool = True) -> float:
    """``exp`` of the entropy of the normalised singular values (Roy & Vetterli 2007)."""
    z = np.asarray(z, dtype=np.float64)
    if center:
        z = z - z.mean(axis=0, keepdims=True)
    s = np.linalg.svd(z, compute_uv=False)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def probe_auroc(z: np.ndarray, labels: np.ndarray, kind: str = "linear", n_splits: int = 5,
                n_neighbors: int = 5, seed: int = 0) -> float:
    """Cross-validated AUROC of a probe separating normal from anomalous embeddings.

    **Uses the labels it is given (test labels in the report): analysis only.** Features are
    standardised inside each fold; NaN when a class has fewer members than folds allow.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels).astype(int)
    minority = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    folds = min(n_splits, minority)
    if folds < 2:
        return float("nan")
    if kind == "linear":
        model = LogisticRegression(C=1.0, max_iter=2000)
    elif kind == "knn":
        model = KNeighborsClassifier(n_neighbors=min(n_neighbors, len(labels) - len(labels) // folds - 1))
    else:
        raise ValueError(f"probe kind must be 'linear' or 'knn', got {kind!r}")
    pipeline = make_pipeline(StandardScaler(), model)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):
        proba = cross_val_predict(pipeline, np.asarray(z, dtype=np.float64), labels, cv=cv,
                                  method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, proba))


def load_embeddings(cache_dir: str | Path) -> dict[str, np.ndarray]:
    """Read ``<cache_dir>/embeddings.npz`` and check it holds the arrays the report needs."""
    path = Path(cache_dir) / "embeddings.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no embeddings file (expected arrays {', '.join(EMBEDDING_KEYS)})")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in ("train", "test", "test_labels") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing} (expected {', '.join(EMBEDDING_KEYS)})")
    for key in ("train", "val", "test"):
        if key in arrays and arrays[key].ndim != 2:
            raise ValueError(f"{path}: array '{key}' must be [N, D], got shape {arrays[key].shape}")
    if len(arrays["test"]) != len(arrays["test_labels"]):
        raise ValueError(f"{path}: 'test' has {len(arrays['test'])} rows but 'test_labels' has "
                         f"{len(arrays['test_labels'])}")
    return arrays


def embedding_diagnostics(arrays: dict[str, np.ndarray], seed: int = 0, max_points: int = 2000) -> dict:
    """All diagnostics of one embedding (see the module docstring for the definitions)."""
    train = check_embedding(arrays["train"], "training")
    test = check_embedding(arrays["test"], "test")
    if arrays.get("val") is not None and len(arrays["val"]):
        check_embedding(arrays["val"], "validation", min_distinct=1)
    test_labels = np.asarray(arrays["test_labels"]).astype(int)
    probe_idx = _subsample(len(test), max_points, seed)
    return {
        "alignment": normal_pair_alignment(train, arrays.get("val"), arrays.get("val_labels"),
                                           max_points=max_points, seed=seed),
        "uniformity": uniformity(train, max_points=min(max_points, 1000), seed=seed),
        "effective_rank": effective_rank(train[_subsample(len(train), max_points, seed)]),
        "dim": int(train.shape[1]),
        "linear_probe_auroc": probe_auroc(test[probe_idx], test_labels[probe_idx], "linear", seed=seed),
        "knn_probe_auroc": probe_auroc(test[probe_idx], test_labels[probe_idx], "knn", seed=seed),
    }


def tsne_view(test: np.ndarray, labels: np.ndarray, max_points: int = 500,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of (at most ``max_points``, stratified) standardised test embeddings and their labels."""
    from sklearn.manifold import TSNE

    test = check_embedding(test, "test")
    labels = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    keep = np.arange(len(test))
    if len(test) > max_points:
        parts = []
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            take = max(1, int(round(max_points * len(members) / len(test))))
            parts.append(rng.choice(members, size=min(take, len(members)), replace=False))
        keep = np.sort(np.concatenate(parts))
    z = check_embedding(test[keep], "sub-sampled test")
    z = (z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-12)
    perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3.0)))
    with threadpool_limits(1):  # OpenMP threads on a shared 2-core machine only spin
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                      max_iter=500).fit_transform(z)
    return coords.astype(np.float32), labels[keep]


class DiagnosticsCache:
    """Diagnostics and t-SNE views per ``encoder_cache``, stored under ``cache_root``.

    Keyed by the embeddings file's path, size and modification time plus
    :data:`DIAGNOSTICS_VERSION`, so a report rebuild only recomputes what changed.
    """

    def __init__(self, cache_root: str | Path, seed: int = 0, tsne_points: int = 500):
        self.cache_root = Path(cache_root)
        self.seed = seed
        self.tsne_points = tsne_points
        self._pending: dict[tuple[str, Path], Future] = {}
        self._executor: ThreadPoolExecutor | None = None

    def prefetch(self, tsne_dirs, diagnostics_dirs) -> None:
        """Start computing these views and diagnostics in a background thread; the calls that ask for
        them later wait for them. Why: t-SNE and the SVDs run in native code that releases the GIL, so
        they overlap the report's tables (issue 27 item 4: the dense grid's report 49 s -> 45 s with
        figure workers; a 2-cell report drawn in one process 3.6-3.9 s -> 3.4-3.5 s)."""
        self._executor = self._executor or ThreadPoolExecutor(1, thread_name_prefix="diagnostics")
        for what, dirs, fn in (("tsne", tsne_dirs, self._tsne), ("diagnostics", diagnostics_dirs, self._diagnostics)):
            for cache_dir in dict.fromkeys(Path(d) for d in dirs):
                self._pending.setdefault((what, cache_dir), self._executor.submit(fn, cache_dir))

    def close(self) -> None:
        """Stop the background work (what was not started is dropped; what runs is waited for)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending.clear()

    def _prefetched(self, what: str, cache_dir):
        future = self._pending.pop((what, Path(cache_dir)), None)
        return None if future is None or future.cancelled() else future

    def diagnostics(self, cache_dir: str | Path) -> dict:
        future = self._prefetched("diagnostics", cache_dir)
        return future.result() if future is not None else self._diagnostics(cache_dir)

    def tsne(self, cache_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
        future = self._prefetched("tsne", cache_dir)
        return future.result() if future is not None else self._tsne(cache_dir)

    def _key(self, cache_dir: Path, what: str) -> Path:
        path = (Path(cache_dir) / "embeddings.npz").resolve()
        stat = path.stat()
        text = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{DIAGNOSTICS_VERSION}|{self.seed}|{what}"
        return self.cache_root / hashlib.sha1(text.encode()).hexdigest()[:16]

    def _diagnostics(self, cache_dir: str | Path) -> dict:
        key = self._key(Path(cache_dir), "diagnostics").with_suffix(".json")
        if key.exists():
            try:
                return json.loads(key.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                pass            # a damaged entry is recomputed and replaced
        values = embedding_diagnostics(load_embeddings(cache_dir), seed=self.seed)
        from bench.run.store import atomic_write_bytes

        text = json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()})
        atomic_write_bytes(key, text.encode(), sync=False)   # a killed report leaves no half entry
        return values

    def _tsne(self, cache_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
        key = self._key(Path(cache_dir), f"tsne{self.tsne_points}").with_suffix(".npz")
        if key.exists():
            try:
                with np.load(key, allow_pickle=False) as data:
                    return data["coords"], data["labels"]
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
                pass            # a truncated or empty entry (a killed report) is recomputed and replaced
        arrays = load_embeddings(cache_dir)
        coords, labels = tsne_view(arrays["test"], arrays["test_labels"], self.tsne_points, self.seed)
        from bench.run.store import atomic_write_bytes

        buffer = io.BytesIO()
        np.savez(buffer, coords=coords, labels=labels)
        atomic_write_bytes(key, buffer.getvalue(), sync=False)
        return coords, labels

