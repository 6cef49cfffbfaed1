"""`curate demo`: the whole product on generated data, offline, in four phases.

    demo = Demo("./curate-demo", images=120)
    demo.run()                   # = prepare(), job(), review_round(), second_night()

- `prepare`: the corpus (reused when `<workdir>/corpus` exists), the small wiki dumps, the
  expert-edit groups and videos, the failure prompts; returns the loaded `jobs/demo.yaml`;
- `job`: runs that spec (ingest to review export) and prints what each stage kept;
- `review_round`: a simulated annotator answers the exported review tasks; they are imported,
  applied, and the lowres stage is exported again;
- `second_night`: a small batch arrives (new images, byte copies, larger re-encodes of kept
  items) and `curate nightly` folds it in.

Every path of the spec lies under `workdir` (`${CURATE_DEMO_DIR}` in the spec); the corpus files
are read where they are, so a copy of the workdir without its corpus is a working demo too.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from curation.config.spec import JobSpec, load_spec, packaged_spec_path
from curation.config.typed import override
from curation.storage.location import check_output_dir

__all__ = ["Demo"]


class Demo:
    """The demo in `workdir`: `images` generated images (plus planted bad files); `overrides`
    are spec keys (e.g. {"runtime.num_cpus": 2}); every line it reports goes to `printer`."""

    def __init__(self, workdir: str, images: int = 120, overrides: dict[str, Any] | None = None,
                 printer: Callable[[str], None] = print) -> None:
        self.workdir = os.path.abspath(workdir)
        self.images = images
        self.overrides = dict(overrides or {})
        self.printer = printer
        self.corpus = None  # the CorpusInfo of a corpus prepare() generated (None when reused)
        self.spec: JobSpec | None = None

    def load_spec(self) -> JobSpec:
        """jobs/demo.yaml with its paths under this workdir and the overrides applied (checked)."""
        os.environ["CURATE_DEMO_DIR"] = self.workdir
        return override(load_spec(packaged_spec_path("demo.yaml")), self.overrides)

    def prepare(self) -> JobSpec:
        from curation.demo.corpus import make_demo_corpus
        from curation.demo.edits import write_pair_inputs
        from curation.demo.failures import write_failure_prompts
        from curation.demo.wiki import write_demo_wiki

        check_output_dir(self.workdir, "--workdir")
        self.spec = self.load_spec()  # checked before the corpus is written
        corpus_dir = os.path.join(self.workdir, "corpus")
        if os.path.isdir(corpus_dir):
            self.printer(f"demo corpus exists: {corpus_dir} (reusing it)")
        else:
            t0 = time.perf_counter()
            self.corpus = make_demo_corpus(corpus_dir, n_images=self.images, seed=0)
            self.printer(f"demo corpus: {len(self.corpus.files)} files in {corpus_dir} "
                         f"({time.perf_counter() - t0:.1f}s), planted: "
                         + ", ".join(f"{k}={len(v)}" for k, v in self.corpus.planted.items()))
        write_demo_wiki(os.path.join(self.workdir, "wiki"))
        write_pair_inputs(self.workdir)
        write_failure_prompts(os.path.join(self.workdir, "failures.jsonl"))
        return self.spec

    def job(self) -> list:
        """Run the demo spec; the step summaries (`StepSummary`)."""
        from curation.steps.run import run_job

        spec = self.spec or self.load_spec()
        summaries = run_job(spec, printer=self.printer)
        say = self.printer
        say(f"\nlake: {spec.lake}")
        for s in summaries:
            if s.step == "ocr" and "images_with_text" in s.notes:
                say(f"ocr: {s.notes['images_with_text']} images with text, scripts {s.notes['scripts']}, "
                    f"{s.notes['throughput']}")
            if s.step.startswith("pairs-"):
                made = ", ".join(f"{kind} {sum(by.values())} ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))})"
                                 for kind, by in s.notes["pairs"].items())
                say(f"{s.step}: {made or 'no pairs'}" + (f"; rejected {s.notes['rejected']}" if s.notes.get("rejected")
                                                         else ""))
            if s.step == "hardcases":
                say(f"hardcases: {s.notes['queries']} queries {s.notes['actions']}: {s.notes['removals']} removals, "
                    f"{s.notes['boosted_nodes']} nodes boosted, {s.notes['trending_added']} trending added, "
                    f"{s.notes['review_requests']} review requests; concepts absent {s.notes['concepts_absent']}, "
                    f"empty {s.notes['concepts_empty']}")
            if s.step == "review-propose":
                say(f"review: {s.notes['proposed']} proposed {s.notes.get('by_reason', {})}, AI verifier "
                    f"{s.notes.get('verifier')}: {s.notes.get('ai_pass')} pass")
            if s.step == "export":
                say(f"stage {s.notes['stage']}: {s.rows_out} items in {s.notes['manifest']}\n"
                    f"  {s.notes.get('balance', s.notes.get('sample'))}\n  {s.notes.get('batches', '')}")
        return summaries

    def review_round(self) -> None:
        """The reviewer's side: a simulated annotator answers the exported tasks, the answers are
        imported and applied, and the lowres stage is exported again to show the effect."""
        import pyarrow.compute as pc

        from curation.demo.annotator import simulate_annotations
        from curation.steps.run import run_step
        from curation.storage import schemas
        from curation.storage.lake import Lake

        spec = self.spec or self.load_spec()
        lake = Lake(spec.lake)
        before = lake.read(schemas.manifest_table("lowres"), columns=["id", "caption"])
        tasks = os.path.join(self.workdir, "review", "tasks.json")
        answers = os.path.join(self.workdir, "review", "labelstudio-export.json")
        verdicts = simulate_annotations(tasks, answers)
        imported = run_step(lake, "review-import", spec, source=answers)
        applied = run_step(lake, "review-apply", spec)
        run_step(lake, "export", spec, stage="lowres", out=os.path.join(self.workdir, "export", "lowres"))
        after = lake.read(schemas.manifest_table("lowres"), columns=["id", "label_source"])
        relabelled = pc.sum(pc.is_valid(after["label_source"])).as_py() if "label_source" in after.column_names else 0
        self.printer(f"review: simulated reviewer answered {sum(verdicts.values())} tasks {verdicts}; imported "
                     f"{imported.notes['by_verdict']}; applied: {applied.notes['labels_written']} labels, "
                     f"{applied.notes['removals_written']} removals\n"
                     f"  lowres after review: {before.num_rows} -> {after.num_rows} items, {relabelled} with "
                     "human-approved captions")

    def second_night(self) -> None:
        """A small batch arrives (new images, byte copies of old ones, larger re-encodes of kept
        ones) and `curate nightly` folds it in; then what changed."""
        from curation.demo.night import night_spec, write_second_batch
        from curation.steps.nightly.night import nightly
        from curation.storage import schemas
        from curation.storage.lake import Lake

        spec = self.spec or self.load_spec()
        lake = Lake(spec.lake)
        incoming = os.path.join(self.workdir, "incoming", "night-2")
        planted = None if os.path.isdir(incoming) else write_second_batch(lake, incoming)
        before = {"pool": lake.read(schemas.POOL, columns=["id"]).num_rows,
                  "lowres": lake.read(schemas.manifest_table("lowres"), columns=["id"]).num_rows}
        if planted:
            self.printer(f"\nnight 2: {len(planted['new'])} new images, {len(planted['copies'])} byte copies and "
                         f"{len(planted['larger'])} larger re-encodes of kept items in {incoming}")
        night = nightly(night_spec(spec, incoming, "demo-night-2"), printer=self.printer, lake=lake)
        if night.exit_code != 0:
            raise RuntimeError(f"the demo's nightly run failed: {night.run.get('error')}")
        steps = {s["step"]: s for s in json.loads(night.run["steps_json"])}
        flipped = (steps.get("dedup") or {}).get("changes", {}).get("kept_to_duplicate", [])
        after = {"pool": lake.read(schemas.POOL, columns=["id"]).num_rows,
                 "lowres": lake.read(schemas.manifest_table("lowres"), columns=["id"]).num_rows}
        self.printer(f"night 2 changed: pool {before['pool']} -> {after['pool']} items, lowres {before['lowres']} -> "
                     f"{after['lowres']} items, {len(flipped)} kept items now duplicates of a larger copy"
                     + (f" (planted {len(planted['replaced'])})" if planted else ""))

    def run(self) -> None:
        self.prepare()
        self.job()
        self.review_round()
        self.second_night()
        self.printer(f"inspect: curate status {self.spec.lake}")
