"""Trainer feed: read a training stage's export (manifest + batch plan) into PyTorch batches.

Runs on training nodes without Ray (torch, pyarrow and Pillow only):

    from torch.utils.data import DataLoader
    from curation.feed import StageBatches

    # an export directory: `curate export --out DIR`, or <lake>/_exports/<stage>/v<version>/
    ds = StageBatches("s3://bucket/lake/_exports/sft/v00000012", epoch=0, rank=rank, world_size=world)
    for batch in DataLoader(ds, batch_size=None, num_workers=8):
        batch["pixel_values"], batch["captions"]

See `curation.feed.loader` for the file contract, sharding and bad-item rules.
"""

from curation.feed.images import decode_cover, to_tensor
from curation.feed.loader import (
    PlanBatchSampler,
    StageBatches,
    StageImages,
    StagePlan,
    Step,
    collate_batch,
    plan_name,
    rank_schedule,
    steps_per_rank,
)

__all__ = [
    "PlanBatchSampler", "StageBatches", "StageImages", "StagePlan", "Step", "collate_batch",
    "decode_cover", "plan_name", "rank_schedule", "steps_per_rank", "to_tensor",
]
