"""The k-NN contract shared by every backend: input validation, the result type, the index ABC.

Convention everywhere in `graph.knn`: vectors are L2-normalised float32 rows and the
similarity of two rows is their inner product, i.e. cosine similarity in [-1, 1] (1 = same
direction). Results are "most similar first"; a missing neighbour has id -1 and sim -inf.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

# Rows per block in validation / recall / re-ranking loops: bounds temporaries (a block of
# 8192 x 512 float64 is 32 MiB) without making the Python loop noticeable.
_BLOCK_ROWS = 8192
# A float32 row whose float64-computed norm is within this of 1 is taken as already
# normalised (normalising again would only move it by an ulp or two).
_UNIT_TOL = 1e-6
_SHOW_ROWS = 10  # how many offending row numbers an error message lists


def validate_vectors(x, *, name: str = "vectors") -> np.ndarray:
    """Check a vector matrix and return it as C-contiguous float32 rows of unit L2 norm.

    x: array-like of shape (n, dim), any real float or integer dtype (float16 included);
       n may be 0, dim must be >= 1.
    Returns a float32 (n, dim) C-contiguous array; rows are divided by their L2 norm (computed
    in float64, so neither tiny nor huge values under/overflow). When `x` already is such an
    array it is returned itself (not copied); the input is never modified.
    Raises ValueError for a wrong shape or dtype, for rows holding NaN or +-inf (also values
    beyond float32's range) and for all-zero rows (no direction); the message names the
    first offending row numbers.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = " (one vector? pass x[None, :])" if arr.ndim == 1 else ""
        raise ValueError(f"{name}: expected a 2-D array of shape (n, dim), got shape {arr.shape}{hint}")
    n, dim = arr.shape
    if dim == 0:
        raise ValueError(f"{name}: vectors have dimension 0")
    if arr.dtype == np.float32 and arr.flags.c_contiguous and _is_unit_float32(arr):
        return arr
    out = np.empty((n, dim), dtype=np.float32)
    bad: list[np.ndarray] = []
    zero: list[np.ndarray] = []
    for start in range(0, n, _BLOCK_ROWS):
        with np.errstate(over="ignore"):  # float64 beyond float32's range -> inf, reported below
            block = np.asarray(arr[start:start + _BLOCK_ROWS], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        norms = _norms64(block)
        if not finite.all():
            bad.append(start + np.flatnonzero(~finite))
        is_zero = finite & (norms == 0.0)
        if is_zero.any():
            zero.append(start + np.flatnonzero(is_zero))
        safe = np.where(finite & ~is_zero, norms, 1.0)
        # float32 / float64 -> float64 quotient rounded once to float32.
        np.divide(block, safe[:, None], out=out[start:start + len(block)], casting="same_kind")
    if bad:
        raise ValueError(f"{name}: {_rows_message(bad)} contain NaN or inf "
                         f"(or values beyond float32's range)")
    if zero:
        raise ValueError(f"{name}: {_rows_message(zero)} are all zeros and have no direction "
                         f"(cosine similarity is undefined)")
    return out


def _norms64(block: np.ndarray) -> np.ndarray:
    # float64 accumulation: exact enough to compare with 1 at 1e-6, and immune to the
    # overflow / underflow of squaring float32 values.
    b64 = block.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", b64, b64))


def _is_unit_float32(arr: np.ndarray) -> bool:
    for start in range(0, len(arr), _BLOCK_ROWS):
        block = arr[start:start + _BLOCK_ROWS]
        if not np.isfinite(block).all():
            return False
        if np.abs(_norms64(block) - 1.0).max(initial=0.0) > _UNIT_TOL:
            return False
    return True


def _rows_message(chunks: list[np.ndarray]) -> str:
    rows = np.concatenate(chunks)
    shown = ", ".join(str(int(r)) for r in rows[:_SHOW_ROWS])
    more = f", ... ({len(rows)} rows in total)" if len(rows) > _SHOW_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} [{shown}{more}]"


def check_positive_int(value, name: str) -> int:
    """`value` as an int; ValueError unless it is an integer >= 1 (numpy ints yes, bool no)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_k(k) -> int:
    """k (neighbours per query) must be a positive integer."""
    return check_positive_int(k, "k")


@dataclass
class KnnResult:
    """k nearest neighbours of n queries.

    ids: int64 (n, k), neighbour ids (row numbers unless the index was given other ids);
        -1 where there is no neighbour (fewer than k candidates, or an approximate index
        found fewer).
    sims: float32 (n, k), inner product of unit vectors = cosine similarity in [-1, 1],
        descending along each row; -inf exactly where ids is -1.
    """

    ids: np.ndarray
    sims: np.ndarray

    def __post_init__(self) -> None:
        self.ids = np.ascontiguousarray(self.ids, dtype=np.int64)
        self.sims = np.ascontiguousarray(self.sims, dtype=np.float32)
        if self.ids.ndim != 2 or self.ids.shape != self.sims.shape:
            raise ValueError(f"KnnResult: ids {self.ids.shape} and sims {self.sims.shape} "
                             f"must be equal 2-D shapes (n, k)")

    @classmethod
    def empty(cls, n: int, k: int) -> KnnResult:
        """n rows of k missing neighbours (-1 / -inf)."""
        return cls(np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32))

    @property
    def k(self) -> int:
        """Columns per row (neighbour slots, including -1 padding)."""
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def padded(self, k: int) -> KnnResult:
        """This result with k columns: extra columns are -1 / -inf, surplus columns dropped."""
        if k <= self.k:
            return self if k == self.k else KnnResult(self.ids[:, :k], self.sims[:, :k])
        pad = KnnResult.empty(len(self), k - self.k)
        return KnnResult(np.hstack([self.ids, pad.ids]), np.hstack([self.sims, pad.sims]))

    def merge(self, other: KnnResult, k: int | None = None) -> KnnResult:
        """Top-k of the union of two results for the same queries (e.g. two index shards).

        k: columns of the merged result; default max(self.k, other.k). The id sets are assumed
        disjoint (shards hold different rows). Ties keep `self`'s entries first (stable sort),
        so merging shards in order prefers lower shards, deterministically.
        """
        if len(self) != len(other):
            raise ValueError(f"merge: results cover {len(self)} and {len(other)} queries")
        k = max(self.k, other.k) if k is None else check_k(k)
        ids = np.hstack([self.ids, other.ids])
        sims = np.hstack([self.sims, other.sims])
        # -(-inf) = +inf sorts last, so missing neighbours stay at the end.
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return KnnResult(np.take_along_axis(ids, order, axis=1),
                         np.take_along_axis(sims, order, axis=1)).padded(k)

    def exclude_self(self, query_ids) -> KnnResult:
        """Drop each row's own id, leaving k-1 columns.

        query_ids: int (n,), the id of each query row in the index. Only the first column
        equal to the row's own id is removed, so an identical duplicate vector (another id,
        sim 1.0) stays. If a row does not contain its own id (an approximate index missed it,
        or many exact duplicates outranked it) its last, least similar column is dropped.
        """
        query_ids = np.asarray(query_ids, dtype=np.int64).reshape(-1)
        n, k = self.ids.shape
        if len(query_ids) != n:
            raise ValueError(f"exclude_self: {len(query_ids)} query ids for {n} rows")
        if k == 0:
            raise ValueError("exclude_self: result has no columns")
        is_self = self.ids == query_ids[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k - 1)
        keep = np.ones((n, k), dtype=bool)
        keep[np.arange(n), drop] = False
        return KnnResult(self.ids[keep].reshape(n, k - 1), self.sims[keep].reshape(n, k - 1))


def recall_at_k(approx: KnnResult, exact: KnnResult, k: int | None = None) -> float:
    """Fraction of the exact neighbours (ids != -1 in the first k columns of `exact`) that
    appear among the first k columns of `approx`'s row for the same query; in [0, 1].

    k: default exact.k. Ties in the exact result count as they were listed. Returns 1.0 when
    `exact` holds no neighbours at all.
    """
    if len(approx) != len(exact):
        raise ValueError(f"recall_at_k: {len(approx)} vs {len(exact)} queries")
    k = exact.k if k is None else check_k(k)
    found = total = 0
    for start in range(0, len(exact), _BLOCK_ROWS):
        a = approx.ids[start:start + _BLOCK_ROWS, :k]
        e = exact.ids[start:start + _BLOCK_ROWS, :k]
        valid = e >= 0
        hit = (a[:, :, None] == e[:, None, :]).any(axis=1) & valid
        found += int(hit.sum())
        total += int(valid.sum())
    return 1.0 if total == 0 else found / total


def rerank_exact(queries, base, positions, xp=np) -> tuple:
    """Exact similarities for candidate neighbours, sorted most similar first.

    queries: (n, d) and base: (N, d) arrays of unit vectors (float16 or float32) in the array
    module `xp` (numpy on the host, cupy on a GPU); positions: int (n, k) row numbers into
    `base`, values outside [0, N) meaning "no neighbour".
    Returns (positions int64, sims float32), both (n, k) in `xp`, each row sorted by
    descending sim = <query, base[pos]> computed in float32, invalid entries last as -1/-inf.
    Used where a backend's own distances cannot be trusted to be in our convention.
    """
    positions = xp.asarray(positions).astype(xp.int64)
    n, k = positions.shape
    valid = (positions >= 0) & (positions < base.shape[0])
    safe = xp.where(valid, positions, 0)
    sims = xp.empty((n, k), dtype=xp.float32)
    # Gathering (rows, k, d) at once could be gigabytes; a few thousand query rows at a time.
    step = max(1, _BLOCK_ROWS * 8 // max(k, 1))
    for start in range(0, n, step):
        q = queries[start:start + step].astype(xp.float32)
        cand = base[safe[start:start + step]].astype(xp.float32)
        sims[start:start + step] = xp.einsum("nd,nkd->nk", q, cand)
    sims = xp.where(valid, sims, -xp.inf).astype(xp.float32)
    positions = xp.where(valid, positions, -1)
    order = xp.argsort(-sims, axis=1)
    return (xp.take_along_axis(positions, order, axis=1),
            xp.take_along_axis(sims, order, axis=1))


class KnnIndex(ABC):
    """A searchable set of unit vectors with int64 ids.

    Subclasses implement `_add(x, ids)` (x already validated, dimension checked) and
    `_search(q, k)` (1 <= k <= ntotal) returning a KnnResult; this class does validation,
    id bookkeeping, the empty-index case and -1 padding.
    """

    name: str = "abstract"

    def __init__(self) -> None:
        self.dim: int | None = None
        self._ntotal = 0

    @property
    def ntotal(self) -> int:
        """Number of vectors added so far."""
        return self._ntotal

    @property
    @abstractmethod
    def params(self) -> dict:
        """Backend name and the effective parameters (derived defaults resolved), for provenance."""

    def add(self, vectors, ids=None) -> None:
        """Add vectors (validated and L2-normalised, see `validate_vectors`).

        ids: int64 (n,), the id reported for each row; default running row numbers
        ntotal, ntotal+1, ... Ids are not checked for uniqueness.
        """
        x = validate_vectors(vectors)
        n, dim = x.shape
        if self.dim is None:
            self.dim = dim
        elif dim != self.dim:
            raise ValueError(f"{self.name}: vectors have dimension {dim}, index has {self.dim}")
        if ids is None:
            ids = np.arange(self._ntotal, self._ntotal + n, dtype=np.int64)
        else:
            ids = np.asarray(ids)
            if ids.dtype.kind not in "iu" or ids.shape != (n,):
                raise ValueError(f"{self.name}: ids must be {n} integers, got "
                                 f"shape {ids.shape} dtype {ids.dtype}")
            ids = ids.astype(np.int64)
        if n == 0:
            return
        self._add(x, ids)
        self._ntotal += n

    def search(self, queries, k: int) -> KnnResult:
        """The k most similar indexed vectors for each query row (validated like `add`).

        Returns a KnnResult of shape (n_queries, k); rows have -1 / -inf padding when the
        index holds fewer than k vectors (or an approximate index found fewer).
        """
        k = check_k(k)
        q = validate_vectors(queries, name="queries")
        if self.dim is not None and q.shape[1] != self.dim:
            raise ValueError(f"{self.name}: queries have dimension {q.shape[1]}, index has {self.dim}")
        if len(q) == 0 or self._ntotal == 0:
            return KnnResult.empty(len(q), k)
        return self._search(q, min(k, self._ntotal)).padded(k)

    def save(self, path: str) -> dict:
        """Write the index (vectors, structure) to the local file `path` and its ids beside it
        (`path` + ".ids.npy"); returns the header `graph.knn.load_index` needs (params, dim,
        ntotal). Backends that cannot be saved raise NotImplementedError (the caller rebuilds
        from the vectors instead)."""
        raise NotImplementedError(f"k-NN backend {self.name!r} cannot be saved; rebuild it from the vectors")

    @abstractmethod
    def _add(self, x: np.ndarray, ids: np.ndarray) -> None: ...

    @abstractmethod
    def _search(self, q: np.ndarray, k: int) -> KnnResult: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ntotal={self.ntotal}, params={self.params})"
