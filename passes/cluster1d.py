"""Exact 1-D k-means for Deep Compression's weight sharing (Han et al., ICLR 2016, section 3).

Weight sharing clusters the surviving weights of one layer with k-means and stores each weight
as an index into a small codebook of centroids. In one dimension Lloyd's algorithm needs no
n-by-k distance matrix: after one sort, every cluster is a contiguous run of the sorted values,
the assignment step is a `np.searchsorted` of the midpoints between adjacent centroids, and the
update step takes each cluster's mean from prefix-sum differences. One iteration costs
O(k log n); the sort, O(n log n), is done once.

Rules (the brute-force reference in tests/passes/test_cluster1d.py follows the same ones):

* Assignment and ties: a value goes to its nearest centroid by float64 distance; a value
  equidistant from two adjacent centroids (exactly at their midpoint) goes to the lower one,
  i.e. `|x - c[i]| <= |c[i+1] - x|` picks `c[i]`. This is what `argmin` over a distance matrix
  computes (the first minimum wins). The searchsorted of the rounded midpoint is corrected
  against the distance test itself, so rounding of `(c[i] + c[i+1]) / 2` cannot move a value.
* Empty clusters are dropped: a centroid that attracts no value disappears and the codebook
  shrinks (k' < k); the remaining clusters keep their order. Duplicate initial centroids count
  as one (the upper copy would always be empty). Nothing is random after initialization.
* Stopping: an iteration is one assignment plus one update; Lloyd stops when an assignment
  equals the previous one or after `max_iter` assignments. The returned centroids are always
  the exact (weighted) means of the returned clusters, sorted strictly ascending.
* Fewer distinct values than k (or exactly k): every distinct value is its own centroid, with
  no iteration and zero error.

Entropy-constrained (`rate` = lambda > 0; Chou, Lookabaugh & Gray 1989, ECSQ, which Choi et
al. 2017 use for Huffman-coded network weights): from the k-means solution, iterate value ->
argmin_i (x - c[i])^2 + lambda * bits[i] with bits[i] = -log2 of cluster i's share of the
weight, then means and shares; each step lowers squared error + lambda * code length, so the
clusters trade distortion for a smaller Huffman code. Every cost is a parabola of the same
curvature, so each cluster's region is still an interval: the lower envelope of k lines,
found once per iteration (a loop over the k centroids, not the values); a value at a
breakpoint goes to the lower cluster up to rounding. Clusters that lose every value drop.

Initializations, as compared in the paper: "linear" (k points evenly spaced between the min and
the max; the paper's choice, it keeps centroids on the rare large weights), "density" (evenly
spaced on the CDF: the values at quantiles (i + 0.5) / k, inverted-CDF definition) and
"kmeans++" (D^2 sampling with `np.random.default_rng(seed)`; the paper's "random" forgets the
large weights the same way). Initialization sees the values in sorted order, so the result
does not depend on the order of the input.
"""

from __future__ import annotations

import numpy as np

INITS = ("linear", "density", "kmeans++")


def kmeans_1d(
    values: np.ndarray,
    k: int,
    init: str = "linear",
    max_iter: int = 100,
    seed: int = 0,
    weights: np.ndarray | None = None,
    rate: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster `values` into at most `k` groups with exact 1-D Lloyd iterations.

    `weights` (positive, finite, same shape as `values`) makes every mean and the density and
    k-means++ initializations weighted; `seed` only matters for "kmeans++"; `rate` > 0 then
    runs up to `max_iter` entropy-constrained iterations, lambda = `rate` (squared error per
    bit of code). Returns
    `(centroids, labels)`: float64 centroids sorted strictly ascending, shape (k',) with
    k' <= k (empty clusters are dropped, see the module docstring), and int64 labels of
    `values.shape` indexing them. An empty input gives empty centroids and labels.
    """
    x = np.asarray(values, dtype=np.float64)
    k = _check_args(x, k, init, max_iter)
    if not (np.isfinite(rate) and rate >= 0):
        raise ValueError(f"rate must be finite and >= 0, got {rate!r}")
    w = _check_weights(x, weights)
    flat = x.ravel() + 0.0  # -0.0 becomes 0.0: one value, one centroid bit pattern
    order = np.argsort(flat)
    sv = flat[order]
    sw = None if w is None else w.ravel()[order]
    labels = np.empty(sv.size, dtype=np.int64)
    if sv.size == 0:
        return np.empty(0, dtype=np.float64), labels.reshape(x.shape)
    starts = np.flatnonzero(np.concatenate(([True], sv[1:] != sv[:-1])))
    if starts.size <= k:
        centroids = sv[starts]
    else:
        sums = _prefix_sums(sv, sw)
        centroids, starts = _lloyd(sv, sums, _initial_centroids(sv, sw, k, init, seed), max_iter)
        if rate > 0:
            centroids, starts = _entropy_constrained(sv, sums, starts, rate, max_iter)
    sizes = np.diff(np.append(starts, sv.size))
    labels[order] = np.repeat(np.arange(starts.size, dtype=np.int64), sizes)
    return centroids, labels.reshape(x.shape)


def quantization_error(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared errors of replacing each value by `centroids[label]`."""
    v = np.asarray(values, dtype=np.float64)
    lab = np.asarray(labels)
    if v.shape != lab.shape:
        raise ValueError(f"values shape {v.shape} != labels shape {lab.shape}")
    diff = v - np.asarray(centroids, dtype=np.float64)[lab.astype(np.intp)]
    return float(np.sum(np.square(diff)))


def index_bits(labels: np.ndarray) -> float:
    """Entropy of the cluster labels: the mean bits per weight an ideal code of the indices
    spends (what the Huffman stage can reach, before its table)."""
    counts = np.bincount(labels.ravel())
    share = counts[counts > 0] / max(labels.size, 1)
    return float(-(share * np.log2(share)).sum())


def _check_args(x: np.ndarray, k: int, init: str, max_iter: int) -> int:
    """Validate the scalar arguments and the values; return k as an int."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite")
    return int(k)


def _check_weights(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
    """Validate the optional per-value weights and return them as float64."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape:
        raise ValueError(f"weights shape {w.shape} != values shape {x.shape}")
    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError("weights must be finite and positive")
    return w


def _initial_centroids(
    sv: np.ndarray, sw: np.ndarray | None, k: int, init: str, seed: int
) -> np.ndarray:
    """The distinct starting centroids, ascending, for sorted values `sv` (weights `sw`)."""
    if init == "linear":
        return np.unique(np.linspace(sv[0], sv[-1], k))
    if init == "density":
        if sw is None:
            cum = np.arange(1, sv.size + 1, dtype=np.float64)
        else:
            cum = np.cumsum(sw)
        # First value whose cumulative weight reaches (i + 0.5) / k of the total, in the
        # division-free form 2k * cum >= (2i + 1) * total (exact for integer weights).
        targets = (2 * np.arange(k, dtype=np.float64) + 1) * cum[-1]
        idx = np.searchsorted(2 * k * cum, targets, side="left")
        return np.unique(sv[np.minimum(idx, sv.size - 1)])
    return _kmeanspp(sv, sw, k, seed)


def _kmeanspp(sv: np.ndarray, sw: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """k-means++ seeding: each new center drawn with probability weight * D^2.

    D^2 is the squared distance to the nearest chosen center. A new center only changes D^2
    between its two neighbouring centers, and the masses are summed in blocks of ~sqrt(n)
    values, so a draw costs O(sqrt(n)) plus the changed range: O(n log k + k sqrt(n)) total.
    """
    rng = np.random.default_rng(seed)
    n = sv.size
    mass = np.ones_like(sv) if sw is None else sw
    size = max(1, int(np.sqrt(n)))
    first = np.arange(0, n, size)
    centers = np.array([sv[_draw(rng, np.cumsum(mass))]])
    d2 = np.square(sv - centers[0])
    contrib = mass * d2
    block = np.add.reduceat(contrib, first)
    for _ in range(1, k):
        cum = np.cumsum(block)
        if not cum[-1] > 0:
            break
        t = rng.random() * cum[-1]
        j = _draw(rng, cum, t)
        lo = first[j]
        c = sv[lo + _draw(rng, np.cumsum(contrib[lo : lo + size]), t - (cum[j - 1] if j else 0))]
        pos = int(np.searchsorted(centers, c))
        a = int(np.searchsorted(sv, centers[pos - 1], side="right")) if pos > 0 else 0
        b = int(np.searchsorted(sv, centers[pos], side="left")) if pos < centers.size else n
        np.minimum(d2[a:b], np.square(sv[a:b] - c), out=d2[a:b])
        contrib[a:b] = mass[a:b] * d2[a:b]
        ja, jb = a // size, (b - 1) // size + 1
        block[ja:jb] = np.add.reduceat(
            contrib[first[ja] : first[jb - 1] + size], first[ja:jb] - first[ja]
        )
        centers = np.insert(centers, pos, c)
    return centers


def _draw(rng: np.random.Generator, cum: np.ndarray, t: float | None = None) -> int:
    """Index where cumulative `cum` first exceeds `t` (default: uniform in [0, total)).

    Drawing t uniformly picks an index with probability proportional to its increment;
    an index with zero increment is never returned.
    """
    if t is None:
        t = rng.random() * cum[-1]
    idx = int(np.searchsorted(cum, t, side="right"))
    if idx >= cum.size:  # u * total rounded up to the total: take the last positive mass
        idx = int(np.searchsorted(cum, cum[-1], side="left"))
    return idx


def _lloyd(
    sv: np.ndarray, sums: tuple, centroids: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations on sorted values; return the centroids and each cluster's start."""
    starts = None
    for _ in range(max_iter):
        new = _nonempty(_assign(sv, centroids), sv.size)
        if starts is not None and np.array_equal(new, starts):
            break
        starts = new
        centroids = _means(sv, sums, starts)
    return centroids, starts


def _entropy_constrained(
    sv: np.ndarray, sums: tuple, starts: np.ndarray, lam: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """ECSQ iterations from the clusters `starts`; return the centroids and cluster starts."""
    cum_w = sums[0]
    centroids = _means(sv, sums, starts)
    for _ in range(max_iter):
        mass = np.diff(cum_w[np.append(starts, sv.size)])
        bits = -np.log2(mass / cum_w[-1])
        new = _nonempty(_envelope(sv, centroids, lam * bits), sv.size)
        if np.array_equal(new, starts):
            break
        starts = new
        centroids = _means(sv, sums, starts)
    return centroids, starts


def _prefix_sums(sv: np.ndarray, sw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums of the weights and of weight * value (0 first), for cluster means."""
    if sw is None:
        return np.arange(sv.size + 1, dtype=np.float64), np.concatenate(([0.0], np.cumsum(sv)))
    return np.concatenate(([0.0], np.cumsum(sw))), np.concatenate(([0.0], np.cumsum(sw * sv)))


def _nonempty(starts: np.ndarray, n: int) -> np.ndarray:
    """The cluster starts without the empty clusters."""
    return starts[np.diff(np.append(starts, n)) > 0]


def _means(sv: np.ndarray, sums: tuple, starts: np.ndarray) -> np.ndarray:
    """The (weighted) mean of each cluster of sorted values `sv`."""
    cum_w, cum_wx = sums
    ends = np.append(starts[1:], sv.size)
    means = (cum_wx[ends] - cum_wx[starts]) / (cum_w[ends] - cum_w[starts])
    # Prefix-sum rounding must not push a mean outside its cluster's range.
    return np.clip(means, sv[starts], sv[ends - 1])


def _envelope(sv: np.ndarray, c: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Start index in `sv` of each centroid's region of argmin_i (x - c[i])^2 + offsets[i].

    Minus x^2, cost i is the line -2 c[i] x + c[i]^2 + offsets[i]; with c ascending the slopes
    fall, so the minimum runs through a subsequence of the lines (a convex hull, built in one
    pass) and the regions come in centroid order. A line off the hull gets an empty region.
    """
    icept = c * c + offsets

    def crossing(a: int, b: int) -> float:  # where line b (c[b] > c[a]) becomes the lower
        return (icept[b] - icept[a]) / (2 * (c[b] - c[a]))

    hull: list[int] = []
    for i in range(c.size):
        while len(hull) >= 2 and crossing(hull[-1], i) <= crossing(hull[-2], hull[-1]):
            hull.pop()
        hull.append(i)
    first = np.full(c.size, sv.size)
    breaks = [crossing(a, b) for a, b in zip(hull, hull[1:])]
    first[hull] = np.concatenate(([0], np.searchsorted(sv, breaks, side="right")))
    return np.minimum.accumulate(first[::-1])[::-1].astype(np.intp)


def _assign(sv: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Start index in `sv` of each centroid's cluster (len(c) entries, non-decreasing).

    A value x belongs to the lower centroid of the pair (c[i], c[i+1]) iff
    x - c[i] <= c[i+1] - x in float64. The searchsorted of the rounded midpoint is moved,
    one distinct value at a time, until it agrees with that test (rarely more than 0 steps).
    """
    n = sv.size
    lo, hi = c[:-1], c[1:]
    b = np.searchsorted(sv, (lo + hi) / 2, side="right")
    while True:
        below = sv[np.maximum(b - 1, 0)]
        at = sv[np.minimum(b, n - 1)]
        down = (b > 0) & (below - lo > hi - below)
        up = (b < n) & (at - lo <= hi - at)
        if not (down.any() or up.any()):
            break
        b = np.where(down, np.searchsorted(sv, below, side="left"), b)
        b = np.where(up, np.searchsorted(sv, at, side="right"), b)
    return np.concatenate(([0], np.maximum.accumulate(b))).astype(np.intp)
