"""A small demo wiki in the real dump formats, built around the demo captions' vocabulary, plus
a prompt log and a trending list: what `curate demo` feeds to the knowledge-graph steps.

Articles: every caption subject, colour, style and setting, a few broader concepts they link
to ("Animal", "Vehicle", ...), pages the title rules drop (a list, a disambiguation page, year
and date pages) and obscure articles nothing links to (PageRank drops them). Redirects give
aliases ("Puppy" -> "Dog", "Photo" -> "Photograph"). One category-namespace page shows that
only articles are kept. Written as gzipped SQL dumps in the current pagelinks schema.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curation.demo.captions import COLOURS, SETTINGS, STYLES, SUBJECTS
from graph.kg.synth import write_sql_table

BROADER = {  # broader concept -> the article titles it links to (and that link back)
    "Animal": ["Dog", "Cat", "Horse", "Bird", "Owl"],
    "Vehicle": ["Car", "Bicycle", "Sailing boat", "Train"],
    "Landscape": ["Mountain", "Beach", "Forest", "Waterfall", "City skyline"],
    "Building": ["Bridge", "Lighthouse", "Castle", "House"],
    "Food": ["Cake", "Coffee cup", "Teapot"],
    "Plant": ["Flower", "Tree"],
    "Machine": ["Robot"],
    "Color": ["Red", "Blue", "Green", "Yellow", "White", "Black", "Orange", "Purple"],
    "Visual art": ["Photograph", "Watercolor painting", "Oil painting", "Digital illustration",
                   "Pencil sketch", "3D rendering"],
    "Scene": ["Sunset", "Snow", "Street", "Park", "Sky", "Night", "Desert", "Sea", "Studio"],
}
STYLE_TITLES = {"photo": "Photograph", "3d render": "3D rendering"}
REDIRECTS = {"Puppy": "Dog", "Kitten": "Cat", "Automobile": "Car", "Photo": "Photograph",
             "Bike": "Bicycle", "Sailboat": "Sailing boat", "Coffee": "Coffee cup", "Sundown": "Sunset"}
RULE_PAGES = ["List of dog breeds", "Dog (disambiguation)", "1987", "March 3", "2010s", "Timeline of photography"]
PROMPTS = ["a red car at night", "a castle in the snow", "a robot in a studio", "a red car by the sea",
           "an owl at sunset", "a lighthouse under a cloudy sky", "a robot painting a teapot",
           "a cat in a park", "watercolor painting of a castle", "a puppy on a busy street"]
TRENDING = ["robot", "lantern festival\t3"]


def _title(words: str) -> str:
    return words[:1].upper() + words[1:]


def write_demo_wiki(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the dumps, `prompts.txt` and `trending.txt` under out_dir; returns their paths
    (keys: page, redirect, linktarget, pagelinks, prompts, trending)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    specific = [_title(s) for s, _ in SUBJECTS] + [_title(c) for c, _ in COLOURS]
    specific += [STYLE_TITLES.get(s, _title(s)) for s, _ in STYLES]
    specific += [_title(s.split()[-1]) for s, _ in SETTINGS] + ["Sunset"]
    specific = list(dict.fromkeys(specific))
    obscure = [f"Obscure topic {i}" for i in range(5)]
    articles = list(BROADER) + specific + RULE_PAGES + obscure
    pos = {t: i for i, t in enumerate(articles)}
    links: set[tuple[int, int]] = set()
    for broad, members in BROADER.items():
        for m in members:
            links |= {(pos[m], pos[broad]), (pos[broad], pos[m])}
    for a in specific:  # a sparse web among the concrete concepts
        for b in rng.choice(len(specific), 3, replace=False):
            if specific[b] != a:
                links.add((pos[a], pos[specific[b]]))
    links |= {(pos["List of dog breeds"], pos["Dog"]), (pos["Dog (disambiguation)"], pos["Dog"]),
              (pos["Timeline of photography"], pos["Photograph"]), (pos["1987"], pos["Car"]),
              (pos["Car"], pos["1987"]), (pos["Animal"], pos["List of dog breeds"]),
              (pos["Dog"], pos["Dog (disambiguation)"]), (pos["Photograph"], pos["Timeline of photography"]),
              (pos["Sunset"], pos["March 3"]), (pos["Landscape"], pos["2010s"])}
    for o in obscure:  # they link out; nothing links in
        links.add((pos[o], pos[specific[int(rng.integers(len(specific)))]]))

    def page_row(page_id: int, ns: int, title: str, redirect: int) -> tuple:
        return (page_id, ns, title.replace(" ", "_"), redirect, 0, float(rng.random()), "20240101000000",
                "20240101000000", 1000 + page_id, 100 + page_id, "wikitext", None)

    page_id = {t: 10 + i for i, t in enumerate(articles)}
    redirect_id = {t: 1000 + i for i, t in enumerate(REDIRECTS)}
    rows = [page_row(page_id[t], 0, t, 0) for t in articles]
    rows += [page_row(redirect_id[t], 0, t, 1) for t in REDIRECTS]
    rows.append(page_row(5000, 14, "Animals", 0))  # a category page: not an article
    paths = {"page": write_sql_table(out / "demowiki-20240101-page.sql.gz", "page", rows),
             "redirect": write_sql_table(out / "demowiki-20240101-redirect.sql.gz", "redirect",
                                         [(redirect_id[a], 0, t.replace(" ", "_"), "", "") for a, t in REDIRECTS.items()])}
    targets = articles + ["Puppy", "Photo"]  # two links go through redirects
    lt_id = {t: 500 + i for i, t in enumerate(targets)}
    paths["linktarget"] = write_sql_table(out / "demowiki-20240101-linktarget.sql.gz", "linktarget",
                                          [(lt_id[t], 0, t.replace(" ", "_")) for t in targets] + [(999, 14, "Animals")])
    pl = sorted((page_id[articles[a]], 0, lt_id[articles[b]]) for a, b in links)
    pl += [(page_id["Cat"], 0, lt_id["Puppy"]), (page_id["Landscape"], 0, lt_id["Photo"]),
           (5000, 14, lt_id["Dog"]), (page_id["Dog"], 0, 999)]
    paths["pagelinks"] = write_sql_table(out / "demowiki-20240101-pagelinks.sql.gz", "pagelinks", sorted(pl))
    paths["prompts"] = out / "prompts.txt"
    paths["prompts"].write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    paths["trending"] = out / "trending.txt"
    paths["trending"].write_text("# concepts users ask for this week (tab: boost factor)\n" + "\n".join(TRENDING) + "\n",
                                 encoding="utf-8")
    return paths
