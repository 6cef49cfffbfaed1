"""Vector engine on Ray: k-NN over vector sets sharded across actors (algorithms in `graph.knn`)."""

from curation.steps.vectors.sharded import ShardedIndex, ShardIndex, sharded_knn_graph, sharded_search

__all__ = ["ShardIndex", "ShardedIndex", "sharded_knn_graph", "sharded_search"]
