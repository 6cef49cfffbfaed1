"""Streaming reader of the MediaWiki XML export (pages-articles), any export-0.x schema
(0.10 and 0.11 in current dumps), plain, gzip or bzip2.

`iter_pages` walks the file with `ElementTree.iterparse` and clears the tree after every
page, so memory holds one page at a time. For each page it yields the id, namespace, title,
redirect target and the article links of the latest revision's wikitext: `[[Target]]`,
`[[Target|label]]`, `[[Target#Section|x]]` -> 'Target'. Links with a namespace prefix (the
dump's own namespace names, the canonical English ones and their aliases) or an interwiki
prefix (lower-case language codes such as `fr:`, `zh-yue:` and the sister projects) are
skipped, as are `[[:Category:...]]` colon links to other namespaces. Targets follow the
MediaWiki title rules: underscores and runs of whitespace become one space, the first letter
is upper-cased, HTML entities are decoded.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from graph.kg.sqldump import open_dump

_ROOT = re.compile(r"\{(http://www\.mediawiki\.org/xml/export-0\.\d+/)\}mediawiki")
_LINK = re.compile(r"\[\[([^\[\]|\n]*)(?:\||\]\])")
_NOT_LINKS = re.compile(r"<!--.*?-->|<nowiki\s*/>|<nowiki>.*?</nowiki>|<pre\b[^>]*>.*?</pre>", re.S | re.I)
_SPACES = re.compile(r"[\s_]+")
_INVALID = re.compile(r"[{}<>\[\]|]")
# Written as-is (lower case) in front of a link, these name another wiki, not a page.
_INTERWIKI = re.compile(r"[a-z]{2,3}(?:-[a-z]+)*|simple|wikt|wiktionary|commons|meta|species|wikispecies|"
                        r"wikidata|wikisource|wikiquote|wikibooks|wikinews|wikiversity|wikivoyage|voy|mw|[bcdmnqsvw]")
# Canonical namespace names and aliases valid on every wiki, whatever the dump's language.
_CANONICAL = {"media", "special", "talk", "user", "user talk", "project", "project talk", "file", "file talk",
              "image", "image talk", "mediawiki", "mediawiki talk", "template", "template talk", "help",
              "help talk", "category", "category talk"}


@dataclass(frozen=True)
class Page:
    """One page: `redirect` is the `<redirect title>` as written (None for a non-redirect);
    `redirect_link` the same target as an article title (None when it is in another
    namespace); `links` the distinct article link targets in order of first appearance."""

    id: int
    ns: int
    title: str
    redirect: str | None
    redirect_link: str | None
    links: list[str]


class Namespaces:
    """Decides whether a link prefix names a namespace or another wiki."""

    def __init__(self, names: Iterable[str]):
        self.names = _CANONICAL | {_fold(n) for n in names if n}

    def foreign(self, prefix: str) -> bool:
        prefix = prefix.strip()
        return _INTERWIKI.fullmatch(prefix) is not None or _fold(prefix) in self.names


def iter_pages(path: str | Path) -> Iterator[Page]:
    """Pages of an XML export, in file order, one at a time."""
    with open_dump(path) as f:
        context = ET.iterparse(f, events=("start", "end"))
        try:
            _, root = next(context)
        except ET.ParseError as e:
            raise ValueError(f"{path}: not XML ({e})") from None
        m = _ROOT.fullmatch(root.tag)
        if m is None:
            raise ValueError(f"{path}: not a MediaWiki XML export (root element {root.tag!r})")
        q = "{" + m.group(1) + "}"
        names: list[str] = []
        namespaces = Namespaces(names)
        try:
            for event, elem in context:
                if event != "end":
                    continue
                if elem.tag == q + "namespace":
                    names.append(elem.text or "")
                elif elem.tag == q + "siteinfo":
                    namespaces = Namespaces(names)
                    root.clear()
                elif elem.tag == q + "page":
                    yield _page(elem, q, namespaces, path)
                    root.clear()  # the finished page and its text leave the tree
        except ET.ParseError as e:
            raise ValueError(f"{path}: malformed XML ({e})") from None


def _page(elem: ET.Element, q: str, namespaces: Namespaces, path: str | Path) -> Page:
    try:
        page_id, ns = int(elem.findtext(q + "id")), int(elem.findtext(q + "ns"))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: <page> without a numeric <id> and <ns> "
                         f"(title {elem.findtext(q + 'title')!r})") from None
    redirect = elem.find(q + "redirect")
    target = redirect.get("title") if redirect is not None else None
    revisions = elem.findall(q + "revision")
    text = (revisions[-1].findtext(q + "text") or "") if revisions else ""
    return Page(id=page_id, ns=ns, title=elem.findtext(q + "title") or "", redirect=target,
                redirect_link=link_target(target, namespaces) if target is not None else None,
                links=wikilinks(text, namespaces))


def wikilinks(text: str, namespaces: Namespaces) -> list[str]:
    """Distinct article link targets of wikitext, in order of first appearance. Nested links
    (inside a File: caption) count: the pattern matches each innermost `[[...`."""
    text = _NOT_LINKS.sub("", text)
    out = (link_target(raw, namespaces) for raw in _LINK.findall(text))
    return list(dict.fromkeys(t for t in out if t))


def link_target(raw: str, namespaces: Namespaces) -> str | None:
    """The article title a link target names, or None (another namespace or wiki, a section
    of the same page, or not a valid title)."""
    t = html.unescape(raw) if "&" in raw else raw
    t = _SPACES.sub(" ", t).strip()
    if t.startswith(":"):  # [[:Foo]] is an article; [[:Category:Foo]] is caught below
        t = t[1:].lstrip()
    t = t.split("#", 1)[0].rstrip()
    if not t or _INVALID.search(t):
        return None
    if ":" in t and namespaces.foreign(t.split(":", 1)[0]):
        return None
    first = t[0].upper()
    return (first if len(first) == 1 else t[0]) + t[1:]  # 'ß'.upper() is two letters: keep it


def _fold(name: str) -> str:
    return _SPACES.sub(" ", name).strip().casefold()
