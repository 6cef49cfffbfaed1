"""Folding of titles, aliases, tags and prompts so that spellings of one name compare equal.

`fold`: Unicode NFKC (full-width 'ＣＡＴ' -> 'CAT', ligatures, compatibility forms), casefold
('Straße' -> 'strasse'), underscores -> spaces (Wikipedia URL form 'Eiffel_Tower'), runs of
whitespace -> one space, stripped. `words`: a folded text split into words with sentence
punctuation trimmed from their ends (symbols inside names such as 'C#', 'AC/DC', 'Spider-Man'
stay). `name_index`: folded title / alias -> kept node, the lookup shared by tag mapping,
prompt counting and trending lists.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

if TYPE_CHECKING:
    from graph.kg.model import KnowledgeGraph

# Trimmed from word ends only: sentence punctuation and quotes, never symbols that are part of
# names ('#', '+', '-', '/', '&', '.' inside 'U.S').
_EDGE_PUNCTUATION = ".,;:!?\"'()[]{}<>«»“”‘’„…"


def fold(text: str) -> str:
    """The comparison form of a name: NFKC, casefolded, '_' -> ' ', whitespace collapsed, stripped."""
    if text.isascii():
        # ASCII is NFKC-invariant and casefold == lower on it: the common case stays cheap.
        text = text.lower()
    else:
        # NFKC again after casefold: casefolding can leave compatibility characters behind.
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.replace("_", " ").split())


def fold_many(texts: Iterable) -> list[str]:
    """`fold` of each item; items that are not strings (None, numbers) fold to '' (no name)."""
    return [fold(t) if isinstance(t, str) else "" for t in texts]


def words(text: str) -> list[str]:
    """The folded words of a text: `fold`, split on whitespace, sentence punctuation trimmed
    from each word's ends; words that were only punctuation are dropped."""
    out = []
    for w in fold(text).split():
        w = w.strip(_EDGE_PUNCTUATION)
        if w:
            out.append(w)
    return out


def phrase(text: str) -> str:
    """`words` joined by single spaces: the key under which prompts and lists match names."""
    return " ".join(words(text))


def name_index(kg: "KnowledgeGraph", key: Callable[[str], str] = fold) -> dict[str, tuple[int, str]]:
    """key(name) -> (node position, 'title' | 'alias') over kept nodes.

    Titles win over aliases. Among kept nodes whose titles share a key (Wikipedia titles are
    case-sensitive: 'AIDS' and 'Aids'), the one with the higher `pagerank` attr wins (the
    lower position without one); likewise for aliases, by their target. Empty keys are left out.
    """
    kept = kg.kept
    rank = -np.asarray(kg.attrs["pagerank"], np.float64) if "pagerank" in kg.attrs else np.zeros(kg.n)
    rank = np.nan_to_num(rank, nan=0.0)  # added nodes may carry NaN pagerank: rank them as 0
    index: dict[str, tuple[int, str]] = {}
    for pos in np.lexsort((np.arange(kg.n), rank)):
        title = kg.title[pos]
        if kept[pos] and isinstance(title, str):
            k = key(title)
            if k:
                index.setdefault(k, (int(pos), "title"))
    targets = np.asarray(kg.alias_node, np.int64)
    for a in np.lexsort((np.arange(len(targets)), rank[targets])) if len(targets) else ():
        node, title = int(targets[a]), kg.alias_title[a]
        if kept[node] and isinstance(title, str):
            k = key(title)
            if k:
                index.setdefault(k, (node, "alias"))
    return index
