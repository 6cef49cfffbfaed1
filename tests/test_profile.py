import pyarrow as pa
import pytest

import operators.decode as decode_mod
from curation.storage import io as cio
from curation.steps.ingest.pool import IngestConfig, ingest
from curation.storage.lake import Lake
from curation.steps.profiling.profile import ProfileConfig, ProfileRunner, profile
from curation.demo import write_bad_inputs
from operators.registry import DEFAULT_PROFILE_OPERATORS

EXPECTED_ERRORS = {
    "empty": "decode: empty file",
    "truncated": "decode: corrupt or truncated JPEG",
    "random_bytes": "decode: not a recognised image",
    "html_as_png": "looks like HTML",
    "text_as_webp": "decode: not a recognised image",
    "unsupported_format": "decode: not a recognised image",
    "huge_header": "decode: too many pixels",
}
DECODABLE = ["grayscale", "palette_transparency", "rgba", "png16", "cmyk", "animated_gif",
             "animated_webp", "exif_rotated", "tiny_1x1"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return write_bad_inputs(tmp_path_factory.mktemp("bad"))


def _table(paths):
    return pa.table({"id": [f"id{i}" for i in range(len(paths))], "uri": [str(p) for p in paths]})


def test_every_input_yields_one_row_with_the_right_error(bad_inputs):
    kinds = list(EXPECTED_ERRORS) + DECODABLE
    runner = ProfileRunner(list(DEFAULT_PROFILE_OPERATORS), max_pixels=50_000_000)
    out = runner(_table([bad_inputs[k] for k in kinds] + ["/nonexistent/missing.jpg"]))
    assert out.num_rows == len(kinds) + 1 and out.schema == runner.schema
    rows = dict(zip(kinds + ["missing"], out.to_pylist()))
    for kind, expected in EXPECTED_ERRORS.items():
        assert rows[kind]["error"] and expected in rows[kind]["error"], (kind, rows[kind]["error"])
    for kind in DECODABLE:
        r = rows[kind]
        assert r["error"] is None, (kind, r["error"])
        assert r["phash"] is not None and r["laplacian_var"] is not None and r["jpeg_bpp"] > 0
    assert rows["missing"]["error"].startswith("read: FileNotFoundError")
    # the oversized header is still described, just never decoded
    huge = rows["huge_header"]
    assert (huge["width"], huge["height"]) == (30000, 30000) and huge["phash"] is None
    assert rows["exif_rotated"]["exif_orientation"] == 6
    assert rows["png16"]["bit_depth"] == 16
    assert rows["animated_gif"]["n_frames"] > 1 and rows["animated_webp"]["n_frames"] > 1


def test_one_read_and_one_decode_per_item(bad_inputs, monkeypatch):
    reads, decodes = [], []
    real_read, real_decode = cio.read_bytes, decode_mod._decode
    monkeypatch.setattr(cio, "read_bytes", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    monkeypatch.setattr(decode_mod, "_decode", lambda *a, **k: decodes.append(a) or real_decode(*a, **k))
    kinds = DECODABLE
    out = ProfileRunner(list(DEFAULT_PROFILE_OPERATORS))(_table([bad_inputs[k] for k in kinds]))
    assert out.num_rows == len(kinds)
    assert len(reads) == len(kinds) and len(decodes) == len(kinds)


def test_operator_failure_is_isolated(bad_inputs, monkeypatch):
    from operators.entropy import JpegBpp

    def boom(self, item):
        raise RuntimeError("kaput")

    monkeypatch.setattr(JpegBpp, "compute", boom)
    out = ProfileRunner(list(DEFAULT_PROFILE_OPERATORS))(_table([bad_inputs["grayscale"]])).to_pylist()[0]
    assert out["error"] == "jpeg_bpp: RuntimeError: kaput"
    assert out["jpeg_bpp"] is None and out["phash"] is not None and out["width"] > 0


def test_ingest_error_carries_over():
    runner = ProfileRunner(["metadata"])
    out = runner(pa.table({"id": ["x"], "uri": ["/gone.jpg"], "error": ["ingest: file not found: /gone.jpg"]}))
    assert out.to_pylist()[0]["error"] == "ingest: file not found: /gone.jpg"


def test_unknown_operator_and_bad_limits():
    with pytest.raises(KeyError, match="known"):
        ProfileRunner(["nope"])
    with pytest.raises(ValueError):
        ProfileRunner(["metadata"], max_pixels=0)


def test_profile_step_is_incremental(ray_session, bad_inputs, tmp_path):
    src = bad_inputs["grayscale"].parent
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, IngestConfig(source=str(src)))
    pool_rows = lake.read("pool").num_rows
    s1 = profile(lake, ProfileConfig(max_pixels=50_000_000, batch_size=4))
    assert s1.rows_in == pool_rows and s1.rows_out == pool_rows
    assert sorted(lake.read("profiles")["id"].to_pylist()) == sorted(lake.read("pool")["id"].to_pylist())
    assert sum(s1.errors.values()) >= len(EXPECTED_ERRORS)
    s2 = profile(lake, ProfileConfig(max_pixels=50_000_000))
    assert s2.rows_in == 0 and lake.versions("profiles") == [0]
    # a different operator set re-profiles everything into an overwrite version
    s3 = profile(lake, ProfileConfig(operators=["metadata", "phash"]))
    assert s3.notes["mode"] == "overwrite" and lake.read("profiles").num_rows == pool_rows
    assert "laplacian_var" not in lake.read("profiles").column_names
