"""networkx views of the knowledge graph for notebooks: a node's neighbourhood, a subtree."""

from __future__ import annotations

from collections import deque

import networkx as nx
import numpy as np

from graph.kg.model import KnowledgeGraph


def find(kg: KnowledgeGraph, title: str) -> int:
    """Position of the node titled `title` (exact, else case-insensitive); KeyError if none."""
    titles = [str(t) for t in kg.title]
    if title in titles:
        return titles.index(title)
    lower = [t.lower() for t in titles]
    if title.lower() in lower:
        return lower.index(title.lower())
    raise KeyError(f"no node titled {title!r}")


def _adjacency(kg: KnowledgeGraph, kinds: tuple[str, ...]) -> dict[int, list[tuple[int, str]]]:
    adj: dict[int, list[tuple[int, str]]] = {}
    pairs = {"link": (kg.link_src, kg.link_dst), "parent": (kg.parent_src, kg.parent_dst)}
    for kind in kinds:
        src, dst = pairs[kind]
        for s, d in zip(src.tolist(), dst.tolist()):
            adj.setdefault(s, []).append((d, kind))
            adj.setdefault(d, []).append((s, kind))
    return adj


def to_networkx(kg: KnowledgeGraph, nodes, kinds: tuple[str, ...] = ("link", "parent")) -> nx.DiGraph:
    """The induced subgraph on node positions `nodes`: node attributes title, kind, kept,
    drop_reason and the numeric attrs; edge attribute kind ('link' src->dst, 'parent'
    child->parent)."""
    keep = set(int(i) for i in nodes)
    g = nx.DiGraph()
    for i in sorted(keep):
        g.add_node(i, title=str(kg.title[i]), kind=str(kg.kind[i]), kept=kg.drop_reason[i] is None,
                   drop_reason=kg.drop_reason[i],
                   **{k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in kg.attrs.items()})
    pairs = {"link": (kg.link_src, kg.link_dst), "parent": (kg.parent_src, kg.parent_dst)}
    for kind in kinds:
        src, dst = pairs[kind]
        mask = np.isin(src, list(keep)) & np.isin(dst, list(keep))
        g.add_edges_from(zip(src[mask].tolist(), dst[mask].tolist()), kind=kind)
    return g


def neighbourhood(kg: KnowledgeGraph, node: int | str, radius: int = 1,
                  kinds: tuple[str, ...] = ("link", "parent"), max_nodes: int = 200) -> nx.DiGraph:
    """Nodes within `radius` hops of `node` (a position or a title), edges of `kinds` followed
    in both directions, breadth first, at most `max_nodes` nodes."""
    start = find(kg, node) if isinstance(node, str) else int(node)
    adj = _adjacency(kg, kinds)
    seen, queue = {start: 0}, deque([start])
    while queue and len(seen) < max_nodes:
        u = queue.popleft()
        if seen[u] == radius:
            continue
        for v, _ in adj.get(u, ()):
            if v not in seen and len(seen) < max_nodes:
                seen[v] = seen[u] + 1
                queue.append(v)
    return to_networkx(kg, seen, kinds)


def subtree(kg: KnowledgeGraph, root: int | str, max_nodes: int = 200) -> nx.DiGraph:
    """`root` and everything below it through parent edges (child -> parent)."""
    start = find(kg, root) if isinstance(root, str) else int(root)
    return to_networkx(kg, [start] + kg.below(start, limit=max_nodes - 1), ("parent",))
