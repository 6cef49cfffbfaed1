"""Options of the active-curation loop (`review:` and `hardcases:` sections of a job spec).

    hardcases: {k: 50, min_similarity: 0.25, level: 0, samples: 6, fill_requests: 20}
    review:
      propose: {size: 200, balance: uniform, hard_case_share: 0.3, low_alignment_share: 0.3,
                random_audit_share: 0.1, seed: 0}
      verifier: {kind: alignment, threshold: 0.25}
      labelstudio: {images: local-files, document_root: /data, url_prefix: null}
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HardcasesConfig", "LabelStudioConfig", "ProposeConfig", "ReviewConfig", "VerifierConfig"]


@dataclass
class HardcasesConfig:
    """Hard-case mining: each failure query searched against `embeddings/<encoder>`.

    prompts: the failure prompts: a .txt file (one per line) or .jsonl (objects with "prompt"
        or "image", optional "action" report | prune | boost | fill, "reason", "tags").
    images: a directory of failure images (each a query, action report).
    run_id: the mining run's id (default: the UTC time, e.g. 2026-12-02T161200Z); a rerun of
        the same id changes nothing.
    encoder: the encoder whose towers embed the queries (a name among `score.encoders`; None =
        the alignment encoder, else the only embeddings table).
    k: nearest pool items per query.
    min_similarity: hits below this cosine are ignored ([-1, 1]).
    level: the dedup community level whose communities are reported and pruned (0 = finest).
    samples: sample ids listed per hit community.
    fill_requests: for `fill` decisions, the nearest pool items sent to review.
    boost: the concept boost a `boost` decision applies (multiplicative, > 0).
    max_prune_size: a `prune` decision removes a hit community only up to this many members;
        a larger one is listed in the decision as too large (a failure query should narrow a
        cluster down, or send it to review, not take out a broad one).
    """

    prompts: str | None = None
    images: str | None = None
    run_id: str | None = None
    encoder: str | None = None
    k: int = field(default=50, metadata={"min": 1})
    min_similarity: float = field(default=0.25, metadata={"min": -1.0, "max": 1.0})
    level: int = field(default=0, metadata={"min": 0})
    samples: int = field(default=6, metadata={"min": 1})
    fill_requests: int = field(default=20, metadata={"min": 1})
    boost: float = field(default=2.0, metadata={"gt": 0})
    max_prune_size: int = field(default=500, metadata={"min": 1})


@dataclass
class ProposeConfig:
    """What `curate review propose` puts in the queue for one run.

    size: items per run (hard cases first, then the shares below, the rest a balanced draw).
    balance: the sampler's balancing mode for the balanced draw (none, weight, cap, uniform).
    hard_case_share: at most this share of `size` from hard-case review requests.
    low_alignment_share: this share from the items with the lowest image-text alignment.
    random_audit_share: this share drawn uniformly at random (an unbiased audit).
    seed: every draw is a hash of (seed, run id, item id), so a rerun proposes the same items.
    """

    size: int = field(default=200, metadata={"min": 1})
    balance: str = "uniform"
    hard_case_share: float = field(default=0.3, metadata={"min": 0.0, "max": 1.0})
    low_alignment_share: float = field(default=0.3, metadata={"min": 0.0, "max": 1.0})
    random_audit_share: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    seed: int = field(default=0, metadata={"min": 0})


@dataclass
class VerifierConfig:
    """The AI verifier of proposals: `alignment` (the image-text alignment score of the proposed
    long caption's item, pass when >= threshold) or `vlm` (the captioner's VLM asked to judge
    the proposal; needs `caption.http.url`)."""

    kind: str = "alignment"
    threshold: float = field(default=0.25, metadata={"min": -1.0, "max": 1.0})


@dataclass
class LabelStudioConfig:
    """How exported tasks reference images.

    images: 'local-files' (Label Studio serves files below `document_root`:
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)
        or 'url' (`url_prefix` + the path relative to `document_root`, e.g. a static file server
        or a bucket's https endpoint).
    document_root: the directory the image paths are made relative to; images that are not
        plain files (members of lake shards) are written below it, in `<export dir>/images/`.
    url_prefix: for 'url'.
    """

    images: str = "local-files"
    document_root: str | None = None
    url_prefix: str | None = None


@dataclass
class ReviewConfig:
    """The review queue: `propose`, `verifier`, `labelstudio` (see each).

    run_id: the proposing run's id (default: the UTC time); `export` with a run id writes only
        that run's tasks.
    """

    run_id: str | None = None
    propose: ProposeConfig = field(default_factory=ProposeConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    labelstudio: LabelStudioConfig = field(default_factory=LabelStudioConfig)

    def validate(self) -> None:
        """ValueError naming the key for values the field types cannot express."""
        if self.propose.balance not in ("none", "weight", "cap", "uniform"):
            raise ValueError(f"review.propose.balance: {self.propose.balance!r}; choose none, weight, cap or uniform")
        p = self.propose
        if p.hard_case_share + p.low_alignment_share + p.random_audit_share > 1.0:
            raise ValueError("review.propose: hard_case_share + low_alignment_share + random_audit_share must be <= 1")
        if self.verifier.kind not in ("alignment", "vlm"):
            raise ValueError(f"review.verifier.kind: {self.verifier.kind!r}; choose alignment or vlm")
        if self.labelstudio.images not in ("local-files", "url"):
            raise ValueError(f"review.labelstudio.images: {self.labelstudio.images!r}; choose local-files or url")
        if self.labelstudio.images == "url" and not self.labelstudio.url_prefix:
            raise ValueError("review.labelstudio.url_prefix: images 'url' needs a url_prefix")
