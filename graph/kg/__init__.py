"""World knowledge graph: Wikipedia dumps -> graph -> PageRank / generatability pruning ->
taxonomy from caption tags -> prompt-log and trending weighting -> per-sample weights.

Modules (one job each):
- `model`: the in-memory `KnowledgeGraph` (numpy arrays; node positions are int32 rows) and
  its conversion to and from the `kg_nodes` / `kg_edges` lake tables.
- `sqldump`, `xmldump`: streaming readers of the MediaWiki SQL dumps and the XML export.
- `wikipedia`: dump files -> `KnowledgeGraph` (articles, links, redirects as aliases).
- `pagerank`: compressed sparse graph and PageRank (scipy power iteration; cuGraph on GPU).
- `prune`: PageRank and generatability pruning with pluggable judges; every drop has a reason.
- `textembed`: text embedders (model-operator text encoders; a hashing embedder offline).
- `taxonomy`: caption tags -> hierarchical k-means -> named parents attached to Wikipedia.
- `prompts`: prompt-log frequency boosts and trending concepts, with provenance.
- `textnorm`: title / tag folding (case, width, underscores, whitespace).
- `bm25`, `weights`: tag -> node mapping, BM25 per tag, hierarchy factor, sample weights.
- `synth`: generated graphs written as real dumps (tests, benchmark, demo).
"""
