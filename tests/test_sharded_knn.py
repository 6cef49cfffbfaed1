"""curation.steps.vectors: sharded k-NN over Ray actors equals single-index exact search."""

from __future__ import annotations

import numpy as np
import pytest

from graph.knn import KnnResult, knn_graph, make_index, recall_at_k
from test_knn import clustered


@pytest.fixture(scope="module")
def data():
    return clustered()


def assert_same(got: KnnResult, want: KnnResult, vectors, queries=None):
    """Equal ids and sims, except that exactly tied neighbours may come in either order."""
    queries = vectors if queries is None else queries
    np.testing.assert_allclose(got.sims, want.sims, atol=1e-6)
    for row, col in np.argwhere(got.ids != want.ids):
        assert float(queries[row] @ vectors[got.ids[row, col]]) == pytest.approx(float(want.sims[row, col]), abs=1e-6)
    assert (got.ids == want.ids).mean() > 0.999


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_graph_equals_single_index(ray_session, data, shards):
    from curation.steps.vectors import sharded_knn_graph

    want = knn_graph(data, 8, backend="faiss-flat")
    # query_batch smaller than n: several batches, two in flight, merged per batch
    got = sharded_knn_graph(data, 8, shards=shards, backend="faiss-flat", query_batch=700)
    assert got.ids.shape == (len(data), 8)
    assert_same(got, want, data)
    assert (got.ids != np.arange(len(data))[:, None]).all()


def test_sharded_search_external_queries(ray_session, data):
    from curation.steps.vectors import sharded_search

    base, queries = data[:1500], data[1500:]
    index = make_index("faiss-flat")
    index.add(base)
    want = index.search(queries, 5)
    got = sharded_search(base, queries, 5, shards=2, backend="faiss-flat")
    assert_same(got, want, base, queries)


def test_sharded_index_approximate_and_edges(ray_session, data):
    from curation.steps.vectors import ShardedIndex, sharded_knn_graph

    exact = knn_graph(data, 8, backend="faiss-flat")
    approx = sharded_knn_graph(data, 8, shards=2, backend="faiss-hnsw", M=16)
    assert recall_at_k(approx, exact) >= 0.95
    # a duplicate row survives self-exclusion across shards; k > n - 1 pads
    x = np.vstack([data[:4], data[:1]])
    g = sharded_knn_graph(x, 6, shards=2, backend="faiss-flat")
    assert g.ids[0, 0] == 4 and g.ids[4, 0] == 0 and (g.ids[:, 4:] == -1).all()
    assert sharded_knn_graph(np.zeros((0, 4)), 3, shards=2).ids.shape == (0, 3)
    with ShardedIndex(data[:2], shards=5, backend="faiss-flat") as index:  # one shard per row at most
        assert len(index.shard_info) == 2 and index.ntotal == 2
        assert index.shard_info[0]["params"] == {"backend": "faiss-flat", "threads": 1}
        with pytest.raises(ValueError, match="dimension"):
            index.search(np.ones((1, 3)), 2)
    with pytest.raises(ValueError, match="unknown k-NN backend"):
        sharded_knn_graph(data, 3, shards=2, backend="annoy")
    if not ray_session.cluster_resources().get("GPU"):
        with pytest.raises(RuntimeError, match="GPU"):
            sharded_knn_graph(data, 3, shards=2, backend="cuvs-brute")
