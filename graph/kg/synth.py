"""Generated Wikipedia dumps in the real formats: mysqldump `.sql(.gz|.bz2)` tables and the
XML export, for tests, the benchmark and the demo.

`write_sql_dumps` writes a graph with a known answer: exactly `n_nodes` articles, `n_edges`
distinct article links (power-law in- and out-degrees, no self loops) and `n_redirects`
valid redirects, wrapped in the noise a real dump carries and a correct builder must drop or
resolve: links written through redirects (some also written directly: duplicates after
resolution), links from redirect pages, self links, red links, links into and out of other
namespaces whose titles collide with article titles, and broken redirects (chains, missing
targets, other namespaces, interwiki). Titles carry quotes, backslashes, semicolons, `),(`
and non-ASCII text to exercise the escaping.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import re
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np

# Column lists and types of the MediaWiki 1.43 schema (the order the dumps use).
TABLES: dict[str, list[tuple[str, str]]] = {
    "page": [
        ("page_id", "int(8) unsigned NOT NULL AUTO_INCREMENT"),
        ("page_namespace", "int(11) NOT NULL DEFAULT 0"),
        ("page_title", "varbinary(255) NOT NULL DEFAULT ''"),
        ("page_is_redirect", "tinyint(1) unsigned NOT NULL DEFAULT 0"),
        ("page_is_new", "tinyint(1) unsigned NOT NULL DEFAULT 0"),
        ("page_random", "double unsigned NOT NULL DEFAULT 0"),
        ("page_touched", "binary(14) NOT NULL"),
        ("page_links_updated", "varbinary(14) DEFAULT NULL"),
        ("page_latest", "int(8) unsigned NOT NULL DEFAULT 0"),
        ("page_len", "int(8) unsigned NOT NULL DEFAULT 0"),
        ("page_content_model", "varbinary(32) DEFAULT NULL"),
        ("page_lang", "varbinary(35) DEFAULT NULL"),
    ],
    "redirect": [
        ("rd_from", "int(8) unsigned NOT NULL DEFAULT 0"),
        ("rd_namespace", "int(11) NOT NULL DEFAULT 0"),
        ("rd_title", "varbinary(255) NOT NULL DEFAULT ''"),
        ("rd_interwiki", "varbinary(32) DEFAULT NULL"),
        ("rd_fragment", "varbinary(255) DEFAULT NULL"),
    ],
    "linktarget": [
        ("lt_id", "bigint(20) unsigned NOT NULL AUTO_INCREMENT"),
        ("lt_namespace", "int(11) NOT NULL"),
        ("lt_title", "varbinary(255) NOT NULL"),
    ],
    "pagelinks": [
        ("pl_from", "int(8) unsigned NOT NULL DEFAULT 0"),
        ("pl_from_namespace", "int(11) NOT NULL DEFAULT 0"),
        ("pl_target_id", "bigint(20) unsigned NOT NULL"),
    ],
}
LEGACY_PAGELINKS = [
    ("pl_from", "int(8) unsigned NOT NULL DEFAULT 0"),
    ("pl_namespace", "int(11) NOT NULL DEFAULT 0"),
    ("pl_title", "varbinary(255) NOT NULL DEFAULT ''"),
    ("pl_from_namespace", "int(11) NOT NULL DEFAULT 0"),
]
_KEYS = {
    "page": ["PRIMARY KEY (`page_id`)", "UNIQUE KEY `page_name_title` (`page_namespace`,`page_title`)",
             "KEY `page_random` (`page_random`)", "KEY `page_len` (`page_len`)"],
    "redirect": ["PRIMARY KEY (`rd_from`)", "KEY `rd_ns_title` (`rd_namespace`,`rd_title`,`rd_from`)"],
    "linktarget": ["PRIMARY KEY (`lt_id`)", "UNIQUE KEY `lt_namespace_title` (`lt_namespace`,`lt_title`)"],
    "pagelinks": ["PRIMARY KEY (`pl_from`,`pl_target_id`)", "KEY `pl_target_id` (`pl_target_id`,`pl_from`)",
                  # the legacy schema's; a dump keeps the keys whose columns it has
                  "PRIMARY KEY (`pl_from`,`pl_namespace`,`pl_title`)",
                  "KEY `pl_namespace` (`pl_namespace`,`pl_title`,`pl_from`)"],
}
# enwiki's namespaces, as the XML export lists them in <siteinfo>.
NAMESPACES = {-2: "Media", -1: "Special", 0: "", 1: "Talk", 2: "User", 3: "User talk", 4: "Wikipedia",
              5: "Wikipedia talk", 6: "File", 7: "File talk", 8: "MediaWiki", 9: "MediaWiki talk",
              10: "Template", 11: "Template talk", 12: "Help", 13: "Help talk", 14: "Category",
              15: "Category talk", 100: "Portal", 101: "Portal talk", 118: "Draft", 119: "Draft talk"}
_STEMS = ["Topic", "O'Brien", "Back\\slash", "Zürich", "東京", 'Quote"d', "Semi;colon",
          "Paren_(a),(b)", "Star_Wars:_Episode", "Ωmega", "Amp&_co", "Ends_with_backslash\\"]
_OTHER_NS = (1, 2, 4, 10, 14)


def escape_sql(text: str) -> bytes:
    """A string's body as mysqldump writes it (UTF-8, backslash escapes, no quotes)."""
    b = text.encode("utf-8").replace(b"\\", b"\\\\")
    for raw, esc in ((b"'", b"\\'"), (b'"', b'\\"'), (b"\0", b"\\0"), (b"\n", b"\\n"),
                     (b"\r", b"\\r"), (b"\x1a", b"\\Z")):
        b = b.replace(raw, esc)
    return b


def sql_literal(value: object) -> bytes:
    """One value as mysqldump writes it: NULL, a number, or a quoted escaped string."""
    if value is None:
        return b"NULL"
    if isinstance(value, (bool, int, np.integer)):
        return b"%d" % value
    if isinstance(value, (float, np.floating)):
        return repr(float(value)).encode()
    return b"'" + escape_sql(str(value)) + b"'"


def write_sql_table(path: str | Path, table: str, rows: Iterable[Sequence[object]], *,
                    columns: list[tuple[str, str]] | None = None, rows_per_insert: int = 1000) -> Path:
    """A one-table dump of `rows` (tuples in column order); columns default to TABLES[table].
    Compressed by the file's suffix (.gz, .bz2, else plain)."""
    columns = columns or TABLES[table]
    rows = list(rows)
    lines = (b",".join(b"(" + b",".join(map(sql_literal, r)) + b")" for r in rows[i:i + rows_per_insert])
             for i in range(0, len(rows), rows_per_insert))
    return _write_dump(Path(path), table, columns, lines)


def write_sql_dumps(out_dir: str | Path, n_nodes: int, n_edges: int, *, schema: str = "linktarget",
                    n_redirects: int | None = None, seed: int = 0, compress: str | None = "gz",
                    rows_per_insert: int = 1000) -> dict[str, Path]:
    """Write page / redirect / pagelinks (and linktarget for schema 'linktarget') dumps of a
    synthetic wiki; returns {table: path}. A correct build finds exactly n_nodes articles,
    n_edges links and n_redirects aliases (n_redirects defaults to n_nodes // 10).
    compress: 'gz', 'bz2' or None; rows_per_insert: tuples per extended INSERT line."""
    if schema not in ("linktarget", "legacy"):
        raise ValueError(f"schema must be 'linktarget' or 'legacy', got {schema!r}")
    if compress not in ("gz", "bz2", None):
        raise ValueError(f"compress must be 'gz', 'bz2' or None, got {compress!r}")
    if n_nodes < 2 or n_edges > n_nodes * (n_nodes - 1):
        raise ValueError(f"cannot place {n_edges} distinct links among {n_nodes} articles")
    rng = np.random.default_rng(seed)
    wiki = _Wiki(rng, n_nodes, n_nodes // 10 if n_redirects is None else n_redirects)
    src, dst = _power_law_edges(rng, n_nodes, n_edges)
    links = wiki.link_rows(rng, src, dst)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = {"gz": ".sql.gz", "bz2": ".sql.bz2", None: ".sql"}[compress]

    def write(table: str, columns: list[tuple[str, str]], tuples: Iterable[bytes]) -> Path:
        return _write_dump(out_dir / f"synthwiki-20240101-{table}{suffix}", table, columns,
                           _batched(tuples, rows_per_insert))

    paths = {"page": write("page", TABLES["page"], wiki.page_tuples(rng)),
             "redirect": write("redirect", TABLES["redirect"], wiki.redirect_tuples())}
    from_id, from_ns, target = links
    if schema == "linktarget":
        lt_id = rng.permutation(len(wiki.target_ns)) + 1  # ids unrelated to the page ids
        by_id = np.argsort(lt_id).tolist()  # dumps are in primary-key order
        paths["linktarget"] = write("linktarget", TABLES["linktarget"], _formatted(
            b"(%d,%d,'%s')", lt_id[by_id].tolist(), [wiki.target_ns[i] for i in by_id],
            [wiki.target_title[i] for i in by_id]))
        order = np.lexsort((lt_id[target], from_id))
        paths["pagelinks"] = write("pagelinks", TABLES["pagelinks"], _formatted(
            b"(%d,%d,%d)", from_id[order].tolist(), from_ns[order].tolist(), lt_id[target[order]].tolist()))
    else:
        order = np.lexsort((target, from_id))
        t = target[order].tolist()
        paths["pagelinks"] = write("pagelinks", LEGACY_PAGELINKS, _formatted(
            b"(%d,%d,'%s',%d)", from_id[order].tolist(), [wiki.target_ns[i] for i in t],
            [wiki.target_title[i] for i in t], from_ns[order].tolist()))
    return paths


class _Wiki:
    """The pages of a synthetic wiki and the link targets (namespace, escaped title) they use.

    Target table layout: articles [0, n), valid redirects [n, n+R), broken redirects
    [n+R, n+R+B), red links (missing ns-0 titles), then other-namespace titles that collide
    with article titles."""

    def __init__(self, rng: np.random.Generator, n: int, n_redirects: int):
        self.n, self.n_redirects = n, n_redirects
        self.n_broken = max(4, n_redirects // 50)
        self.n_missing = max(4, n // 100)
        self.n_other = max(len(_OTHER_NS), n // 20)
        titles = [f"{_STEMS[k % len(_STEMS)]}_{k}" for k in range(n)]
        redirects = [f"{_STEMS[j % len(_STEMS)]}_r{j}" for j in range(n_redirects + self.n_broken)]
        missing = [f"Missing_{k}" for k in range(self.n_missing)]
        reused = rng.choice(n, self.n_other, replace=self.n_other > n)  # article titles other-ns pages reuse
        other = [titles[a] for a in reused.tolist()]
        self.target_title = [escape_sql(t) for t in titles + redirects + missing + other]
        self.target_ns = [0] * (n + len(redirects) + self.n_missing) + \
            [_OTHER_NS[i % len(_OTHER_NS)] for i in range(self.n_other)]
        # Page ids: distinct, random, unrelated to title order. Other-ns pages are real pages.
        n_pages = n + len(redirects) + self.n_other
        self.page_id = rng.permutation(2 * n_pages)[:n_pages] + 1
        self.article_id = self.page_id[:n]
        self.redirect_id = self.page_id[n:n + len(redirects)]
        self.other_id = self.page_id[n + len(redirects):]
        # Popular articles collect more redirects, as in Wikipedia.
        self.redirect_target = _zipf(rng, n, n_redirects, 0.8)

    def page_tuples(self, rng: np.random.Generator) -> Iterator[bytes]:
        n, r = self.n, len(self.redirect_id)
        is_redirect = np.r_[np.zeros(n, int), np.ones(r, int), np.zeros(self.n_other, int)]
        ns = [0] * (n + r) + self.target_ns[-self.n_other:]
        titles = self.target_title[:n + r] + self.target_title[-self.n_other:]
        order = np.argsort(self.page_id)
        updated = [b"'20240101000000'", b"NULL"]  # every 7th page: links never updated
        touched = b"2024%02d%02d120000" % (1 + rng.integers(0, 12), 1 + rng.integers(0, 28))
        for i, rnd, size in zip(order.tolist(), rng.random(len(order)).tolist(),
                                rng.integers(20, 200_000, len(order)).tolist()):
            yield b"(%d,%d,'%s',%d,0,%.15g,'%s',%s,%d,%d,'wikitext',NULL)" % (
                self.page_id[i], ns[i], titles[i], is_redirect[i], rnd, touched, updated[i % 7 == 0],
                1_000_000 + i, size)

    def redirect_tuples(self) -> Iterator[bytes]:
        """Valid redirects, then broken ones cycling chain / missing / category / interwiki."""
        n, title = self.n, self.target_title
        rows = [(int(self.redirect_id[j]), 0, title[t], b"''", b"'Section'" if j % 5 == 0 else b"''")
                for j, t in enumerate(self.redirect_target.tolist())]
        for b in range(self.n_broken):
            rd = int(self.redirect_id[self.n_redirects + b])
            kind = b % 4
            if kind == 0:  # chain (or loop): points at a redirect page
                rows.append((rd, 0, title[n + b % (self.n_redirects + self.n_broken)], b"''", b"''"))
            elif kind == 1:
                rows.append((rd, 0, b"Missing_page_%d" % b, b"''", b"''"))
            elif kind == 2:  # a category whose title is an article's title
                rows.append((rd, 14, title[b % n], b"''", b"''"))
            else:
                rows.append((rd, 0, title[b % n], b"'fr'", b"''"))
        rows.sort()
        return (b"(%d,%d,'%s',%s,%s)" % row for row in rows)

    def link_rows(self, rng: np.random.Generator, src: np.ndarray, dst: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pl_from page id, pl_from_namespace, target index) for the true edges plus noise."""
        n, m = self.n, len(src)
        # A third of the links to redirected articles go through a redirect; a tenth of those
        # are written directly as well (the duplicate must collapse).
        redirect_of = np.full(n, -1)
        redirect_of[self.redirect_target] = np.arange(self.n_redirects)
        via = (redirect_of[dst] >= 0) & (rng.random(m) < 1 / 3)
        both = via & (rng.random(m) < 0.1)
        target = np.where(via, n + redirect_of[dst], dst)
        parts = [(self.article_id[src], np.zeros(m, int), target),
                 (self.article_id[src[both]], np.zeros(int(both.sum()), int), dst[both])]
        k = max(8, m // 50)  # noise links of each kind
        first_broken = n + self.n_redirects
        first_missing = first_broken + self.n_broken
        first_other = first_missing + self.n_missing
        a = rng.integers(0, n, k)
        parts += [
            (self.article_id[a], np.zeros(k, int), a),  # self links
            (self.article_id[a], np.zeros(k, int), rng.integers(first_missing, first_other, k)),  # red links
            (self.article_id[a], np.zeros(k, int), rng.integers(first_other, len(self.target_ns), k)),  # other ns
            (self.article_id[a], np.zeros(k, int), rng.integers(first_broken, first_missing, k)),  # broken
        ]
        o = rng.integers(0, self.n_other, k)  # from other-namespace pages to articles
        parts.append((self.other_id[o], np.asarray(self.target_ns[first_other:])[o], rng.integers(0, n, k)))
        if self.n_redirects:  # each redirect page links to its target
            parts.append((self.redirect_id[:self.n_redirects], np.zeros(self.n_redirects, int), self.redirect_target))
        from_id, from_ns, target = (np.concatenate(c) for c in zip(*parts))
        keys = np.unique(from_id * len(self.target_ns) + target, return_index=True)[1]  # a dump row is unique
        return from_id[keys], from_ns[keys], target[keys]


def _zipf(rng: np.random.Generator, n: int, size: int, a: float) -> np.ndarray:
    """`size` draws from 0..n-1 with P(rank r) ∝ (r+1)^-a, ranks shuffled over the ids."""
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -a)
    ranks = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
    return rng.permutation(n)[np.minimum(ranks, n - 1)]


def _power_law_edges(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly m distinct (src, dst) pairs without self loops; in-degree ∝ Zipf(0.9),
    out-degree ∝ Zipf(0.5), falling back to uniform draws when the tail saturates."""
    keys = np.zeros(0, np.int64)
    for attempt in range(64):
        need = m - len(keys)
        if need <= 0:
            break
        draw = int(need * 1.3) + 16
        if attempt < 8:
            s, d = _zipf(rng, n, draw, 0.5), _zipf(rng, n, draw, 0.9)
        else:
            s, d = rng.integers(0, n, draw), rng.integers(0, n, draw)
        new = s.astype(np.int64) * n + d
        keys = np.sort(np.concatenate([keys, new[s != d]]))
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # np.union1d hashes: far slower
    if len(keys) < m:
        raise ValueError(f"could not draw {m} distinct links among {n} articles")
    keys = np.sort(rng.choice(keys, m, replace=False))
    return keys // n, keys % n


def _formatted(template: bytes, *columns: list) -> Iterator[bytes]:
    return (template % row for row in zip(*columns))


def _batched(tuples: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Join formatted tuples into the value lists of extended INSERTs of `size` rows."""
    batch: list[bytes] = []
    for t in tuples:
        batch.append(t)
        if len(batch) == size:
            yield b",".join(batch)
            batch = []
    if batch:
        yield b",".join(batch)


def _open_write(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "wb", compresslevel=1)  # speed over size: fixtures are rewritten often
    if path.name.endswith(".bz2"):
        return bz2.open(path, "wb")
    return open(path, "wb")


def _write_dump(path: Path, table: str, columns: list[tuple[str, str]], lines: Iterable[bytes]) -> Path:
    """A mysqldump file: header, DROP/CREATE TABLE, one INSERT line per value list."""
    names = {name for name, _ in columns}
    keys = [k for k in _KEYS.get(table, []) if set(re.findall(r"`(\w+)`", k.split("(", 1)[1])) <= names]
    body = ",\n".join([f"  `{name}` {decl}" for name, decl in columns] + [f"  {k}" for k in keys])
    head = (
        "-- MySQL dump 10.19  Distrib 10.3.39-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
        "-- Host: 10.64.0.1    Database: synthwiki\n"
        "-- ------------------------------------------------------\n-- Server version\t10.6.17-MariaDB-log\n\n"
        "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n"
        "/*!40101 SET NAMES utf8mb4 */;\n"
        "/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n"
        "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n"
        "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n\n"
        f"--\n-- Table structure for table `{table}`\n--\n\n"
        f"DROP TABLE IF EXISTS `{table}`;\n"
        "/*!40101 SET @saved_cs_client     = @@character_set_client */;\n"
        "/*!40101 SET character_set_client = utf8 */;\n"
        f"CREATE TABLE `{table}` (\n{body}\n) ENGINE=InnoDB DEFAULT CHARSET=binary ROW_FORMAT=COMPRESSED;\n"
        "/*!40101 SET character_set_client = @saved_cs_client */;\n\n"
        f"--\n-- Dumping data for table `{table}`\n--\n\n"
        f"/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;\n"
    ).encode()
    prefix = f"INSERT INTO `{table}` VALUES ".encode()
    with _open_write(path) as f:
        f.write(head)
        for line in lines:
            f.write(prefix + line + b";\n")
        f.write(f"/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;\n"
                "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on 2024-01-02  3:04:05\n".encode())
    return path


def write_xml_dump(path: str | Path, pages: list[dict], schema_version: str = "0.11") -> Path:
    """A pages-articles XML export of `pages` (dicts: id, ns, title, text, optional redirect
    target title) with enwiki's <siteinfo>; compressed by the file's suffix."""
    uri = f"http://www.mediawiki.org/xml/export-{schema_version}/"
    out = [f'<mediawiki xmlns="{uri}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           f'xsi:schemaLocation="{uri} http://www.mediawiki.org/xml/export-{schema_version}.xsd" '
           f'version="{schema_version}" xml:lang="en">',
           "  <siteinfo>", "    <sitename>Synthwiki</sitename>", "    <dbname>synthwiki</dbname>",
           "    <base>https://synth.example.org/wiki/Main_Page</base>",
           "    <generator>MediaWiki 1.43.0-wmf.18</generator>", "    <case>first-letter</case>",
           "    <namespaces>"]
    for key, name in NAMESPACES.items():
        out.append(f'      <namespace key="{key}" case="first-letter" />' if not name else
                   f'      <namespace key="{key}" case="first-letter">{escape(name)}</namespace>')
    out += ["    </namespaces>", "  </siteinfo>"]
    for i, p in enumerate(pages):
        text = p.get("text", "")
        sha1 = hashlib.sha1(text.encode()).hexdigest()
        out += ["  <page>", f"    <title>{escape(p['title'])}</title>", f"    <ns>{p['ns']}</ns>",
                f"    <id>{p['id']}</id>"]
        if p.get("redirect") is not None:
            out.append(f"    <redirect title={quoteattr(p['redirect'])} />")
        rev = 5_000_000 + i
        out += ["    <revision>", f"      <id>{rev}</id>", f"      <parentid>{rev - 1}</parentid>",
                "      <timestamp>2024-01-01T12:00:00Z</timestamp>",
                "      <contributor>", "        <username>Synth bot</username>", "        <id>42</id>",
                "      </contributor>", "      <comment>generated</comment>"]
        if schema_version != "0.10":
            out.append(f"      <origin>{rev}</origin>")
        out += ["      <model>wikitext</model>", "      <format>text/x-wiki</format>",
                f'      <text bytes="{len(text.encode())}" sha1="{sha1}" xml:space="preserve">{escape(text)}</text>',
                f"      <sha1>{sha1}</sha1>", "    </revision>", "  </page>"]
    out.append("</mediawiki>\n")
    path = Path(path)
    with _open_write(path) as f:
        f.write("\n".join(out).encode("utf-8"))
    return path
