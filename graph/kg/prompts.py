"""Prompt-log frequency boosts and trending concepts, each recorded in kg.boost_source.

Matching: a prompt or list entry is folded and split into words (`textnorm.phrase`) and
scanned left to right for the longest word n-gram (up to the longest title, at most 6 words)
that is a kept node's folded title or alias (titles win); a match consumes its words. So
'new york city at night' mentions 'New York City' and 'Night', not 'York' or 'City' (a
gazetteer's longest match: the words inside a named concept are not separate mentions). A
prompt counts once per node however often it names it.

Boosts are multiplicative and start at 1 (neutral): a node named by c prompts gets
boost ·= 1 + alpha·ln(1 + c); a trending concept gets boost ·= factor (default 2).
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import repeat
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa

from graph.kg.model import KnowledgeGraph
from graph.kg.tablefile import is_table_file, read_table_file
from graph.kg.textnorm import name_index, phrase

# Longest n-gram looked up: titles of more words are left out of prompt matching.
MAX_NGRAM_WORDS = 6


def count_prompts(kg: KnowledgeGraph, prompts: Iterable[str],
                  weights: Iterable[int] | None = None) -> np.ndarray:
    """int64 [n]: per node, the prompts mentioning it (each prompt weighted by `weights`, its
    repeat count in the log; 1 each when None). Non-string prompts are skipped; dropped nodes
    get 0."""
    lookup = {key: pos for key, (pos, _) in name_index(kg, phrase).items()
              if key.count(" ") < MAX_NGRAM_WORDS}
    longest = max((key.count(" ") + 1 for key in lookup), default=0)
    if weights is None:
        pairs = zip(prompts, repeat(1))
    else:
        prompts, weights = list(prompts), list(weights)
        if len(prompts) != len(weights):
            raise ValueError(f"count_prompts: {len(prompts)} prompts but {len(weights)} weights")
        pairs = zip(prompts, weights)
    # Logs repeat prompts heavily: match each distinct folded prompt once.
    distinct: Counter[str] = Counter()
    for prompt, w in pairs:
        if isinstance(prompt, str):
            distinct[phrase(prompt)] += int(w)
    counts = np.zeros(kg.n, np.int64)
    for text, w in distinct.items():
        hits = longest_matches(text.split(" ") if text else [], lookup, longest)
        for pos in hits:
            counts[pos] += w
    return counts


def longest_matches(tokens: list[str], lookup: dict[str, int], longest: int) -> set[int]:
    """Node positions named in `tokens`: at each word the longest n-gram in `lookup` wins and
    its words are consumed; words starting no match are skipped."""
    hits, i = set(), 0
    while i < len(tokens):
        for j in range(min(i + longest, len(tokens)), i, -1):
            pos = lookup.get(" ".join(tokens[i:j]))
            if pos is not None:
                hits.add(pos)
                i = j
                break
        else:
            i += 1
    return hits


def read_prompt_log(path: str | Path, column: str = "prompt",
                    count_column: str = "count") -> tuple[list[str], np.ndarray]:
    """(prompts, counts int64): a Parquet (.parquet, .pq), CSV (.csv) or JSON-lines (.jsonl,
    .ndjson, .json) file with a `column` of prompts and an optional `count_column` (repeats
    of that prompt; null -> 1), or any other file as UTF-8 text, one prompt per line (count 1).
    Null and blank prompts are dropped."""
    path = Path(path)
    if is_table_file(path):
        table = read_table_file(path, (column,), what="prompt log")
        if column not in table.column_names:
            raise ValueError(f"{path}: no column {column!r}; columns: {table.column_names}")
        prompts = table.column(column).cast(pa.string()).to_pylist()
        if count_column in table.column_names:
            raw = table.column(count_column).to_pylist()
            counts = [1 if c is None else int(c) for c in raw]
        else:
            counts = [1] * len(prompts)
    else:
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\r\n") for line in f]
        counts = [1] * len(prompts)
    keep = [i for i, p in enumerate(prompts) if p is not None and p.strip()]
    if any(counts[i] < 0 for i in keep):
        raise ValueError(f"{path}: negative prompt counts in {count_column!r}")
    return [prompts[i] for i in keep], np.asarray([counts[i] for i in keep], np.int64)


def ensure_boost_attrs(kg: KnowledgeGraph) -> None:
    """Create kg.attrs 'boost' (float64, 1 = neutral) and 'prompt_count' (int64, 0) if absent."""
    kg.attrs["boost"] = np.asarray(kg.attrs.get("boost", np.ones(kg.n)), np.float64)
    kg.attrs["prompt_count"] = np.asarray(kg.attrs.get("prompt_count", np.zeros(kg.n, np.int64)), np.int64)


def apply_prompt_boost(kg: KnowledgeGraph, counts: np.ndarray, source: str | Path, *,
                       alpha: float = 1.0) -> int:
    """Add `counts` (from `count_prompts`) to kg.attrs['prompt_count'] and multiply the boost
    of each node with count c > 0 by 1 + alpha·ln(1 + c); record 'prompts:<file name>'.
    Returns the number of nodes boosted."""
    counts = np.asarray(counts, np.int64)
    if counts.shape != (kg.n,):
        raise ValueError(f"apply_prompt_boost: counts has shape {counts.shape}, graph has {kg.n} nodes")
    ensure_boost_attrs(kg)
    kg.attrs["prompt_count"] = kg.attrs["prompt_count"] + counts
    hit = np.flatnonzero(counts > 0)
    kg.attrs["boost"][hit] *= 1 + alpha * np.log1p(counts[hit].astype(np.float64))
    _record(kg, hit, f"prompts:{Path(source).name}")
    return len(hit)


def add_trending(kg: KnowledgeGraph, path: str | Path, *, factor: float = 2.0) -> dict[str, int]:
    """Apply a trending list: one concept per line, optionally '<TAB><factor>' (default
    `factor`); blank lines and lines starting with '#' are skipped.

    A concept naming a kept node (folded title or alias) multiplies that node's boost by its
    factor; any other concept becomes a new node (kind 'trending', source and boost_source
    'trending:<file name>', boost = factor). A concept repeated in the file counts once (its
    first line), and so does a node listed by title and by alias. Returns the counts
    {'matched', 'added', 'duplicates'}.
    """
    path = Path(path)
    label = f"trending:{path.name}"
    ensure_boost_attrs(kg)
    index = name_index(kg, phrase)
    seen: set[str] = set()
    seen_nodes: set[int] = set()
    matched: list[tuple[int, float]] = []
    new_titles: list[str] = []
    new_factors: list[float] = []
    duplicates = 0
    for concept, f in _read_trending(path, factor):
        key = phrase(concept)
        if not key:
            continue
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        hit = index.get(key)
        if hit is not None and hit[0] in seen_nodes:
            duplicates += 1  # a title and its alias both listed: boost the node once
        elif hit is not None:
            seen_nodes.add(hit[0])
            matched.append((hit[0], f))
        else:
            new_titles.append(" ".join(concept.replace("_", " ").split()))
            new_factors.append(f)
    for pos, f in matched:
        kg.attrs["boost"][pos] *= f
    _record(kg, np.asarray([pos for pos, _ in matched], np.int64), label)
    if new_titles:
        added = kg.add_nodes(new_titles, "trending", label,
                             attrs={"boost": np.asarray(new_factors, np.float64),
                                    "prompt_count": np.zeros(len(new_titles), np.int64)})
        _record(kg, added, label)
    return {"matched": len(matched), "added": len(new_titles), "duplicates": duplicates}


def _read_trending(path: Path, default: float) -> list[tuple[str, float]]:
    """(concept, factor) per entry line of a trending list file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            concept, _, value = line.partition("\t")
            try:
                f_value = float(value) if value.strip() else default
            except ValueError:
                raise ValueError(f"{path}:{number}: factor {value.strip()!r} is not a number") from None
            if not (math.isfinite(f_value) and f_value > 0):
                raise ValueError(f"{path}:{number}: factor must be a positive number, got {f_value}")
            out.append((concept, f_value))
    return out


def _record(kg: KnowledgeGraph, positions: np.ndarray, label: str) -> None:
    """Append `label` to boost_source of each position ('; '-joined, each label once)."""
    for pos in positions:
        current = kg.boost_source[pos]
        if current is None:
            kg.boost_source[pos] = label
        elif label not in current.split("; "):
            kg.boost_source[pos] = f"{current}; {label}"
