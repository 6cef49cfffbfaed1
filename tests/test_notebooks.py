"""The notebooks run top to bottom on the demo lake (executed, not just parsed)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, env: dict, monkeypatch, tmp_path) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def test_profile_explore_notebook(demo_lake, monkeypatch, tmp_path):
    nb = _execute("01_profile_explore.ipynb", {"CURATE_LAKE": demo_lake["lake"], "CURATE_STAGE": "lowres"},
                  monkeypatch, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # histograms, removed grid, dup groups
    text = "".join(o.get("text", "") for o in outputs)
    assert "kept; removed per rule" in text and "near-duplicate groups" in text


def test_dedup_and_search_notebook(demo_lake, monkeypatch, tmp_path):
    nb = _execute("02_dedup_and_search.ipynb", {"CURATE_LAKE": demo_lake["lake"]}, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # group grid, histograms, 2 searches
    text = "".join(o.get("text", "") for o in outputs)
    assert "items," in text and "top hit similarity 1.0" in text


def test_knowledge_graph_notebook(demo_lake, monkeypatch, tmp_path):
    nb = _execute("03_knowledge_graph.ipynb", {"CURATE_LAKE": demo_lake["lake"]}, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # PageRank, neighbourhood, coverage
    text = "".join(o.get("text", "") for o in outputs)
    assert "pruned, by reason" in text and "(L2, taxonomy)" in text and "coverage change" in text
