"""Wikipedia dump readers and the graph build: SQL (both pagelinks schemas) and XML (0.10,
0.11) fixtures written in the real formats, hand-checkable answers."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from graph.kg.sqldump import NULL_INT, read_table, table_columns
from graph.kg.synth import (LEGACY_PAGELINKS, TABLES, write_sql_dumps, write_sql_table,
                            write_xml_dump)
from graph.kg.wikipedia import build_from_sql, build_from_xml
from graph.kg.xmldump import Namespaces, iter_pages, link_target, wikilinks

# A small wiki. Pages: (id, ns, title as stored in dumps, redirect target (ns, title) or None).
PAGES = [
    (1, 0, "Apple", None),
    (2, 0, "Big_apple", None),
    (3, 0, "O'Brien_\\_(band),(x)", None),
    (4, 0, "Zürich", None),
    (5, 0, "Lonely", None),
    (10, 0, "Apples", (0, "Apple")),           # alias of Apple
    (11, 0, "NYC", (0, "Big_apple")),          # alias of Big apple
    (12, 0, "Chain", (0, "Apples")),           # redirect to a redirect: dropped
    (13, 0, "Nowhere", (0, "Missing_page")),   # redirect to a missing page: dropped
    (14, 0, "Fruit_cat", (14, "Apple")),       # redirect to a category: dropped
    (20, 1, "Apple", None),                    # Talk:Apple, same title as the article
    (21, 14, "Apple", None),                   # Category:Apple
]
# Links as a dump stores them: (from page id, target ns, target title).
LINKS = [
    (1, 0, "Big_apple"), (1, 0, "NYC"),        # direct + through a redirect: one edge
    (1, 0, "Apple"),                           # self link
    (1, 0, "Missing_page"),                    # red link
    (1, 14, "Big_apple"),                      # category link with an article's title
    (2, 0, "Apples"),                          # through a redirect: Big apple -> Apple
    (2, 0, "Chain"),                           # through a chain: dropped
    (2, 0, "O'Brien_\\_(band),(x)"),
    (3, 0, "Zürich"), (3, 0, "Nowhere"),
    (4, 0, "Apple"),
    (10, 0, "Apple"),                          # from a redirect page: dropped
    (20, 0, "Zürich"),                         # from a talk page: dropped
]
EXPECTED_LINKS = {("Apple", "Big apple"), ("Big apple", "Apple"), ("Big apple", "O'Brien \\ (band),(x)"),
                  ("O'Brien \\ (band),(x)", "Zürich"), ("Zürich", "Apple")}
EXPECTED_ALIASES = {("Apples", "Apple", 10), ("NYC", "Big apple", 11)}
NS_PREFIX = {0: "", 1: "Talk:", 14: "Category:"}


def _sql_wiki(tmp_path, schema: str, suffix: str = ".sql.gz") -> dict:
    page_rows = [(pid, ns, title, int(rd is not None), 0, 0.5, "20240101000000", None, 7, 100, "wikitext", None)
                 for pid, ns, title, rd in PAGES]
    redirect_rows = [(pid, rd[0], rd[1], "", None) for pid, _, _, rd in PAGES if rd is not None]
    paths = {"page": write_sql_table(tmp_path / f"page{suffix}", "page", page_rows),
             "redirect": write_sql_table(tmp_path / f"redirect{suffix}", "redirect", redirect_rows,
                                         rows_per_insert=2)}
    from_ns = {pid: ns for pid, ns, _, _ in PAGES}
    if schema == "legacy":
        rows = [(f, ns, t, from_ns[f]) for f, ns, t in LINKS]
        paths["pagelinks"] = write_sql_table(tmp_path / f"pagelinks{suffix}", "pagelinks", rows,
                                             columns=LEGACY_PAGELINKS, rows_per_insert=3)
    else:
        targets = sorted({(ns, t) for _, ns, t in LINKS} | {(0, "Unused")})
        lt_id = {target: 100 + 7 * i for i, target in enumerate(targets)}
        paths["linktarget"] = write_sql_table(tmp_path / f"linktarget{suffix}", "linktarget",
                                              [(i, ns, t) for (ns, t), i in lt_id.items()])
        rows = [(f, from_ns[f], lt_id[(ns, t)]) for f, ns, t in LINKS]
        paths["pagelinks"] = write_sql_table(tmp_path / f"pagelinks{suffix}", "pagelinks", rows,
                                             rows_per_insert=4)
    return paths


def _xml_pages() -> list[dict]:
    """The same wiki as wikitext, with every link syntax the reader must understand."""
    forms = ["[[{t}]]", "[[{t}|a label]]", "[[{t}#History|x]]", "[[{u}]]", "[[{lc}]]",
             "[[File:Pic.jpg|thumb|see [[{t}]] here]]", "[[ {t} ]]s"]
    texts: dict[int, list[str]] = {}
    for i, (f, ns, t) in enumerate(LINKS):
        display = t.replace("_", " ")
        if ns == 0:
            form = forms[i % len(forms)]
            texts.setdefault(f, []).append(form.format(t=display, u=t, lc=display[0].lower() + display[1:]))
        else:
            texts.setdefault(f, []).append(f"[[:Category:{display}]] [[Category:{display}]]")
    noise = ("[[fr:Pomme]] [[de:Apfel]] [[wikt:apple]] [[File:A.png]] [[Image:B.png|x]] [[#Local]] "
             "<!-- [[Commented out]] --> <nowiki>[[Not a link]]</nowiki> {{cite|x=[[{{PAGENAME}}]]}}")
    pages = []
    for pid, ns, title, rd in PAGES:
        page = {"id": pid, "ns": ns, "title": NS_PREFIX[ns] + title.replace("_", " ")}
        if rd is not None:
            page["redirect"] = NS_PREFIX[rd[0]] + rd[1].replace("_", " ")
            page["text"] = f"#REDIRECT [[{page['redirect']}]]\n{{{{R from move}}}}"
        else:
            page["text"] = "Intro &amp; more. " + " ".join(texts.get(pid, [])) + "\n" + noise
        pages.append(page)
    return pages


def _summary(g) -> tuple:
    titles = g.title
    links = {(titles[s], titles[d]) for s, d in zip(g.link_src.tolist(), g.link_dst.tolist())}
    aliases = {(a, titles[n], i) for a, n, i in zip(g.alias_title, g.alias_node.tolist(), g.alias_id.tolist())}
    return list(g.node_id), list(titles), links, aliases


# -- sqldump -----------------------------------------------------------------------------------

def test_column_order_comes_from_create_table(tmp_path):
    cols = [TABLES["page"][i] for i in (2, 0, 3, 1)]  # page_title, page_id, page_is_redirect, page_namespace
    path = write_sql_table(tmp_path / "page.sql.bz2", "page",
                           [("Apple", 1, 0, 0), ("Talk_x", 2, 0, 1), ("Big_apple", 3, 1, 0)], columns=cols)
    assert [c.name for c in table_columns(path)] == ["page_title", "page_id", "page_is_redirect", "page_namespace"]
    (chunk,) = read_table(path, ["page_id", "page_title"], where={"page_namespace": 0})
    assert chunk["page_id"].dtype == np.int64
    assert chunk["page_id"].tolist() == [1, 3]
    assert chunk["page_title"].tolist() == ["Apple", "Big_apple"]
    (chunk,) = read_table(path, ["page_namespace"], where={"page_namespace": [0, 1], "page_is_redirect": 0})
    assert chunk["page_namespace"].tolist() == [0, 1]


def test_string_escapes_null_and_binary(tmp_path):
    tricky = ["O'Brien", "back\\slash", 'say "hi"', "new\nline", "nul\0byte", "ctrl\x1az", "),(;\n'),('", "東京",
              "trailing\\", "\\\\n", "%_", "tab\there"]
    rows = [(i + 1, 0, t, None if i % 3 else "en") for i, t in enumerate(tricky)]
    cols = TABLES["page"][:3] + [("page_lang", "varbinary(35) DEFAULT NULL")]
    path = write_sql_table(tmp_path / "page.sql", "page", rows, columns=cols, rows_per_insert=5)
    (chunk,) = read_table(path, ["page_title", "page_lang", "page_id"])
    assert chunk["page_title"].tolist() == tricky
    assert chunk["page_lang"].tolist() == [None if i % 3 else "en" for i in range(len(tricky))]
    # Forms mysqldump does not write but MySQL reads: '' inside a string, _binary, \% kept,
    # invalid UTF-8 replaced; NULL in numeric columns.
    raw = (b"CREATE TABLE `t` (\n  `a` varbinary(9) DEFAULT NULL,\n  `b` int(11) DEFAULT NULL,\n"
           b"  `c` double DEFAULT NULL,\n  PRIMARY KEY (`b`)\n) ENGINE=InnoDB;\n"
           b"INSERT INTO `t` VALUES ('it''s',1,1.5),(_binary 'bin\\%',NULL,NULL),('caf\xc3',-3,2e-05),(NULL,4,.5);\n")
    (tmp_path / "t.sql.gz").write_bytes(gzip.compress(raw))
    (chunk,) = read_table(tmp_path / "t.sql.gz", ["a", "b", "c"])
    assert chunk["a"].tolist() == ["it's", "bin\\%", "caf\ufffd", None]
    assert chunk["b"].tolist() == [1, NULL_INT, -3, 4]
    np.testing.assert_array_equal(chunk["c"], [1.5, np.nan, 2e-05, 0.5])


@pytest.mark.parametrize("columns", [["pl_from", "pl_target_id"], ["pl_from", "pl_title"]])
def test_small_blocks_and_chunks_read_the_same(tmp_path, columns):
    """Tuples cut across blocks and statements longer than a block (the validating-run path)."""
    schema = "linktarget" if "pl_target_id" in columns else "legacy"
    paths = write_sql_dumps(tmp_path, 60, 400, schema=schema, compress="bz2", rows_per_insert=97)
    whole = list(read_table(paths["pagelinks"], columns))
    assert len(whole) == 1
    parts = list(read_table(paths["pagelinks"], columns, chunk_bytes=37, chunk_rows=50))
    assert len(parts) > 5
    for c in columns:
        assert np.concatenate([p[c] for p in parts]).tolist() == whole[0][c].tolist()


def test_malformed_dumps_fail_clearly(tmp_path):
    no_header = tmp_path / "notes.sql"
    no_header.write_text("-- just a comment\nSELECT 1;\n")
    with pytest.raises(ValueError, match="notes.sql: no complete CREATE TABLE"):
        list(read_table(no_header, ["pl_from"]))
    insert_first = tmp_path / "insert_first.sql"
    insert_first.write_text("INSERT INTO `page` VALUES (1);\nCREATE TABLE `page` (\n  `a` int(1)\n);\n")
    with pytest.raises(ValueError, match="INSERT before any CREATE TABLE"):
        list(read_table(insert_first, ["a"]))
    page = write_sql_table(tmp_path / "page.sql.gz", "page", [(1, 0, "A", 0, 0, 0.1, "x", None, 1, 1, None, None)])
    with pytest.raises(ValueError, match=r"page.sql.gz: table `page` has no column\(s\) \['pl_title'\]"):
        list(read_table(page, ["page_id", "pl_title"]))
    header = "CREATE TABLE `pagelinks` (\n  `pl_from` int(8) NOT NULL,\n  `pl_title` varbinary(255) NOT NULL\n);\n"
    for i, values in enumerate(["(1,'A'),(2,'B);\n", "(1,'A'),(2);\n", "(1,'A'),(2,NULL);\n", "(1,2,3),(4,5);\n"]):
        bad = tmp_path / f"bad{i}.sql"
        text = header if i < 3 else header.replace("varbinary(255)", "int(8)")
        bad.write_text(text + "INSERT INTO `pagelinks` VALUES " + values)
        with pytest.raises(ValueError, match=f"bad{i}.sql: malformed"):
            list(read_table(bad, ["pl_from"]))
    truncated = tmp_path / "cut.sql.gz"
    truncated.write_bytes(page.read_bytes()[:-20])
    with pytest.raises(ValueError, match="cut.sql.gz"):
        list(read_table(truncated, ["page_id"]))


# -- wikipedia (SQL) ---------------------------------------------------------------------------

@pytest.mark.parametrize("schema", ["linktarget", "legacy"])
def test_sql_build_resolves_redirects_and_drops_noise(tmp_path, schema):
    paths = _sql_wiki(tmp_path, schema)
    g = build_from_sql(paths["page"], paths["pagelinks"], paths["redirect"], paths.get("linktarget"))
    node_id, titles, links, aliases = _summary(g)
    assert node_id == [1, 2, 3, 4, 5]  # no redirects, no talk or category pages
    assert titles == ["Apple", "Big apple", "O'Brien \\ (band),(x)", "Zürich", "Lonely"]
    assert links == EXPECTED_LINKS
    assert aliases == EXPECTED_ALIASES
    assert set(g.source) == {"page.sql.gz"} and set(g.kind) == {"article"}
    assert g.link_src.dtype == np.int32 and g.attrs["in_degree"].dtype == np.int32
    assert g.attrs["in_degree"].tolist() == [2, 1, 1, 1, 0]
    assert g.attrs["out_degree"].tolist() == [1, 2, 1, 1, 0]


def test_both_pagelinks_schemas_give_the_same_graph(tmp_path):
    graphs = []
    for schema in ("linktarget", "legacy"):
        p = write_sql_dumps(tmp_path / schema, 80, 500, schema=schema, n_redirects=12, seed=3)
        graphs.append(_summary(build_from_sql(p["page"], p["pagelinks"], p["redirect"], p.get("linktarget"))))
    assert graphs[0] == graphs[1]


def test_new_schema_needs_linktarget_and_redirects_are_optional(tmp_path):
    paths = _sql_wiki(tmp_path, "linktarget", suffix=".sql")
    with pytest.raises(ValueError, match="linktarget dump is needed"):
        build_from_sql(paths["page"], paths["pagelinks"], paths["redirect"])
    with pytest.raises(ValueError, match="not a pagelinks dump"):
        build_from_sql(paths["page"], paths["redirect"], paths["redirect"])
    g = build_from_sql(paths["page"], paths["pagelinks"], linktarget=paths["linktarget"])
    _, _, links, aliases = _summary(g)
    assert aliases == set()  # without the redirect table, links through redirects are lost
    assert links == EXPECTED_LINKS - {("Big apple", "Apple")}


def test_migration_pagelinks_with_both_schemas_is_read_by_title(tmp_path):
    paths = _sql_wiki(tmp_path, "legacy")
    from_ns = {pid: ns for pid, ns, _, _ in PAGES}
    columns = LEGACY_PAGELINKS + [("pl_target_id", "bigint(20) unsigned DEFAULT NULL")]
    both = write_sql_table(tmp_path / "both.sql.gz", "pagelinks",
                           [(f, ns, t, from_ns[f], None) for f, ns, t in LINKS], columns=columns)
    _, _, links, _ = _summary(build_from_sql(paths["page"], both, paths["redirect"]))
    assert links == EXPECTED_LINKS


@pytest.mark.parametrize("schema,compress", [("linktarget", "gz"), ("legacy", "bz2"), ("linktarget", None)])
def test_synth_round_trip(tmp_path, schema, compress):
    paths = write_sql_dumps(tmp_path, 300, 3000, schema=schema, n_redirects=40, seed=1, compress=compress)
    tables = {"page", "redirect", "pagelinks"} | ({"linktarget"} if schema == "linktarget" else set())
    assert set(paths) == tables
    g = build_from_sql(paths["page"], paths["pagelinks"], paths["redirect"], paths.get("linktarget"))
    assert (g.n, len(g.link_src), len(g.alias_id)) == (300, 3000, 40)
    assert int(g.attrs["in_degree"].sum()) == 3000
    assert g.attrs["in_degree"].max() > 5 * g.attrs["in_degree"].mean()  # power law: hubs
    assert len(np.unique(g.link_src.astype(np.int64) * g.n + g.link_dst)) == 3000
    assert not np.any(g.link_src == g.link_dst)
    assert any("\\" in t for t in g.title) and any("'" in t for t in g.title) and any("東京" in t for t in g.title)


# -- xmldump and the XML build -----------------------------------------------------------------

def test_wikilink_rules():
    ns = Namespaces(["Talk", "Category", "Portal"])
    text = ("[[apple pie|pies]] [[Big_apple#Food]] [[:Category:Fruit]] [[Category:Fruit]] [[Portal:Food]] "
            "[[ talk _: x]] [[fr:Pomme]] [[zh-yue:蘋果]] [[Star Wars: Episode IV]] [[:Apple]] [[#Top]] "
            "[[AT&amp;T]] [[File:X.jpg|thumb|a [[nested link]] in a caption]] [[apple pie]] "
            "<!-- [[hidden]] --> [[{{tpl}}]] [[ß-Bahn]]")
    assert wikilinks(text, ns) == ["Apple pie", "Big apple", "Star Wars: Episode IV", "Apple",
                                   "AT&T", "Nested link", "ß-Bahn"]
    assert link_target("image:x.png", ns) is None and link_target("Wp:x", ns) == "Wp:x"


@pytest.mark.parametrize("version,suffix", [("0.10", ".xml.gz"), ("0.11", ".xml.bz2"), ("0.11", ".xml")])
def test_xml_build_matches_sql_build(tmp_path, version, suffix):
    sql = _sql_wiki(tmp_path, "linktarget")
    expected = _summary(build_from_sql(sql["page"], sql["pagelinks"], sql["redirect"], sql["linktarget"]))
    path = write_xml_dump(tmp_path / f"wiki{suffix}", _xml_pages(), schema_version=version)
    g = build_from_xml(path)
    assert _summary(g) == expected
    assert set(g.source) == {path.name}


def test_xml_pages_stream(tmp_path):
    path = write_xml_dump(tmp_path / "w.xml.gz", _xml_pages())
    pages = list(iter_pages(path))
    assert [(p.id, p.ns) for p in pages] == [(pid, ns) for pid, ns, _, _ in PAGES]
    by_id = {p.id: p for p in pages}
    assert by_id[20].title == "Talk:Apple"
    assert (by_id[10].redirect, by_id[10].redirect_link) == ("Apple", "Apple")
    assert (by_id[14].redirect, by_id[14].redirect_link) == ("Category:Apple", None)
    assert by_id[1].links == ["Big apple", "NYC", "Apple", "Missing page"]


def test_xml_errors_name_the_file(tmp_path):
    other = tmp_path / "other.xml"
    other.write_text('<root xmlns="http://example.org/"><page/></root>')
    with pytest.raises(ValueError, match="other.xml: not a MediaWiki XML export"):
        list(iter_pages(other))
    broken = write_xml_dump(tmp_path / "broken.xml", _xml_pages()[:2])
    broken.write_text(broken.read_text()[:-40])
    with pytest.raises(ValueError, match="broken.xml: malformed XML"):
        list(iter_pages(broken))
