"""`curate ingest LAKE SOURCE...`: several sources, brace ranges, globs, YAML lists, URIs, and
tar shards streamed member by member."""

from __future__ import annotations

import hashlib
import tarfile

import pytest

from curation.cli.main import main
from curation.steps.ingest import patterns
from curation.steps.ingest.patterns import PatternError, expand, expand_braces
from curation.storage.lake import Lake


def _images(tmp_path, n, seed):
    from curation.demo import write_jpegs

    return write_jpegs(tmp_path / f"src{seed}", n, megapixels=(0.01, 0.02), seed=seed)


def _shards(tmp_path, n_shards, per_shard=2, seed=0):
    from curation.demo import write_webdataset

    imgs = _images(tmp_path, n_shards * per_shard, seed)
    caps = [f"caption {i}" for i in range(len(imgs))]
    paths = write_webdataset(tmp_path / "shards", imgs, caps, shard_size=per_shard)
    return paths, imgs


def _pool(lake):
    return Lake(str(lake)).read("pool").to_pylist()


def test_brace_expansion_like_the_shell():
    assert expand_braces("s/{00008..00010}.tar") == ["s/00008.tar", "s/00009.tar", "s/00010.tar"]
    assert expand_braces("{1..3}") == ["1", "2", "3"]
    assert expand_braces("{08..10}") == ["08", "09", "10"]
    assert expand_braces("{8..010}") == ["008", "009", "010"]  # mixed widths: padded to the wider
    assert expand_braces("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("{x}") == ["{x}"] and expand_braces("{}") == ["{}"]
    with pytest.raises(PatternError, match=r"\{5\.\.2\}"):
        expand_braces("s/{5..2}.tar")
    with pytest.raises(PatternError, match=r"\{a\.\.b\}"):
        expand_braces("s/{a..b}.tar")
    assert patterns.default_name("data/shards/{00000..00009}.tar") == "shards"
    assert patterns.default_name("s3://b/shards/*.tar") == "shards"
    assert patterns.default_name("data/imgs/") == "imgs"


def test_glob_and_file_uri_expansion(tmp_path):
    d = tmp_path / "data"
    (d / "a" / "deep").mkdir(parents=True)
    for p in ("x-1.tar", "x-2.tar", "y.tar", ".hidden.tar", "a/z.tar", "a/deep/k.jpg", "a/k.jpg"):
        (d / p).write_bytes(b"")
    assert expand(f"{d}/x-*.tar") == [f"{d}/x-1.tar", f"{d}/x-2.tar"]
    assert expand(f"{d}/*.tar") == [f"{d}/x-1.tar", f"{d}/x-2.tar", f"{d}/y.tar"]  # no dotfiles
    assert expand(f"{d}/**/*.jpg") == [f"{d}/a/deep/k.jpg", f"{d}/a/k.jpg"]
    assert expand(f"{d}/*/*.tar") == [f"{d}/a/z.tar"]
    assert expand(f"file://{d}/x-[12].tar") == [f"file://{d}/x-1.tar", f"file://{d}/x-2.tar"]
    assert expand(f"file://{d}/{{x-1,y}}.tar") == [f"file://{d}/x-1.tar", f"file://{d}/y.tar"]
    assert expand(str(d)) == [str(d)]  # no pattern: as given
    with pytest.raises(PatternError, match="matches nothing"):
        expand(f"{d}/nothing-*.tar")


def test_several_sources_brace_range_and_glob_on_the_cli(ray_session, tmp_path, capsys):
    shards, shard_imgs = _shards(tmp_path, 4)
    more = _images(tmp_path, 3, seed=7)
    lake = tmp_path / "lake"
    rng = str(tmp_path / "shards" / "shard-{000000..000001}.tar")
    assert main(["ingest", str(lake), rng, str(more[0].parent)]) == 0
    assert "[ingest] 7 in -> 7 out" in capsys.readouterr().out
    rows = _pool(lake)
    by_source = {}
    for r in rows:
        for s in r["sources"]:
            by_source[s] = by_source.get(s, 0) + 1
    assert by_source == {"shards": 4, "src7": 3}
    assert {r["uri"].split("#")[0] for r in rows if "#" in r["uri"]} == {str(p) for p in shards[:2]}
    # a glob over every shard adds the other two shards only
    assert main(["ingest", str(lake), str(tmp_path / "shards" / "*.tar"), "--source", "all"]) == 0
    assert "[ingest] 8 in -> 4 out" in capsys.readouterr().out
    # images by a recursive glob, with their sidecars (a third ingest, after a MERGE)
    (more[0].parent / "sub").mkdir()
    extra = more[0].parent / "sub" / "new.jpg"
    extra.write_bytes(_images(tmp_path, 4, seed=9)[3].read_bytes())
    extra.with_suffix(".txt").write_text("a new one")
    assert main(["ingest", str(lake), str(more[0].parent / "**" / "*.jpg")]) == 0
    assert "[ingest] 4 in -> 1 out" in capsys.readouterr().out
    new = [r for r in _pool(lake) if r["uri"] == str(extra)]
    assert new and new[0]["caption"] == "a new one" and new[0]["sources"] == ["src7"]


def test_pattern_matching_nothing_exits_2_before_the_lake(ray_session, tmp_path, capsys):
    _shards(tmp_path, 1)
    lake = tmp_path / "lake"
    assert main(["ingest", str(lake), str(tmp_path / "shards"), str(tmp_path / "nope" / "*.tar")]) == 2
    err = capsys.readouterr().err
    assert "matches nothing" in err and "nope/*.tar" in err and "source[1]" in err
    assert not lake.exists()
    assert main(["ingest", str(lake), str(tmp_path / "shards" / "shard-{000003..000001}.tar")]) == 2
    assert "bad brace range {000003..000001}" in capsys.readouterr().err
    # a brace range naming a shard that is not there
    assert main(["ingest", str(lake), str(tmp_path / "shards" / "shard-{000000..000005}.tar")]) == 2
    err = capsys.readouterr().err
    assert "source not found" in err and "shard-000001.tar" in err and "{000000..000005}" in err
    assert not lake.exists()


def test_yaml_source_list(ray_session, tmp_path, capsys):
    _shards(tmp_path, 2)
    imgs = _images(tmp_path, 2, seed=5)
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""
lake: {tmp_path}/lake
steps:
  - {{step: ingest, source: ["file://{tmp_path}/shards/shard-{{000000..000001}}.tar", {imgs[0].parent}], name: both}}
""")
    assert main(["run", str(spec)]) == 0
    assert "[ingest] 6 in -> 6 out" in capsys.readouterr().out
    rows = _pool(tmp_path / "lake")
    assert len(rows) == 6 and all(r["sources"] == ["both"] for r in rows)
    # file:// sources are recorded as local paths, as a single file:// source is
    assert sum(r["uri"].startswith(f"{tmp_path}/shards/shard-00000") for r in rows) == 4


def test_tar_shard_is_streamed_not_read_whole(tmp_path, monkeypatch):
    """A shard of ~12 MiB is hashed with reads of at most ~1 MiB: never read whole, never
    through io.read_bytes."""
    import io as pyio

    from curation.steps.ingest import hashing
    from curation.storage import io as cio

    shard = tmp_path / "big.tar"
    blobs = [bytes([i]) * (3 << 20) for i in range(4)]
    with tarfile.open(shard, "w") as tar:
        for i, blob in enumerate(blobs):
            for name, data in ((f"{i:04d}.jpg", blob), (f"{i:04d}.txt", f"cap {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, pyio.BytesIO(data))
    real_read_bytes = cio.read_bytes

    def refuse(uri, *a, **k):
        assert ".tar" not in uri, f"read whole: {uri}"
        return real_read_bytes(uri, *a, **k)

    monkeypatch.setattr(cio, "read_bytes", refuse)
    biggest = []
    real_open = hashing._open_stream

    class Watch:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            biggest.append(n)
            return self.f.read(n)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(hashing, "_open_stream", lambda uri: Watch(real_open(uri)))
    rows = hashing._expand_tar(str(shard), "big")
    assert [r["id"] for r in rows] == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert [r["caption"] for r in rows] == [f"cap {i}" for i in range(4)]
    assert all(r["error"] is None for r in rows)
    assert biggest and all(0 < n <= 2 << 20 for n in biggest), max(biggest)
    for r in rows:  # byte ranges still point at the members
        assert real_read_bytes(str(shard), r["byte_offset"], r["byte_size"]) in blobs
