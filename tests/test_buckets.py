import numpy as np
import pytest

from curation.steps.export.buckets import BucketConfig, assign_buckets, make_buckets, seq_len
from curation.config.typed import ConfigError, from_dict

CFG = BucketConfig()
BUCKETS = make_buckets(CFG)


def test_square_image_gets_square_bucket_and_4096_tokens():
    bh, bw = assign_buckets([1024], [1024], BUCKETS)
    assert (bh.tolist(), bw.tolist()) == ([1024], [1024])
    assert seq_len(1024, 1024, CFG) == 4096
    assert seq_len(bh, bw, CFG).tolist() == [4096]
    # any square image, whatever its size, goes to the square bucket
    bh, bw = assign_buckets([10, 5000], [10, 5000], BUCKETS)
    assert bh.tolist() == [1024, 1024] and bw.tolist() == [1024, 1024]


def test_bucket_set_properties():
    area = CFG.resolution ** 2
    assert (1024, 1024) in BUCKETS
    assert BUCKETS == sorted(set(BUCKETS))
    for h, w in BUCKETS:
        assert h % 64 == 0 and w % 64 == 0
        assert h * w <= area
        assert max(h, w) / min(h, w) <= 4.0
        assert (w, h) in BUCKETS  # symmetric
    # every bucket is as tall as it can be for its width (area as close as possible)
    for h, w in BUCKETS:
        assert (h + 64) * w > area or (w + 64) * h > area
    assert BUCKETS[0] == (512, 1856) and BUCKETS[-1] == (2048, 512)


def test_small_config_hand_checked():
    assert make_buckets(BucketConfig(resolution=256, step=64, max_aspect=2.0)) == [(192, 320), (256, 256), (320, 192)]


def test_sixteen_by_nine_goes_to_landscape_bucket():
    bh, bw = assign_buckets([1080, 1920], [1920, 1080], BUCKETS)
    # 16:9 = 1.778; nearest is 1344/768 = 1.75 (next: 1408/704 = 2.0, 1280/768 = 1.667)
    assert list(zip(bh.tolist(), bw.tolist())) == [(768, 1344), (1344, 768)]
    assert seq_len(bh, bw, CFG).tolist() == [48 * 84, 84 * 48]


def test_extreme_aspect_clamps_to_most_extreme_bucket():
    bh, bw = assign_buckets([100, 10000, 1, 5], [10000, 100, 5, 1], BUCKETS)
    assert list(zip(bh.tolist(), bw.tolist())) == [(512, 2048), (2048, 512), (512, 2048), (2048, 512)]
    # exactly 3:1 is inside the range and has its own bucket (1728/576 = 3)
    assert [int(v[0]) for v in assign_buckets([1], [3], BUCKETS)] == [576, 1728]


def test_ties_go_to_the_first_listed_bucket():
    square = ([100], [100])
    assert [int(v[0]) for v in assign_buckets(*square, [(512, 1024), (1024, 512)])] == [512, 1024]
    assert [int(v[0]) for v in assign_buckets(*square, [(1024, 512), (512, 1024)])] == [1024, 512]
    # equal aspect buckets: first listed wins
    assert [int(v[0]) for v in assign_buckets(*square, [(512, 512), (1024, 1024)])] == [512, 512]


def test_vectorised_matches_brute_force_argmin():
    rng = np.random.default_rng(0)
    h = rng.integers(1, 5000, 5000)
    w = rng.integers(1, 5000, 5000)
    bh, bw = assign_buckets(h, w, BUCKETS)
    b = np.array(BUCKETS, dtype=np.float64)
    dist = np.abs((np.log(h) - np.log(w))[:, None] - (np.log(b[:, 0]) - np.log(b[:, 1]))[None, :])
    best = b[np.argmin(dist, axis=1)]  # argmin takes the first listed on ties
    assert np.array_equal(bh, best[:, 0]) and np.array_equal(bw, best[:, 1])
    assert bh.dtype == np.int64


def test_seq_len_other_geometry():
    assert seq_len(1024, 1024, BucketConfig(vae_factor=8, patch_size=1, step=64)) == 16384
    assert seq_len(np.array([512, 768]), np.array([512, 1344]), CFG).tolist() == [1024, 48 * 84]
    assert seq_len(1000, 1000, CFG) == 62 * 62  # floored to whole patches


def test_assign_rejects_bad_sizes():
    with pytest.raises(ValueError, match="2 images have a missing, zero or negative side"):
        assign_buckets([0, 10, np.nan], [10, 10, 10], BUCKETS)
    with pytest.raises(ValueError, match="shape"):
        assign_buckets([1, 2], [1], BUCKETS)
    with pytest.raises(ValueError, match="no buckets"):
        assign_buckets([1], [1], [])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"step": 40}, r"step \(40 px\) must be a multiple of vae_factor·patch_size \(8·2 = 16 px\)"),
        ({"resolution": 32, "step": 64}, r"resolution \(32 px\) must be >= step \(64 px\)"),
        ({"resolution": 1000}, r"resolution \(1000 px\) must be a multiple of step \(64 px\)"),
        ({"max_aspect": 0.5}, r"max_aspect must be >= 1"),
        ({"patch_size": 0}, r"patch_size must be a positive int"),
    ],
)
def test_invalid_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BucketConfig(**kwargs)


def test_config_from_dict():
    assert from_dict(BucketConfig, {"resolution": 512, "max_aspect": 2}).max_aspect == 2.0
    with pytest.raises(ConfigError, match=r"^stages\.sft\.buckets: step \(40 px\)"):
        from_dict(BucketConfig, {"step": 40}, path="stages.sft.buckets")
