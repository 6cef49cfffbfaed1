import logging

import numpy as np
import pyarrow as pa
import pytest

from curation.config.typed import ConfigError, from_dict
from curation.steps.export.neardup import (
    NearDupConfig,
    brute_force_groups,
    choose_keepers,
    mark_near_duplicates,
    near_duplicate_groups,
)

U = np.uint64


def flip_bits(rng, hashes: np.ndarray, n_bits: int) -> np.ndarray:
    """Each hash with exactly n_bits distinct random bits flipped."""
    out = hashes.copy()
    for i in range(out.size):
        for b in rng.choice(64, size=n_bits, replace=False):
            out[i] ^= U(1) << U(b)
    return out


def partition(labels: np.ndarray) -> set:
    groups: dict = {}
    for row, g in enumerate(labels.tolist()):
        groups.setdefault(g, []).append(row)
    return {frozenset(v) for v in groups.values()}


# ----------------------------------------------------------------------------- grouping


def test_identical_hashes_distance_zero():
    h = np.array([5, 5, 7, 5, 7, 9], dtype=U)
    assert near_duplicate_groups(h, 0).tolist() == [0, 0, 2, 0, 2, 5]


def test_transitive_chain_hand_checked():
    # 0 -1 bit- 1 -1 bit- 3 -1 bit- 7; 0 and 7 are 3 bits apart but joined through the chain
    h = np.array([0b111, 0b1, 0b0, 0b11, 0xFF00], dtype=U)
    assert near_duplicate_groups(h, 1).tolist() == [0, 0, 0, 0, 4]
    assert near_duplicate_groups(h, 0).tolist() == [0, 1, 2, 3, 4]
    # all 64 bits differ -> only joined at distance 64, never within the supported range
    assert near_duplicate_groups(np.array([0, 2**64 - 1], dtype=U), 16).tolist() == [0, 1]


def test_distance_boundary_is_inclusive():
    base = np.array([0x0123456789ABCDEF], dtype=U)
    rng = np.random.default_rng(1)
    for d in (1, 4, 8, 16):
        far = flip_bits(rng, base, d)
        farther = flip_bits(rng, base, d + 1)
        assert near_duplicate_groups(np.r_[base, far], d).tolist() == [0, 0]
        assert near_duplicate_groups(np.r_[base, farther], d).tolist() == [0, 1]


def test_planted_groups_found_exactly_among_20k_random():
    rng = np.random.default_rng(42)
    n_random, n_groups = 20_000, 300
    hashes = rng.integers(0, 2**64, size=n_random, dtype=U)
    truth = [{i} for i in range(n_random)]
    rows = list(hashes)
    # a group = a random base plus 1-4 copies each 0-2 bits from the base (<= 4 from each other)
    for _ in range(n_groups):
        base = rng.integers(0, 2**64, dtype=U)
        members = [base] + [flip_bits(rng, np.array([base]), int(rng.integers(0, 3)))[0] for _ in range(rng.integers(1, 5))]
        start = len(rows)
        rows += members
        truth.append(set(range(start, start + len(members))))
    hashes = np.array(rows, dtype=U)
    perm = rng.permutation(hashes.size)  # scatter the planted rows through the table
    labels = near_duplicate_groups(hashes[perm], 4)
    inverse = np.argsort(perm)
    found = partition(labels[inverse])
    assert found == {frozenset(t) for t in truth}


@pytest.mark.parametrize("d", [0, 2, 4, 8])
def test_equals_brute_force_on_2k(d):
    rng = np.random.default_rng(d)
    h = rng.integers(0, 2**64, size=2000, dtype=U)
    h[1000:1300] = flip_bits(rng, h[:300], 1)  # pairs at 1 bit
    h[1300:1500] = flip_bits(rng, h[300:500], d // 2 + 1)
    h[1500:1600] = flip_bits(rng, h[1000:1100], 3)  # chains
    h[1600:1650] = h[:50]  # identical
    # a cluster of hashes sharing their low 40 bits: big buckets in the low chunks
    h[1700:2000] = (h[1700:2000] & U(0xFFFFFF0000000000)) | U(0x12345678AB)
    expected = brute_force_groups(h, d)
    assert np.array_equal(near_duplicate_groups(h, d), expected)
    assert len(np.unique(expected)) < 2000 - 49  # the test does exercise merges


def test_wide_distance_small_input_matches_brute_force():
    rng = np.random.default_rng(7)
    h = rng.integers(0, 2**64, size=300, dtype=U)
    h[150:] = flip_bits(rng, h[:150], 12)
    for d in (12, 16):
        assert np.array_equal(near_duplicate_groups(h, d), brute_force_groups(h, d))


def test_order_independent_partition():
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**64, size=3000, dtype=U)
    h[2000:] = flip_bits(rng, h[:1000], 2)
    perm = rng.permutation(h.size)
    a = partition(near_duplicate_groups(h, 3))
    # groups of the shuffled input, written as sets of original row ids
    b = {frozenset(perm[list(g)].tolist()) for g in partition(near_duplicate_groups(h[perm], 3))}
    assert a == b


def test_empty_input():
    out = near_duplicate_groups(np.array([], dtype=U), 4)
    assert out.dtype == np.int64 and out.shape == (0,)
    assert near_duplicate_groups(pa.array([], pa.uint64()), 4).shape == (0,)


def test_nulls_are_never_grouped():
    # the null's storage value would be 0 == row 0's hash; it must stay alone anyway
    col = pa.array([0, None, 0, None, 1], pa.uint64())
    assert near_duplicate_groups(col, 2).tolist() == [0, 1, 0, 3, 0]
    assert near_duplicate_groups(pa.array([None] * 4, pa.uint64()), 4).tolist() == [0, 1, 2, 3]
    chunked = pa.chunked_array([[0, None], [0, None, 1]], pa.uint64())
    assert near_duplicate_groups(chunked, 2).tolist() == [0, 1, 0, 3, 0]
    masked = np.ma.array(np.array([3, 3, 3], dtype=U), mask=[False, True, False])
    assert near_duplicate_groups(masked, 0).tolist() == [0, 1, 0]
    valid = np.array([True, False, True])
    assert near_duplicate_groups(np.array([3, 3, 3], dtype=U), 0, valid=valid).tolist() == [0, 1, 0]


def test_int64_storage_is_reinterpreted():
    h = np.array([-1, -1, 0], dtype=np.int64)  # -1 is all 64 bits set
    assert near_duplicate_groups(h, 0).tolist() == [0, 0, 2]
    assert near_duplicate_groups(pa.array(h), 0).tolist() == [0, 0, 2]


def test_bad_arguments():
    h = np.zeros(3, dtype=U)
    for d in (-1, 17, 2.0, True):
        with pytest.raises(ValueError, match="max_distance"):
            near_duplicate_groups(h, d)
    with pytest.raises(ValueError, match="uint64"):
        near_duplicate_groups(np.zeros(3, dtype=np.float64), 1)


def test_window_cap_is_approximate_but_never_wrong(caplog):
    # 2000 hashes sharing 56 bits -> every chunk but one is one huge bucket
    rng = np.random.default_rng(5)
    h = np.unique(U(0xABCDEF0123456700) | rng.integers(0, 256, size=2000, dtype=U))
    exact = near_duplicate_groups(h, 1)
    assert np.array_equal(exact, brute_force_groups(h, 1))
    with caplog.at_level(logging.WARNING, logger="curation.steps.export.neardup"):
        capped = near_duplicate_groups(h, 1, window=3)
    assert "skipped" in caplog.text
    # every capped group lies inside one exact group (only merges can be missed)
    exact_of = dict(enumerate(exact.tolist()))
    for g in partition(capped):
        assert len({exact_of[r] for r in g}) == 1


# ----------------------------------------------------------------------------- keepers


def keeper_table() -> pa.Table:
    return pa.table({
        "id": ["e", "d", "c", "b", "a", "f", "g"],
        "width": pa.array([1000, 2000, 2000, None, 640, 100, 100], pa.int32()),
        "height": pa.array([1000, 1000, 1000, 900, 480, 100, 100], pa.int32()),
        "jpeg_bpp": pa.array([2.0, 1.0, 1.5, 9.0, float("nan"), 1.0, 1.0], pa.float32()),
        "file_size": pa.array([10, 20, 30, 40, 50, 60, 60], pa.int64()),
    })


GROUPS = np.array([0, 0, 0, 0, 4, 5, 5])
KEEP_BY = ["pixels desc", "jpeg_bpp desc", "file_size desc"]


def test_choose_keepers_hand_checked():
    t = keeper_table()
    # group 0: rows 1,2 tie on pixels (2 MP), row 2 has higher jpeg_bpp; row 3's null pixels sort last
    # group 4: alone; group 5: full tie -> id ascending picks "f"
    assert choose_keepers(t, GROUPS, KEEP_BY).tolist() == [False, False, True, False, True, True, False]
    # ascending pixels: the smallest non-null wins; the null still sorts last
    assert choose_keepers(t, GROUPS, ["pixels asc"]).tolist() == [True, False, False, False, True, True, False]
    # jpeg_bpp desc alone: 9.0 (row 3) wins group 0
    assert choose_keepers(t, GROUPS, ["jpeg_bpp desc"])[:4].tolist() == [False, False, False, True]
    # no keys: id ascending only ("b" is row 3)
    assert choose_keepers(t, GROUPS, [])[:4].tolist() == [False, False, False, True]


def test_nan_sorts_last_like_null():
    t = pa.table({"id": ["a", "b"], "q": pa.array([float("nan"), 0.1], pa.float32())})
    for direction in ("asc", "desc"):
        assert choose_keepers(t, np.array([0, 0]), [f"q {direction}"]).tolist() == [False, True]


def test_keepers_independent_of_row_order():
    rng = np.random.default_rng(11)
    n = 500
    t = pa.table({
        "id": [f"{i:04x}" for i in rng.permutation(n)],
        "width": pa.array(rng.choice([512, 1024, None], n).tolist(), pa.int32()),
        "height": pa.array(rng.choice([512, 1024], n), pa.int32()),
        "jpeg_bpp": pa.array(rng.choice([0.5, 1.0], n), pa.float32()),  # many ties
        "file_size": pa.array(rng.choice([100, 200], n), pa.int64()),
    })
    groups = rng.integers(0, 40, n)
    keep = choose_keepers(t, groups, KEEP_BY)
    assert keep.sum() == len(np.unique(groups))
    kept_ids = set(np.array(t.column("id").to_pylist())[keep])
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(n)
        keep_p = choose_keepers(t.take(perm), groups[perm], KEEP_BY)
        assert set(np.array(t.take(perm).column("id").to_pylist())[keep_p]) == kept_ids


def test_keep_by_validation():
    t = keeper_table()
    with pytest.raises(ValueError, match=r"\['sharpness'\] not in the table; available: \[.*'pixels'"):
        choose_keepers(t, GROUPS, ["sharpness desc"])
    with pytest.raises(ValueError, match="must be '<column> asc' or '<column> desc'"):
        choose_keepers(t, GROUPS, ["pixels sideways"])
    with pytest.raises(ValueError, match="list"):
        choose_keepers(t, GROUPS, "pixels desc")
    with pytest.raises(ValueError, match="rows"):
        choose_keepers(t, GROUPS[:3], KEEP_BY)
    assert choose_keepers(t.slice(0, 0), np.array([], np.int64), KEEP_BY).shape == (0,)


def test_config_defaults_and_validation():
    cfg = NearDupConfig()
    assert cfg.enabled and cfg.max_distance == 4 and cfg.keep_by == KEEP_BY
    assert from_dict(NearDupConfig, {"max_distance": 2}).max_distance == 2
    with pytest.raises(ConfigError, match=r"^dedup: max_distance must be in 0\.\.16"):
        from_dict(NearDupConfig, {"max_distance": 20}, path="dedup")
    with pytest.raises(ConfigError, match=r"^dedup: keep_by entry 'pixels up'"):
        from_dict(NearDupConfig, {"keep_by": ["pixels up"]}, path="dedup")


def test_mark_near_duplicates():
    t = keeper_table().append_column("phash", pa.array([1, 3, 1, 1, None, 0xF0F0, 0xF0F1], pa.uint64()))
    out = mark_near_duplicates(t, NearDupConfig(max_distance=1))
    assert out.column_names == ["id", "phash_group", "phash_group_size", "phash_keep"]
    assert out.column("phash_group").to_pylist() == ["c", "c", "c", "c", "a", "f", "f"]
    assert out.column("phash_group_size").to_pylist() == [4, 4, 4, 4, 1, 2, 2]
    assert out.column("phash_keep").to_pylist() == [False, False, True, False, True, True, False]
    off = mark_near_duplicates(t, NearDupConfig(enabled=False))
    assert all(off.column("phash_keep").to_pylist())
    assert off.column("phash_group").to_pylist() == t.column("id").to_pylist()


def test_edge_compaction_keeps_components(monkeypatch):
    import curation.steps.export.neardup as nd

    monkeypatch.setattr(nd, "_EDGE_COMPACT", 10)  # fold edges into components very often
    rng = np.random.default_rng(9)
    h = rng.integers(0, 2**64, size=1000, dtype=U)
    h[500:] = flip_bits(rng, h[:500], 2)
    h[750:] = flip_bits(rng, h[500:750], 1)
    assert np.array_equal(nd.near_duplicate_groups(h, 3), brute_force_groups(h, 3))
