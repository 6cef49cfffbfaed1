"""The notebooks run top to bottom on the demo lake (executed, not just parsed)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from procs import PROCESS_TIMEOUT_S

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, env: dict, monkeypatch, tmp_path) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # per-cell and kernel start-up limits: a notebook cell may start its own Ray on a busy machine
    NotebookClient(nb, timeout=PROCESS_TIMEOUT_S, startup_timeout=PROCESS_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def _run(name: str, env: dict, monkeypatch, tmp_path) -> tuple[int, str]:
    """Execute a notebook; fail on any error output; return (images shown, printed text)."""
    nb = _execute(name, env, monkeypatch, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    return (sum("image/png" in o.get("data", {}) for o in outputs), "".join(o.get("text", "") for o in outputs))


def test_profile_explore_notebook(demo_lake, monkeypatch, tmp_path):
    images, text = _run("01_profile_explore.ipynb", {"CURATE_LAKE": demo_lake["lake"], "CURATE_STAGE": "lowres"},
                        monkeypatch, tmp_path)
    assert images >= 3  # histograms, removed grid, dup groups
    assert "kept; removed per rule" in text and "near-duplicate groups" in text


def test_dedup_and_search_notebook(demo_lake, monkeypatch, tmp_path):
    images, text = _run("02_dedup_and_search.ipynb", {"CURATE_LAKE": demo_lake["lake"]}, monkeypatch, tmp_path)
    assert images >= 4  # group grid, histograms, 2 searches
    assert "items," in text and "top hit similarity 1.0" in text


def test_knowledge_graph_notebook(demo_lake, monkeypatch, tmp_path):
    images, text = _run("03_knowledge_graph.ipynb", {"CURATE_LAKE": demo_lake["lake"]}, monkeypatch, tmp_path)
    assert images >= 3  # PageRank, neighbourhood, coverage
    assert "pruned, by reason" in text and "(L2, taxonomy)" in text and "coverage change" in text


def test_committed_notebooks_carry_their_outputs():
    """The files in the repo are saved executed (`notebooks/execute.py`), plots included, so
    they read as examples without running them."""
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, f"{path.name}: run notebooks/execute.py"
        assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip()), path.name


def test_stages_and_batches_notebook(demo_lake, monkeypatch, tmp_path):
    images, text = _run("04_stages_and_batches.ipynb", {"CURATE_LAKE": demo_lake["lake"]}, monkeypatch, tmp_path)
    assert images >= 3  # buckets, batch sizes, concept marginals, one batch's images
    assert "same sample as the lake True, same plan True" in text and "padding waste" in text
    assert "concepts [uniform]: normalised entropy" in text and "identical True" in text


def test_edit_pairs_notebook(demo_lake, monkeypatch, tmp_path):
    images, text = _run("05_edit_pairs.ipynb", {"CURATE_LAKE": demo_lake["lake"]}, monkeypatch, tmp_path)
    assert images >= 5  # kinds, expert / video / render pairs, group graph, manifest
    assert "pairs per kind (instruction source):" in text and "pending, by reason" in text
    assert "N(N+1) =" in text and "i2i rows per pair_kind:" in text
    assert "every i2i row is a pair (id = pair_id, same source and instruction): True" in text


def test_active_curation_notebook(demo_lake, monkeypatch, tmp_path):
    # The fixture's demo run stops after `review export` (no simulated reviewer): the notebook
    # shows the proposed queue and says the review has not been applied yet.
    images, text = _run("06_active_curation.ipynb", {"CURATE_LAKE": demo_lake["lake"]}, monkeypatch, tmp_path)
    assert images >= 5  # hit grid, coverage, review states, verifier scores, proposals, before / after
    assert "hit communities per query" in text and "concept coverage per query" in text
    assert "what each decision recorded:" in text and "added trending node" in text
    assert "review states per version of the reviews table:" in text and "AI verifier vs human verdict:" in text
    assert "kg_nodes before the hard cases: v" in text
    assert "lowres manifest before review: v" in text and "lowres manifest after review:" in text
    assert "labelling config" in text and "one exported task of" in text
