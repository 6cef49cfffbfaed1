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
from curation.steps.items import read_item
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
        enc = self._load_encoder()
        return self.vectors(enc.encode_texts([text]).cpu().numpy(), k)[0]

    def image(self, path: str, k: int = 10) -> pa.Table:
        """Nearest items to the image at `path` (a file, a uri, or a `shard.tar#member` uri).
        Raises ItemError ("read: ..." / "decode: ...") for an unreadable or oversized image."""
        enc = self._load_encoder()
        item = read_item(path, DecodePlan("rgb", max(enc.image_size), 8))
        emb = enc.encode_images(enc.prepare(item.pil("RGB"))[None])
        return self.vectors(emb.normalized.cpu().numpy(), k)[0]

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

def prune(search: VectorSearch, queries: list[tuple[str, str]], *, k: int = 50, min_similarity: float = 0.3,
          level: int = 0, reason: str, apply: bool = False) -> pa.Table:
    """Communities hit by failure queries (("text", "...") or ("image", path)), at `level`.

    Returns every member of those communities with the query and similarity of the hit that
    selected it. With `apply`, appends them to `removals` (export drops them, reason kept).
    """
    if not reason.strip():
        raise ValueError("a removal needs a reason")
    lake = search.lake
    if not lake.exists(DEDUP):
        raise ValueError("pruning by community needs the `dedup` table: run `curate dedup` first")
    column = f"community_l{level}"
    dedup = lake.read(DEDUP, columns=["id", column])
    picked: dict[str, tuple[str, float]] = {}
    for kind, value in queries:
        hits = search.text(value, k) if kind == "text" else search.image(value, k)
        hits = hits.filter(pc.greater_equal(hits["similarity"], min_similarity))
        for community, sim in zip(hits[column].to_pylist(), hits["similarity"].to_pylist()):
            if community is not None and (community not in picked or picked[community][1] < sim):
                picked[community] = (f"{kind}:{value}", sim)
    members = dedup.filter(pc.is_in(dedup[column], value_set=pa.array(list(picked), pa.string())))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    comm = members[column].to_pylist()
    out = pa.table({"id": members["id"], "reason": pa.array([reason] * members.num_rows, pa.string()),
                    "query": pa.array([picked[c][0] for c in comm], pa.string()), "community": members[column],
                    "similarity": pa.array([picked[c][1] for c in comm], pa.float32()),
                    "decided_at": pa.array([now] * members.num_rows, pa.string())}, schema=REMOVALS_SCHEMA)
    if apply and out.num_rows:
        lake.write(REMOVALS, out, producer={"step": "prune", "reason": reason, "queries": len(queries)})
    return out
