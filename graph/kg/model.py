"""The knowledge graph in memory: node columns and edge lists as compact numpy arrays.

Nodes are addressed by position (row 0..n-1, int32 in edge arrays) and identified by a stable
int64 `node_id`: the Wikipedia page id for articles, `SYNTHETIC_ID_BASE + k` for nodes this
project adds (taxonomy parents, trending concepts). Edges:
- link (src -> dst): article links, de-duplicated, no self loops;
- parent (child -> parent): the hierarchy (taxonomy levels, attachments to Wikipedia nodes);
- alias: a redirect title (with the redirect page's own id) naming a node.

Nothing is deleted by pruning: `drop_reason` is None for kept nodes and says why otherwise.
Per-node numeric attributes (pagerank, prompt_count, boost, level, ...) live in `attrs`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pyarrow as pa

NODE_KINDS = ("article", "taxonomy", "trending")
EDGE_KINDS = ("link", "parent", "alias")
# Ids this project mints sit far above any Wikipedia page id (enwiki is below 2**27).
SYNTHETIC_ID_BASE = 1 << 40


# Attribute values for rows that never had one: a neutral boost, no PageRank (NaN -> null).
_ATTR_DEFAULTS = {"boost": 1.0}


def attr_default(name: str, dtype: np.dtype):
    if name in _ATTR_DEFAULTS:
        return _ATTR_DEFAULTS[name]
    return np.nan if np.issubdtype(dtype, np.floating) else 0


def _objects(values: Iterable) -> np.ndarray:
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclass
class KnowledgeGraph:
    """Columns of equal length n (nodes) and edge arrays of node positions.

    node_id int64 [n]; title object [n] (display form: spaces, not underscores); kind object [n]
    (one of NODE_KINDS); source object [n] (provenance: dump file, 'taxonomy', 'trending:<file>');
    drop_reason object [n] (None = kept); boost_source object [n] (None, or where the node's
    boost came from: 'prompts:<file>', 'trending:<file>', joined with '; '). link_src/link_dst and parent_src/parent_dst int32
    positions; alias_id int64 (the redirect page id), alias_title object, alias_node int32.
    attrs: extra per-node float64/int64 columns of length n (pagerank, prompt_count, boost, level).
    """

    node_id: np.ndarray
    title: np.ndarray
    kind: np.ndarray
    source: np.ndarray
    drop_reason: np.ndarray
    link_src: np.ndarray
    link_dst: np.ndarray
    parent_src: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    parent_dst: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    alias_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    alias_title: np.ndarray = field(default_factory=lambda: _objects([]))
    alias_node: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    attrs: dict[str, np.ndarray] = field(default_factory=dict)
    boost_source: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.node_id)
        if self.boost_source is None:
            self.boost_source = _objects([None] * n)
        for name in ("title", "kind", "source", "drop_reason", "boost_source"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"KnowledgeGraph.{name} has {len(getattr(self, name))} rows, node_id has {n}")
        for name, col in self.attrs.items():
            if len(col) != n:
                raise ValueError(f"KnowledgeGraph.attrs[{name!r}] has {len(col)} rows, node_id has {n}")
        for a, b in (("link_src", "link_dst"), ("parent_src", "parent_dst"), ("alias_title", "alias_node")):
            if len(getattr(self, a)) != len(getattr(self, b)):
                raise ValueError(f"KnowledgeGraph.{a} and {b} differ in length")
        bad = set(self.kind.tolist()) - set(NODE_KINDS)
        if bad:
            raise ValueError(f"unknown node kinds {sorted(bad)}; expected {NODE_KINDS}")

    @classmethod
    def from_articles(cls, node_id, title, source: str, link_src, link_dst,
                      alias_id=(), alias_title=(), alias_node=()) -> "KnowledgeGraph":
        """Articles only (kind 'article', all kept)."""
        n = len(node_id)
        return cls(node_id=np.asarray(node_id, np.int64), title=_objects(title),
                   kind=_objects(["article"] * n), source=_objects([source] * n),
                   drop_reason=_objects([None] * n),
                   link_src=np.asarray(link_src, np.int32), link_dst=np.asarray(link_dst, np.int32),
                   alias_id=np.asarray(alias_id, np.int64), alias_title=_objects(alias_title),
                   alias_node=np.asarray(alias_node, np.int32))

    @property
    def n(self) -> int:
        return len(self.node_id)

    @property
    def kept(self) -> np.ndarray:
        """bool [n]: nodes without a drop reason."""
        return np.fromiter((r is None for r in self.drop_reason), bool, self.n)

    def position(self) -> dict[int, int]:
        """node_id -> position (a dict: build once, not per lookup)."""
        return {int(v): i for i, v in enumerate(self.node_id)}

    def next_synthetic_id(self) -> int:
        top = int(self.node_id.max()) if self.n else 0
        return max(SYNTHETIC_ID_BASE, top + 1)

    def add_nodes(self, titles: list[str], kind: str, source: str | list[str],
                  attrs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Append nodes with fresh synthetic ids; returns their positions (int32). Attrs not
        given are filled with `attr_default` for the new rows (and old rows of a new attr)."""
        if kind not in NODE_KINDS:
            raise ValueError(f"unknown node kind {kind!r}; expected {NODE_KINDS}")
        m, start = len(titles), self.n
        sources = [source] * m if isinstance(source, str) else list(source)
        if len(sources) != m:
            raise ValueError("add_nodes: one source per title")
        first = self.next_synthetic_id()
        self.node_id = np.concatenate([self.node_id, np.arange(first, first + m, dtype=np.int64)])
        self.title = np.concatenate([self.title, _objects(titles)])
        self.kind = np.concatenate([self.kind, _objects([kind] * m)])
        self.source = np.concatenate([self.source, _objects(sources)])
        self.drop_reason = np.concatenate([self.drop_reason, _objects([None] * m)])
        self.boost_source = np.concatenate([self.boost_source, _objects([None] * m)])
        attrs = attrs or {}
        for name in set(self.attrs) | set(attrs):
            old = self.attrs.get(name)
            new = attrs.get(name)
            dtype = (old if old is not None else np.asarray(new)).dtype
            old = np.full(start, attr_default(name, dtype), dtype) if old is None else old
            new = np.full(m, attr_default(name, dtype), dtype) if new is None else np.asarray(new, dtype)
            self.attrs[name] = np.concatenate([old, new])
        return np.arange(start, start + m, dtype=np.int32)

    def add_parent_edges(self, child: np.ndarray, parent: np.ndarray) -> None:
        self.parent_src = np.concatenate([self.parent_src, np.asarray(child, np.int32)])
        self.parent_dst = np.concatenate([self.parent_dst, np.asarray(parent, np.int32)])

    def below(self, root: int, limit: int | None = None) -> list[int]:
        """Positions under `root` through parent edges (child -> parent walked downward),
        breadth first, each once, at most `limit` of them."""
        children: dict[int, list[int]] = {}
        for c, p in zip(self.parent_src.tolist(), self.parent_dst.tolist()):
            children.setdefault(p, []).append(c)
        order, seen = [], {int(root)}
        queue = deque([int(root)])
        while queue and (limit is None or len(order) < limit):
            for c in children.get(queue.popleft(), ()):
                if c not in seen and (limit is None or len(order) < limit):
                    seen.add(c)
                    order.append(c)
                    queue.append(c)
        return order

    def without_derived(self) -> "KnowledgeGraph":
        """A copy without what `kg augment` derives: taxonomy and trending nodes, parent edges,
        boosts, prompt and tag counts. Articles, links, aliases, PageRank and drops remain."""
        keep = self.kind == "article"
        new_pos = np.cumsum(keep) - 1
        links = keep[self.link_src] & keep[self.link_dst]
        aliases = keep[self.alias_node]
        derived = ("boost", "prompt_count", "tag_count", "ancestors", "descendants", "level")
        return KnowledgeGraph(
            node_id=self.node_id[keep], title=self.title[keep], kind=self.kind[keep], source=self.source[keep],
            drop_reason=self.drop_reason[keep],
            link_src=new_pos[self.link_src[links]].astype(np.int32), link_dst=new_pos[self.link_dst[links]].astype(np.int32),
            alias_id=self.alias_id[aliases], alias_title=self.alias_title[aliases],
            alias_node=new_pos[self.alias_node[aliases]].astype(np.int32),
            attrs={k: v[keep] for k, v in self.attrs.items() if k not in derived})

    # -- lake tables -------------------------------------------------------------------------

    def nodes_table(self) -> pa.Table:
        """Rows for the `kg_nodes` table (schema: graph.kg.tables.KG_NODES_SCHEMA)."""
        from graph.kg.tables import KG_NODES_SCHEMA, conform

        kept = self.kept
        cols = {
            "node": pa.array(self.node_id, pa.int64()),
            "title": pa.array(list(self.title), pa.string()),
            "kind": pa.array(list(self.kind), pa.string()),
            "source": pa.array(list(self.source), pa.string()),
            "kept": pa.array(kept),
            "drop_reason": pa.array(list(self.drop_reason), pa.string()),
            "boost_source": pa.array(list(self.boost_source), pa.string()),
        }
        for name, col in self.attrs.items():
            cols[name] = pa.array(col, from_pandas=True)  # NaN -> null
        return conform(pa.table(cols), KG_NODES_SCHEMA)

    def edges_table(self) -> pa.Table:
        """Rows for the `kg_edges` table (schema: graph.kg.tables.KG_EDGES_SCHEMA)."""
        from graph.kg.tables import KG_EDGES_SCHEMA, conform

        nid = self.node_id
        parts = []
        for kind, s, d, alias in (("link", nid[self.link_src], nid[self.link_dst], None),
                                  ("parent", nid[self.parent_src], nid[self.parent_dst], None),
                                  ("alias", self.alias_id, nid[self.alias_node], self.alias_title)):
            m = len(s)
            parts.append(pa.table({
                "src": pa.array(s, pa.int64()), "dst": pa.array(d, pa.int64()),
                "kind": pa.array(np.full(m, kind, dtype=object), pa.string()),
                "alias": pa.array(list(alias) if alias is not None else [None] * m, pa.string()),
            }))
        return conform(pa.concat_tables(parts), KG_EDGES_SCHEMA)

    @classmethod
    def from_tables(cls, nodes: pa.Table, edges: pa.Table) -> "KnowledgeGraph":
        """Inverse of nodes_table / edges_table. Edges whose ends are not nodes are an error."""
        node_id = nodes.column("node").to_numpy().astype(np.int64)
        order = np.argsort(node_id, kind="stable")
        sorted_ids = node_id[order]

        def positions(ids: np.ndarray, what: str) -> np.ndarray:
            at = np.searchsorted(sorted_ids, ids)
            at = np.minimum(at, max(len(sorted_ids) - 1, 0))
            if len(ids) and (len(sorted_ids) == 0 or not np.all(sorted_ids[at] == ids)):
                raise ValueError(f"kg_edges has {what} ends that are not in kg_nodes")
            return order[at].astype(np.int32)

        kind = edges.column("kind").to_numpy(zero_copy_only=False)
        src = edges.column("src").to_numpy().astype(np.int64)
        dst = edges.column("dst").to_numpy().astype(np.int64)
        is_link, is_parent, is_alias = kind == "link", kind == "parent", kind == "alias"
        known = {f.name for f in nodes.schema}
        fixed = {"node", "title", "kind", "source", "kept", "drop_reason", "boost_source"}
        attrs = {}
        for name in sorted(known - fixed):
            col = nodes.column(name)
            numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
            if numeric and col.null_count < len(col):
                attrs[name] = col.to_numpy(zero_copy_only=False)
        return cls(
            node_id=node_id,
            title=_objects(nodes.column("title").to_pylist()),
            kind=_objects(nodes.column("kind").to_pylist()),
            source=_objects(nodes.column("source").to_pylist()),
            drop_reason=_objects(nodes.column("drop_reason").to_pylist()),
            boost_source=_objects(nodes.column("boost_source").to_pylist()),
            link_src=positions(src[is_link], "link"), link_dst=positions(dst[is_link], "link"),
            parent_src=positions(src[is_parent], "parent"), parent_dst=positions(dst[is_parent], "parent"),
            alias_id=src[is_alias], alias_title=_objects(edges.column("alias").filter(pa.array(is_alias)).to_pylist()),
            alias_node=positions(dst[is_alias], "alias"),
            attrs=attrs,
        )
