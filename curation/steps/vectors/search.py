"""Cross-modal search over the lake's embeddings, and pruning by query.

    s = VectorSearch.open(lake, spec.score)            # or encoder=EncoderConfig(...)
    s.text("a watermark over a product photo", k=20)   # -> pa.Table: id, uri, similarity, communities
    s.image("failure.png", k=20)

Used to diagnose model failures (which training items look like the failing prompt or image)
and to fill gaps. `prune()` turns failure queries into a removal decision: the communities the
hits fall in are listed and, when applied, every member is recorded in the `removals` table
with the reason; export drops them (rule "removed"). Nothing is deleted.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.storage.lake import Lake
from curation.storage.schemas import DEDUP, REMOVALS, REMOVALS_SCHEMA
from curation.steps.items import ItemError, read_item
from curation.steps.vectors.embeddings import read_embeddings, resolve_encoder
from graph.knn import KnnIndex, choose_backend, make_index, validate_vectors
from operators.decode import DecodePlan
from operators.models.encoders import EncoderConfig, load_encoder



@dataclass
class VectorSearch:
    """An index over `embeddings/<encoder>` plus the encoder's towers for text/image queries."""

    lake: Lake
    encoder_name: str
    ids: np.ndarray
    index: KnnIndex
    encoder_cfg: EncoderConfig | None = None
    _encoder: object = None

    @classmethod
    def open(cls, lake: Lake, encoders: list[EncoderConfig] | EncoderConfig | None = None,
             name: str | None = None, backend: str = "auto") -> "VectorSearch":
        """Index `embeddings/<name>` (the only table if None). `encoders`: the spec's encoder
        configs, needed for text/image queries (not for `vectors()`)."""
        name = resolve_encoder(lake, name, setting="the encoder (--encoder)")
        emb_ids, vectors = read_embeddings(lake, name, dtype=np.float32)
        ids = emb_ids.to_numpy(zero_copy_only=False)
        vectors = validate_vectors(vectors)
        index = make_index(choose_backend(len(ids), override=None if backend == "auto" else backend))
        index.add(vectors)
        cfgs = [encoders] if isinstance(encoders, EncoderConfig) else list(encoders or [])
        cfg = next((c for c in cfgs if c.name == name), None)
        return cls(lake, name, ids, index, cfg)

    # ---- queries ----------------------------------------------------------------------
    def vectors(self, queries: np.ndarray, k: int = 10) -> list[pa.Table]:
        """One result table per query vector (L2-normalised internally)."""
        res = self.index.search(validate_vectors(np.atleast_2d(queries)), min(k, len(self.ids)))
        return [self._table(res.ids[i], res.sims[i]) for i in range(res.ids.shape[0])]

    def text(self, text: str, k: int = 10) -> pa.Table:
        return self.vectors(self.embed_texts([text]), k)[0]

    def image(self, path: str, k: int = 10) -> pa.Table:
        """Nearest items to the image at `path` (a file, a uri, or a `shard.tar#member` uri).
        Raises ItemError ("read: ..." / "decode: ...") for an unreadable or oversized image."""
        enc = self._load_encoder()
        emb = enc.encode_images(self._prepare(enc, path)[None])
        return self.vectors(emb.normalized.cpu().numpy(), k)[0]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), D) L2-normalised text-tower embeddings, ONE batched forward."""
        return self._load_encoder().encode_texts(list(texts)).cpu().numpy().astype(np.float32, copy=False)

    def embed_images(self, paths: list[str]) -> tuple[np.ndarray, list[str | None]]:
        """Image-tower embeddings of the readable images at `paths`, ONE batched forward.

        Returns (float32 (m, D) L2-normalised rows, in the order of the readable paths;
        errors: per path, None or the ItemError message ("read: ..." / "decode: ...")).
        """
        enc = self._load_encoder()
        pixels, errors = [], []
        for path in paths:
            try:
                pixels.append(self._prepare(enc, path))
                errors.append(None)
            except ItemError as exc:
                errors.append(str(exc))
        if not pixels:
            return np.zeros((0, enc.embed_dim), np.float32), errors
        emb = enc.encode_images(np.stack(pixels))
        return emb.normalized.cpu().numpy().astype(np.float32, copy=False), errors

    @staticmethod
    def _prepare(enc, path: str) -> np.ndarray:
        """uint8 (H, W, 3) model input of the image at `path`; raises ItemError."""
        item = read_item(path, DecodePlan("rgb", max(enc.image_size), 8))
        return enc.prepare(item.pil("RGB"))

    def _load_encoder(self):
        if self._encoder is None:
            if self.encoder_cfg is None:
                raise ValueError(f"text/image queries need the encoder {self.encoder_name!r}: "
                                 "pass the spec's score.encoders (with its weights)")
            self._encoder = load_encoder(self.encoder_cfg)
        return self._encoder

    def _table(self, rows: np.ndarray, sims: np.ndarray) -> pa.Table:
        ok = rows >= 0
        hits = pa.table({"id": pa.array(self.ids[rows[ok]], pa.string()),
                         "similarity": pa.array(sims[ok], pa.float32())})
        hits = hits.join(self._details, "id", join_type="left outer", use_threads=False)
        return hits.sort_by([("similarity", "descending"), ("id", "ascending")])

    @functools.cached_property
    def _details(self) -> pa.Table:
        """id -> uri (+ group and community ids): read once, not per query."""
        details = self.lake.read("pool", columns=["id", "uri"])
        if self.lake.exists(DEDUP):
            dedup = self.lake.read(DEDUP)
            levels = [c for c in dedup.column_names if c.startswith("community_l")]
            details = details.join(dedup.select(["id", "group_id", *levels]), "id", join_type="left outer",
                                   use_threads=False)
        return details


# Removal decisions before they are spread over community members: one row per community.
PICKS_SCHEMA = pa.schema([pa.field("community", pa.string()), pa.field("query", pa.string()),
                          pa.field("similarity", pa.float32()), pa.field("reason", pa.string())])


def community_column(lake: Lake, level: int) -> str:
    """`community_l<level>`, checked against the lake's `dedup` table (ValueError naming what to run or set)."""
    if not lake.exists(DEDUP):
        raise ValueError("pruning by community needs the `dedup` table: run `curate dedup` first")
    column = f"community_l{level}"
    have = [c for c in lake.dataset(DEDUP).schema.names if c.startswith("community_l")]
    if column not in have:
        raise ValueError(f"dedup has no community level {level} (levels: {', '.join(have) or 'none'})")
    return column


def best_hit_per_community(hits: pa.Table) -> pa.Table:
    """One row per community: the most similar of its hits (the earliest on equal similarity).

    hits: columns community (string; null rows are dropped), query, similarity (cosine), reason.
    Returns those columns (PICKS_SCHEMA), the picked rows in their order in `hits`.
    """
    hits = hits.filter(pc.is_valid(hits["community"]))
    if hits.num_rows == 0:
        return hits
    order = np.lexsort((np.arange(hits.num_rows), -hits["similarity"].to_numpy().astype(np.float64)))
    ranked = hits.take(order)
    _, first = np.unique(ranked["community"].to_numpy(zero_copy_only=False), return_index=True)
    picked = order[first]
    return hits.take(np.sort(picked))


def community_removals(lake: Lake, level: int, picks: pa.Table) -> pa.Table:
    """REMOVALS_SCHEMA rows for every `dedup` member of the picked communities at `level`.

    picks: one row per community (see `best_hit_per_community`): community, reason, query,
    similarity; each member gets its community's reason, query and similarity. Rows are in
    `dedup` order, all with the current UTC time as decided_at.
    """
    column = community_column(lake, level)
    dedup = lake.read(DEDUP, columns=["id", column])
    communities = picks["community"].combine_chunks()
    members = dedup.filter(pc.is_in(dedup[column], value_set=communities))
    chosen = picks.take(pc.index_in(members[column], value_set=communities))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return pa.table({"id": members["id"], "reason": chosen["reason"], "query": chosen["query"],
                     "community": members[column], "similarity": chosen["similarity"],
                     "decided_at": pa.array([now] * members.num_rows, pa.string())}, schema=REMOVALS_SCHEMA)


def prune(search: VectorSearch, queries: list[tuple[str, str]], *, k: int = 50, min_similarity: float = 0.3,
          level: int = 0, reason: str, apply: bool = False) -> pa.Table:
    """Communities hit by failure queries (("text", "...") or ("image", path)), at `level`.

    Returns every member of those communities with the query and similarity of the hit that
    selected it. With `apply`, appends them to `removals` (export drops them, reason kept).
    """
    if not reason.strip():
        raise ValueError("a removal needs a reason")
    lake = search.lake
    column = community_column(lake, level)
    found = []
    for kind, value in queries:
        hits = search.text(value, k) if kind == "text" else search.image(value, k)
        hits = hits.filter(pc.greater_equal(hits["similarity"], min_similarity))
        n = hits.num_rows
        found.append(pa.table([hits[column], pa.chunked_array([[f"{kind}:{value}"] * n], pa.string()), hits["similarity"],
                               pa.chunked_array([[reason] * n], pa.string())], schema=PICKS_SCHEMA))
    picks = best_hit_per_community(pa.concat_tables(found) if found else PICKS_SCHEMA.empty_table())
    out = community_removals(lake, level, picks)
    if apply and out.num_rows:
        lake.write(REMOVALS, out, producer={"step": "prune", "reason": reason, "queries": len(queries)})
    return out
