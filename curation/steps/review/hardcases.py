"""Hard-case mining: failure prompts and images as retrieval queries against the pool.

    queries, problems = read_queries("failures.jsonl", "failed_images/")
    search = VectorSearch.open(lake, spec.score.encoders, name=cfg.encoder)
    cases = mine(lake, search, queries, cfg, run_id="2024-06-01")   # HARDCASES_SCHEMA rows
    summary = decide(lake, cases, cfg, "2024-06-01")                 # applies and records them

A failure query finds the data clusters behind a model failure, or shows that a concept is
missing. `mine` embeds every text query in one batched forward of the text tower (images in
one of the image tower), searches the index once for all of them and groups the hits by
their `dedup` community; it also says, per concept of the query, whether the knowledge graph
has it and how many pool items carry it. `decide` applies each query's action and records it
in `hardcases`:

- report: nothing but the record;
- prune: every member of the hit communities goes to `removals` (reason 'hardcase: <reason>';
  export drops them, nothing is deleted), as `curate prune` does;
- boost: the query's concept nodes (present or empty) get boost *= cfg.boost in `kg_nodes`
  (boost_source 'hardcases:<run id>'); `curate kg weights` turns that into sample weights;
- fill: the query's missing concepts (its tags no node has; with none, the prompt itself)
  become trending nodes (or, where a kept node has that name, that node is boosted), and the
  query's nearest pool items, whatever their similarity, become review requests
  (`decision_json` {"review_requests": [ids]}) for `review propose`.

A rerun of a run id changes nothing: a case already in `hardcases` is not applied again, a
node is boosted at most once per run (its boost_source holds the run's label), removals are
keyed by id. `kg augment` rebuilds the graph's derived part and replays the recorded boosts
and fills (`replay_graph_decisions`), so a later augment does not wipe them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.steps.review.config import HardcasesConfig
from curation.steps.vectors.search import (PICKS_SCHEMA, VectorSearch, best_hit_per_community, community_column,
                                           community_removals)
from curation.storage.lake import Lake
from curation.storage.schemas import DEDUP, HARDCASES, HARDCASES_SCHEMA, KG_EDGES, KG_NODES, REMOVALS, WEIGHTS
from graph.kg.model import KnowledgeGraph
from graph.kg.prompts import MAX_NGRAM_WORDS, ensure_boost_attrs, longest_matches
from graph.kg.textnorm import fold, name_index, phrase
from graph.kg.weights import TagMapper
from graph.knn import KnnIndex

__all__ = ["ACTIONS", "CommunityIndex", "Mined", "Query", "QueryFile", "decide", "default_run_id", "group_communities",
           "mine", "read_queries", "replay_graph_decisions", "search_and_group"]

ACTIONS = ("report", "prune", "boost", "fill")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
_JSONL_KEYS = frozenset({"prompt", "image", "action", "reason", "tags"})
# Decimals kept for similarities in the JSON columns (cosine; float32 noise is ~1e-7).
_SIM_DECIMALS = 4


# ---- queries ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One failure query.

    kind: 'text' (a failure prompt) or 'image' (a failure image).
    query: the prompt, or the image's path / uri.
    action: one of ACTIONS. reason: why (needed for prune). tags: the query's concepts, as given.
    where: 'file:line' (or the image path) it came from, for messages.
    """

    kind: str
    query: str
    action: str = "report"
    reason: str | None = None
    tags: tuple[str, ...] = ()
    where: str = ""

    @property
    def query_id(self) -> str:
        """16 hex digits of sha256('<kind>:<query>'): stable across runs."""
        return hashlib.sha256(f"{self.kind}:{self.query}".encode("utf-8")).hexdigest()[:16]


class QueryFile(NamedTuple):
    """queries: the usable queries in file order; problems: 'file:line: why' per skipped line."""

    queries: list[Query]
    problems: list[str]


def read_queries(prompts: str | None, images: str | None) -> QueryFile:
    """Failure queries from a prompts file and / or a directory of images.

    prompts: `.jsonl` / `.ndjson`: one JSON object per line with "prompt" (text) or "image"
        (a path, relative to the file's directory, or a uri), and optionally "action"
        (report | prune | boost | fill; default report), "reason" (required for prune) and
        "tags" (a list of concept names); any other file: UTF-8 text, one prompt per line
        (action report). Blank lines and lines starting with '#' are skipped.
    images: a directory; every file below it with an image suffix (sorted) is an image query
        (action report); other files are ignored.
    Bad lines (not JSON, neither or both of prompt / image, wrong types, unknown keys, prune
    without a reason, a repeated query) are skipped and listed in `problems`; an unknown
    action raises ValueError naming the line, as do a missing file or directory.
    """
    if not prompts and not images:
        raise ValueError("hard cases need queries: give a prompts file and/or an images directory")
    queries: list[Query] = []
    problems: list[str] = []
    if prompts:
        path = Path(prompts)
        if not path.is_file():
            raise ValueError(f"prompts file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                where = f"{path}:{number}"
                if path.suffix.lower() in _JSONL_SUFFIXES:
                    parsed = _jsonl_query(text, where, path.parent)
                    if isinstance(parsed, str):
                        problems.append(f"{where}: {parsed}")
                        continue
                    queries.append(parsed)
                else:
                    queries.append(Query("text", text, where=where))
    if images:
        root = Path(images)
        if not root.is_dir():
            raise ValueError(f"images directory {root} does not exist")
        queries += [Query("image", str(p), where=str(p)) for p in sorted(root.rglob("*"))
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    seen: dict[tuple[str, str], str] = {}
    unique = []
    for q in queries:
        if (q.kind, q.query) in seen:
            problems.append(f"{q.where}: repeats the query of {seen[q.kind, q.query]}")
        else:
            seen[q.kind, q.query] = q.where
            unique.append(q)
    return QueryFile(unique, problems)


def _jsonl_query(text: str, where: str, base: Path) -> Query | str:
    """A Query from one JSON line, or the problem with it; unknown actions raise."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})"
    if not isinstance(obj, dict):
        return "expected a JSON object"
    unknown = sorted(set(obj) - _JSONL_KEYS)
    if unknown:
        return f"unknown keys {unknown}; accepted: {sorted(_JSONL_KEYS)}"
    action = obj.get("action", "report")
    if not isinstance(action, str) or action.strip().lower() not in ACTIONS:
        raise ValueError(f"{where}: unknown action {action!r}; choose {', '.join(ACTIONS)}")
    action = action.strip().lower()
    if ("prompt" in obj) == ("image" in obj):
        return 'give either "prompt" or "image"'
    kind = "text" if "prompt" in obj else "image"
    value = obj["prompt" if kind == "text" else "image"]
    if not isinstance(value, str) or not value.strip():
        return f'"{"prompt" if kind == "text" else "image"}" must be a non-empty string'
    value = value.strip()
    if kind == "image" and "://" not in value and not Path(value).is_absolute():
        value = str(base / value)
    reason = obj.get("reason")
    if reason is not None and not isinstance(reason, str):
        return '"reason" must be a string'
    reason = reason.strip() if reason and reason.strip() else None
    if action == "prune" and reason is None:
        return 'a prune needs a "reason"'
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return '"tags" must be a list of strings'
    tags = tuple(dict.fromkeys(t.strip() for t in tags if t.strip()))
    return Query(kind, value, action, reason, tags, where)


def default_run_id() -> str:
    """The current UTC time as 'YYYYmmddTHHMMSSZ'."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# ---- search and community grouping (the vectorised path) ----------------------------------

@dataclass
class CommunityIndex:
    """The `dedup` communities of an index's rows at one level.

    level: the dedup level (0 = finest). code: int32 (rows,) community number of each index
    row, -1 = none (no dedup row, or null community); numbers follow the sorted community
    ids. names: object (m,) the community ids, sorted. size: int64 (m,) members of each
    community in the pool (its `dedup` rows).
    """

    level: int
    code: np.ndarray
    names: np.ndarray
    size: np.ndarray

    @classmethod
    def from_columns(cls, level: int, index_ids, member_ids, member_communities) -> "CommunityIndex":
        """index_ids: the index rows' item ids; member_ids / member_communities: the `dedup`
        table's id and community columns (nulls allowed)."""
        members = _string_array(member_communities)
        encoded = pc.dictionary_encode(members)
        names = encoded.dictionary.to_numpy(zero_copy_only=False)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(names), np.int32)
        rank[order] = np.arange(len(names), dtype=np.int32)
        member_code = np.where(encoded.indices.is_valid().to_numpy(zero_copy_only=False),
                               rank[pc.fill_null(encoded.indices, 0).to_numpy()] if len(names) else -1, -1)
        member_code = member_code.astype(np.int32)
        size = np.bincount(member_code[member_code >= 0], minlength=len(names)).astype(np.int64)
        at = pc.index_in(_string_array(index_ids), value_set=_string_array(member_ids))
        code = np.where(at.is_valid().to_numpy(zero_copy_only=False),
                        member_code[pc.fill_null(at, 0).to_numpy()] if len(member_code) else -1, -1).astype(np.int32)
        return cls(level, code, names[order], size)

    @classmethod
    def from_lake(cls, lake: Lake, index_ids: np.ndarray, level: int) -> "CommunityIndex | None":
        """From the lake's `dedup` table (None without one; ValueError for a level it lacks)."""
        if not lake.exists(DEDUP):
            return None
        column = community_column(lake, level)
        dedup = lake.read(DEDUP, columns=["id", column])
        return cls.from_columns(level, index_ids, dedup["id"], dedup[column])


def _string_array(values) -> pa.Array:
    """A string pa.Array from an Arrow array / chunked array or a sequence."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string()) if isinstance(values, pa.Array) else pa.array(values, pa.string())


@dataclass
class Mined:
    """What one batched search found for n queries.

    offsets: int64 (n+1,): query q's hits are rows[offsets[q]:offsets[q+1]] (index rows, most
        similar first; the first k results with cosine >= min_similarity) and sims alike
        (float32 cosine).
    nearest: int64 (n, fill) index rows of the nearest items whatever their similarity (-1:
        none), the review requests of `fill` queries; (n, 0) when not asked.
    communities: per query, JSON text of its hit communities (see `group_communities`).
    """

    offsets: np.ndarray
    rows: np.ndarray
    sims: np.ndarray
    nearest: np.ndarray
    communities: list[str]


def search_and_group(index: KnnIndex, ids: np.ndarray, vectors: np.ndarray, communities: CommunityIndex | None, *,
                     k: int, min_similarity: float, samples: int, fill: int = 0,
                     valid: np.ndarray | None = None) -> Mined:
    """ONE batched search of `vectors` (n, D) in `index` (rows = positions in `ids`, the pool
    ids), then the hits grouped by community (`group_communities`; "[]" each without
    communities). fill: nearest items kept per query regardless of min_similarity. valid:
    bool (n,), False rows (queries that could not be embedded) get no hits."""
    result = index.search(vectors, max(k, fill))
    kept_ids, kept_sims = result.ids[:, :k], result.sims[:, :k]
    keep = (kept_ids >= 0) & (kept_sims >= min_similarity)
    if valid is not None:
        keep &= np.asarray(valid, bool)[:, None]
    offsets = np.zeros(len(vectors) + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    rows, sims = kept_ids[keep], kept_sims[keep]  # row-major: per query, most similar first
    nearest = result.ids[:, :fill].copy()
    if valid is not None:
        nearest[~np.asarray(valid, bool)] = -1
    grouped = (group_communities(offsets, rows, sims, communities, ids, samples) if communities is not None
               else ["[]"] * len(vectors))
    return Mined(offsets, rows, sims, nearest, grouped)


def group_communities(offsets: np.ndarray, rows: np.ndarray, sims: np.ndarray, communities: CommunityIndex,
                      ids: np.ndarray, samples: int) -> list[str]:
    """Per query, JSON text of [{community, level, size, hits, mean_similarity, max_similarity,
    sample_ids}] over the communities its hits fall in: size = the community's members in the
    pool, hits = its hits, similarities = cosine of those hits, sample_ids = up to `samples`
    of them, most similar first. Communities with the most hits come first (then the best
    similarity, then the id). Hits without a community are left out.

    Grouping is array work (one stable sort of query*m + community); only the JSON is per query.
    """
    n = len(offsets) - 1
    m = max(len(communities.names), 1)
    query = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    code = communities.code[rows]
    has = code >= 0
    key = query[has] * m + code[has]
    order = np.argsort(key, kind="stable")  # stable: within a group, most similar first as searched
    key, sim, row = key[order], sims[has][order], rows[has][order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    count = np.diff(np.r_[start, len(key)])
    total = np.add.reduceat(sim.astype(np.float64), start) if len(key) else np.zeros(0)
    best = sim[start]
    g_query, g_code = key[start] // m, key[start] % m
    rank = np.arange(len(key)) - np.repeat(start, count)
    sample_ids = ids[row[rank < samples]].tolist()
    sample_end = np.cumsum(np.minimum(count, samples))
    g = np.lexsort((g_code, -best, -count, g_query))  # most hits first, then best similarity, then id
    out: list[list[dict]] = [[] for _ in range(n)]
    level = communities.level
    for q, name, size, hits, mean, top, end in zip(
            g_query[g].tolist(), communities.names[g_code[g]].tolist(), communities.size[g_code[g]].tolist(),
            count[g].tolist(), (total[g] / count[g]).tolist(), best[g].tolist(), sample_end[g].tolist()):
        out[q].append({"community": name, "level": level, "size": size, "hits": hits,
                       "mean_similarity": round(mean, _SIM_DECIMALS), "max_similarity": round(top, _SIM_DECIMALS),
                       "sample_ids": sample_ids[end - min(hits, samples):end]})
    return [json.dumps(x, ensure_ascii=False) for x in out]


# ---- concept coverage ---------------------------------------------------------------------

class _Coverage:
    """Concept coverage against the lake's knowledge graph and `weights`.

    A tag maps to a kept node as tag weighting does (`TagMapper`: folded title, then alias);
    a prompt without tags names the kept nodes whose titles or aliases it mentions (the
    longest-match scan of prompt counting, `graph.kg.prompts.longest_matches`). items: pool
    items whose `weights.nodes` list the node (without `weights`: the node's tag_count from
    `kg augment`).
    """

    def __init__(self, lake: Lake) -> None:
        self.kg = None
        if not lake.exists(KG_NODES):
            return
        kg = KnowledgeGraph.from_tables(lake.read(KG_NODES), lake.read(KG_EDGES))
        self.kg = kg
        self.mapper = TagMapper(kg)
        self.lookup = {key: pos for key, (pos, _) in name_index(kg, phrase).items()
                       if key.count(" ") < MAX_NGRAM_WORDS}
        self.longest = max((key.count(" ") + 1 for key in self.lookup), default=0)
        if lake.exists(WEIGHTS):
            listed = pc.list_flatten(lake.read(WEIGHTS, columns=["nodes"])["nodes"]).to_numpy(zero_copy_only=False)
            order = np.argsort(kg.node_id, kind="stable")
            at = np.searchsorted(kg.node_id[order], listed)
            ok = at < kg.n
            ok[ok] = kg.node_id[order][at[ok]] == listed[ok]
            self.items = np.bincount(order[at[ok]], minlength=kg.n).astype(np.int64)
        else:
            self.items = np.asarray(kg.attrs.get("tag_count", np.zeros(kg.n)), np.int64)

    def tags_in(self, prompt: str) -> list[str]:
        """Titles of the kept nodes a prompt names, in the order they appear (approximately:
        by the first position of their folded title, else alphabetically)."""
        if self.kg is None:
            return []
        text = phrase(prompt)
        hits = longest_matches(text.split(" ") if text else [], self.lookup, self.longest)
        titles = [self.kg.title[p] for p in hits]
        return sorted(titles, key=lambda t: (text.find(phrase(t)) % (len(text) + 1), t))

    def entries(self, tags: list[str]) -> list[dict]:
        """{tag, node, title, status, items} per tag (see HARDCASES_SCHEMA.coverage_json)."""
        if self.kg is None or not tags:
            return []
        match = self.mapper.map(tags)
        out = []
        for tag, pos in zip(tags, match.node.tolist()):
            if pos < 0:
                out.append({"tag": tag, "node": None, "title": None, "status": "absent", "items": 0})
            else:
                n = int(self.items[pos])
                out.append({"tag": tag, "node": int(self.kg.node_id[pos]), "title": self.kg.title[pos],
                            "status": "present" if n > 0 else "empty", "items": n})
        return out


# ---- mining -------------------------------------------------------------------------------

def mine(lake: Lake, search: VectorSearch, queries: list[Query], cfg: HardcasesConfig,
         run_id: str | None = None) -> pa.Table:
    """HARDCASES_SCHEMA rows, one per query in order (not written: `decide` records them).

    Text queries are embedded in ONE batched forward of the text tower, image queries in one
    of the image tower; all are searched in ONE batched search of `search.index` (k =
    cfg.k, or cfg.fill_requests when larger and a fill query is present). hit_ids /
    hit_similarity: the first cfg.k hits with cosine >= cfg.min_similarity; communities_json:
    their `dedup` communities at cfg.level ("[]" without a `dedup` table); coverage_json: the
    concepts' coverage (tags given with the query, else graph titles the prompt names; "[]"
    without a knowledge graph). decision_json: null, except {"review_requests": [ids]} for
    fill queries (the cfg.fill_requests nearest items, whatever their similarity) and
    {"error": "..."} for an image that cannot be read. decided_at: null until `decide`.
    A query that hits nothing is a row with empty hits. run_id: default `default_run_id()`.
    """
    run_id = run_id or default_run_id()
    counts = Counter((q.kind, q.query) for q in queries)
    repeated = [f"{kind}:{value}" for (kind, value), c in counts.items() if c > 1]
    if repeated:
        raise ValueError(f"repeated queries (one case per query): {repeated[:5]}")
    bad = sorted({q.action for q in queries} - set(ACTIONS))
    if bad:
        raise ValueError(f"unknown actions {bad}; choose {', '.join(ACTIONS)}")
    n = len(queries)
    dim = search.index.dim or 1
    vectors = np.zeros((n, dim), np.float32)
    vectors[:, 0] = 1.0  # a unit placeholder for rows that cannot be embedded (valid False)
    valid = np.ones(n, bool)
    errors: list[str | None] = [None] * n
    texts = [i for i, q in enumerate(queries) if q.kind == "text"]
    images = [i for i, q in enumerate(queries) if q.kind == "image"]

    def check_dim(emb: np.ndarray) -> np.ndarray:
        if emb.shape[1] != dim:
            raise ValueError(f"the encoder gives {emb.shape[1]}-d embeddings, embeddings/{search.encoder_name} holds "
                             f"{dim}-d vectors: set hardcases.encoder to the encoder that wrote them")
        return emb

    if texts:
        vectors[texts] = check_dim(search.embed_texts([queries[i].query for i in texts]))
    if images:
        emb, image_errors = search.embed_images([queries[i].query for i in images])
        readable = [i for i, e in zip(images, image_errors) if e is None]
        if readable:
            vectors[readable] = check_dim(emb)
        for i, e in zip(images, image_errors):
            if e is not None:
                errors[i], valid[i] = e, False
    fill = cfg.fill_requests if any(q.action == "fill" for q in queries) else 0
    communities = CommunityIndex.from_lake(lake, search.ids, cfg.level)
    found = search_and_group(search.index, search.ids, vectors, communities, k=cfg.k,
                             min_similarity=cfg.min_similarity, samples=cfg.samples, fill=fill, valid=valid)
    coverage = _Coverage(lake)
    tags = [list(q.tags) if q.tags else (coverage.tags_in(q.query) if q.kind == "text" else []) for q in queries]
    decisions = []
    for i, q in enumerate(queries):
        if errors[i] is not None:
            decisions.append(json.dumps({"error": errors[i]}, ensure_ascii=False))
        elif q.action == "fill":
            near = found.nearest[i]
            decisions.append(json.dumps({"review_requests": search.ids[near[near >= 0]].tolist()}))
        else:
            decisions.append(None)
    offsets = pa.array(found.offsets.astype(np.int32))
    return pa.table({
        "case_id": [f"{run_id}:{q.query_id}" for q in queries],
        "run_id": [run_id] * n,
        "kind": [q.kind for q in queries],
        "query": [q.query for q in queries],
        "tags": pa.array(tags, pa.list_(pa.string())),
        "action": [q.action for q in queries],
        "reason": pa.array([q.reason for q in queries], pa.string()),
        "hit_ids": pa.ListArray.from_arrays(offsets, pa.array(search.ids[found.rows], pa.string())),
        "hit_similarity": pa.ListArray.from_arrays(offsets, pa.array(found.sims, pa.float32())),
        "communities_json": found.communities,
        "coverage_json": [json.dumps(coverage.entries(t), ensure_ascii=False) for t in tags],
        "decision_json": pa.array(decisions, pa.string()),
        "decided_at": pa.nulls(n, pa.string()),
    }, schema=HARDCASES_SCHEMA)


# ---- decisions ----------------------------------------------------------------------------

class _GraphEditor:
    """Hard-case boosts and fills on a KnowledgeGraph in memory, each node boosted at most
    once per run label (its boost_source lists the label once applied)."""

    def __init__(self, kg: KnowledgeGraph) -> None:
        ensure_boost_attrs(kg)
        kg.attrs["boost"] = np.array(kg.attrs["boost"], np.float64)  # a graph read from the lake is a read-only view
        self.kg = kg
        self.by_id = kg.position()
        self.by_title = name_index(kg, fold)     # boost targets: titles as tags map them
        self.by_phrase = name_index(kg, phrase)  # fill concepts: names as trending lists match them
        self.changed: set[int] = set()

    def resolve(self, node: int | None, title: str | None) -> int | None:
        """The node's position: by id when it still carries that title, else by folded title."""
        pos = self.by_id.get(node) if node is not None else None
        if pos is not None and self.kg.drop_reason[pos] is None and (title is None or self.kg.title[pos] == title):
            return pos
        hit = self.by_title.get(fold(title)) if title else None
        return hit[0] if hit else None

    def boost(self, pos: int, factor: float, label: str) -> bool:
        """boost *= factor unless this label already boosted the node; True if applied."""
        current = self.kg.boost_source[pos]
        if current is not None and label in current.split("; "):
            return False
        self.kg.attrs["boost"][pos] *= factor
        self.kg.boost_source[pos] = label if current is None else f"{current}; {label}"
        self.changed.add(pos)
        return True

    def fill(self, concept: str, factor: float, label: str) -> dict:
        """A kept node named `concept` is boosted; otherwise a trending node (source and
        boost_source `label`, boost = factor) is added. Returns {title, node, factor, added, applied}."""
        hit = self.by_phrase.get(phrase(concept))
        if hit is not None:
            pos, added = hit[0], False
            applied = self.boost(pos, factor, label)
        else:
            title = " ".join(concept.replace("_", " ").split())
            pos = int(self.kg.add_nodes([title], "trending", label, attrs={
                "boost": np.asarray([factor], np.float64), "prompt_count": np.zeros(1, np.int64)})[0])
            self.kg.boost_source[pos] = label
            self.by_id[int(self.kg.node_id[pos])] = pos
            self.by_phrase[phrase(title)] = (pos, "title")
            self.by_title.setdefault(fold(title), (pos, "title"))
            self.changed.add(pos)
            added = applied = True
        return {"title": self.kg.title[pos], "node": int(self.kg.node_id[pos]), "factor": factor,
                "added": added, "applied": applied}


def _fill_concepts(case: dict) -> list[str]:
    """What a fill adds to the graph: the query's absent concepts (tags no node has); with
    none, the prompt itself (an image query without absent tags adds nothing)."""
    absent = [e["tag"] for e in json.loads(case["coverage_json"] or "[]") if e["status"] == "absent"]
    if absent:
        return list(dict.fromkeys(absent))
    return [case["query"]] if case["kind"] == "text" else []


def _boost_targets(case: dict) -> list[dict]:
    """The case's concept nodes that exist (coverage status present or empty): {node, title}."""
    return [{"node": e["node"], "title": e["title"]} for e in json.loads(case["coverage_json"] or "[]")
            if e["status"] in ("present", "empty")]


def _boost(editor: _GraphEditor, targets: list[dict], factor: float, label: str) -> dict:
    """Boost each {node, title} target; the decision record {"factor", "nodes": [{node, title, applied}]}
    (applied False: already boosted by this run, or no longer in the graph)."""
    nodes = []
    for t in targets:
        pos = editor.resolve(t["node"], t["title"])
        applied = pos is not None and editor.boost(pos, factor, label)
        nodes.append({"node": t["node"], "title": t["title"], "applied": applied})
    return {"factor": factor, "nodes": nodes}


def decide(lake: Lake, cases: pa.Table, cfg: HardcasesConfig, run_id: str) -> dict:
    """Apply each case's action and record the cases in `hardcases` (keyed by case_id).

    cases: `mine`'s rows for run `run_id`. Cases already in `hardcases` are skipped (a rerun
    changes nothing), and so are cases whose query could not be embedded (recorded with their
    error). Effects are written before the records, so a crash in between is repaired by a
    rerun without applying anything twice:
    - prune: REMOVALS rows (reason 'hardcase: <reason>', query 'text:...' / 'image:...', the
      community and the similarity of its best hit) for every member of the case's hit
      communities; ids already in `removals` keep their first decision.
    - boost: boost *= cfg.boost on the case's present / empty concept nodes.
    - fill: the case's absent concepts (with none, the prompt) become trending nodes with
      boost cfg.boost, or boost the kept node of that name.
    Boosts and fills are one MERGE of `kg_nodes` (boost_source gains 'hardcases:<run_id>';
    each node once per run). decision_json records what was applied ({"removal_communities",
    "members"}, {"boost": {"factor", "nodes"}}, {"trending": [...], "review_requests": [...]});
    decided_at is the UTC time.
    Returns the summary: run_id, queries, decided, already_decided, hits_per_query (min /
    mean / max over queries), no_hit, errors, actions (per action), removals (rows added),
    boosted_nodes, trending_added, review_requests, concepts_absent / concepts_empty (distinct
    tags), and `weights` (what to rerun) when the graph changed.
    """
    if cases.num_rows and set(cases["run_id"].to_pylist()) != {run_id}:
        raise ValueError(f"decide: the cases are not all of run {run_id!r}")
    known = (set(lake.read(HARDCASES, columns=["case_id"], filter=pc.field("run_id") == run_id)["case_id"].to_pylist())
             if lake.exists(HARDCASES) else set())
    rows = [r for r in cases.to_pylist() if r["case_id"] not in known]
    decisions = {r["case_id"]: json.loads(r["decision_json"]) if r["decision_json"] else {} for r in rows}
    todo = [r for r in rows if "error" not in decisions[r["case_id"]]]
    prunes = [r for r in todo if r["action"] == "prune"]
    graph_cases = [r for r in todo if r["action"] in ("boost", "fill")]
    if prunes:
        community_column(lake, cfg.level)  # fail before anything is written
    if graph_cases and not lake.exists(KG_NODES):
        raise ValueError(f"boost and fill decisions need the knowledge graph: run `curate kg build` on {lake.uri}")

    removals = _apply_prunes(lake, prunes, cfg, decisions)
    graph = _apply_graph(lake, graph_cases, cfg, f"hardcases:{run_id}", decisions) if graph_cases else {}
    if rows:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        for r in rows:
            r["decision_json"] = json.dumps(decisions[r["case_id"]], ensure_ascii=False)
            r["decided_at"] = now
        lake.write(HARDCASES, pa.Table.from_pylist(rows, schema=HARDCASES_SCHEMA), key="case_id",
                   producer={"step": "hardcases", "run_id": run_id, "k": cfg.k, "min_similarity": cfg.min_similarity,
                             "level": cfg.level, "boost": cfg.boost})
    return _summary(cases, rows, decisions, removals, graph, run_id)


def _apply_prunes(lake: Lake, rows: list[dict], cfg: HardcasesConfig, decisions: dict) -> int:
    """`removals` rows for the prune cases (each community once, from its most similar hit
    over the cases); records {"removal_communities", "members"} per case. Returns the rows
    added to `removals` (ids it already held are kept as they were)."""
    if not rows:
        return 0
    found = []
    for r in rows:
        communities = json.loads(r["communities_json"] or "[]")
        large = [{"community": c["community"], "size": c["size"]} for c in communities if c["size"] > cfg.max_prune_size]
        if large:
            decisions[r["case_id"]]["too_large_to_prune"] = large
        communities = [c for c in communities if c["size"] <= cfg.max_prune_size]
        m = len(communities)
        found.append(pa.table([pa.array([c["community"] for c in communities], pa.string()),
                               pa.array([f"{r['kind']}:{r['query']}"] * m, pa.string()),
                               pa.array([c["max_similarity"] for c in communities], pa.float32()),
                               pa.array([f"hardcase: {r['reason']}"] * m, pa.string())], schema=PICKS_SCHEMA))
    out = community_removals(lake, cfg.level, best_hit_per_community(pa.concat_tables(found)))
    for r, picked in zip(rows, found):
        members = pc.sum(pc.is_in(out["community"], value_set=picked["community"].combine_chunks())).as_py()
        decisions[r["case_id"]].update(removal_communities=picked["community"].to_pylist(), members=int(members or 0))
    if not out.num_rows:
        return 0
    had = lake.read(REMOVALS, columns=["id"])["id"].combine_chunks() if lake.exists(REMOVALS) else pa.array([], pa.string())
    added = int(pc.sum(pc.invert(pc.is_in(out["id"], value_set=had))).as_py() or 0)
    lake.write(REMOVALS, out, key="id", producer={"step": "hardcases", "cases": len(rows)})
    return added


def _apply_graph(lake: Lake, rows: list[dict], cfg: HardcasesConfig, label: str, decisions: dict) -> dict:
    """Boost and fill cases as one MERGE of the changed `kg_nodes` rows, recomputed from the
    latest version when another writer commits first. Returns {'boosted_nodes', 'trending_added'}."""
    counts: dict = {}

    def make(snapshot) -> pa.Table | None:
        nodes = snapshot.to_table()
        kg = KnowledgeGraph.from_tables(nodes, lake.read(KG_EDGES))
        editor = _GraphEditor(kg)
        boosted = added = 0
        for r in rows:
            decision = decisions[r["case_id"]]
            if r["action"] == "boost":
                decision["boost"] = _boost(editor, _boost_targets(r), cfg.boost, label)
                boosted += sum(n["applied"] for n in decision["boost"]["nodes"])
            else:
                decision["trending"] = [editor.fill(c, cfg.boost, label) for c in _fill_concepts(r)]
                added += sum(t["added"] for t in decision["trending"])
                boosted += sum(t["applied"] and not t["added"] for t in decision["trending"])
        counts.update(boosted_nodes=boosted, trending_added=added)
        if not editor.changed:
            return None
        # A graph never boosted has null boosts (neutral): they are all written, as 1, so the
        # column never mixes nulls and values (a reader would take the nulls for NaN).
        unset = np.flatnonzero(pc.is_null(nodes["boost"]).to_numpy(zero_copy_only=False))
        written = sorted(editor.changed | set(unset.tolist()))
        return kg.nodes_table().take(pa.array(written, pa.int64()))

    lake.transact(KG_NODES, make, key="node", update_columns=["boost", "boost_source", "prompt_count"],
                  producer={"step": "hardcases", "label": label})
    return counts


def _summary(cases: pa.Table, rows: list[dict], decisions: dict, removals: int, graph: dict, run_id: str) -> dict:
    """The summary `decide` returns (see there)."""
    hits = pc.list_value_length(cases["hit_ids"]).to_numpy(zero_copy_only=False) if cases.num_rows else np.zeros(0)
    errors = np.array([bool(d) and "error" in json.loads(d) for d in cases["decision_json"].to_pylist()], bool)
    coverage = [e for text in cases["coverage_json"].to_pylist() for e in json.loads(text or "[]")]
    summary = {
        "run_id": run_id, "queries": cases.num_rows, "decided": len(rows),
        "already_decided": cases.num_rows - len(rows),
        "hits_per_query": ({"min": int(hits.min()), "mean": round(float(hits.mean()), 1), "max": int(hits.max())}
                           if len(hits) else {}),
        "no_hit": int(((hits == 0) & ~errors).sum()), "errors": int(errors.sum()),
        "actions": dict(Counter(cases["action"].to_pylist())),
        "removals": removals, "boosted_nodes": graph.get("boosted_nodes", 0),
        "trending_added": graph.get("trending_added", 0),
        "review_requests": sum(len(d.get("review_requests", [])) for d in decisions.values()),
        "communities_too_large_to_prune": sum(len(d.get("too_large_to_prune", [])) for d in decisions.values()),
        "concepts_absent": sorted({e["tag"] for e in coverage if e["status"] == "absent"}),
        "concepts_empty": sorted({e["tag"] for e in coverage if e["status"] == "empty"}),
    }
    if graph.get("boosted_nodes") or graph.get("trending_added"):
        summary["weights"] = "kg_nodes changed: rerun `curate kg weights` to reweight the samples"
    return summary


def replay_graph_decisions(lake: Lake, kg: KnowledgeGraph) -> dict:
    """Re-apply the boosts and fills recorded in `hardcases` to `kg` in memory (after `kg
    augment` rebuilt its derived part, which drops them), in the order they were decided,
    each under its run's label. Boost nodes are found by id, else by title; fill concepts by
    name, else added again as trending nodes. Returns {'cases', 'boosted', 'added', 'unmatched'}
    (unmatched: boosted nodes the graph no longer has)."""
    if not lake.exists(HARDCASES):
        return {"cases": 0, "boosted": 0, "added": 0, "unmatched": 0}
    table = lake.read(HARDCASES, columns=["case_id", "run_id", "action", "decision_json", "decided_at"],
                      filter=pc.field("action").isin(["boost", "fill"]) & pc.field("decided_at").is_valid())
    table = table.sort_by([("decided_at", "ascending"), ("case_id", "ascending")])
    editor = _GraphEditor(kg)
    boosted = added = unmatched = 0
    for r in table.to_pylist():
        decision = json.loads(r["decision_json"] or "{}")
        label = f"hardcases:{r['run_id']}"
        if r["action"] == "boost" and "boost" in decision:
            for n in (n for n in decision["boost"]["nodes"] if n["applied"]):
                pos = editor.resolve(n["node"], n["title"])
                if pos is None:
                    unmatched += 1
                else:
                    boosted += editor.boost(pos, decision["boost"]["factor"], label)
        for t in decision.get("trending", []):
            done = editor.fill(t["title"], t["factor"], label)
            added += done["added"]
            boosted += done["applied"] and not done["added"]
    return {"cases": table.num_rows, "boosted": boosted, "added": added, "unmatched": unmatched}
