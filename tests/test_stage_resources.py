"""curation.runtime.ray_stage_args: declared operator / encoder resources -> Ray stage arguments."""

from __future__ import annotations

import pytest

from curation.runtime import ray_stage_args
from operators.base import Operator


class Cheap(Operator):
    name = "cheap"


class Wide(Operator):
    name = "wide"
    resources = {"num_cpus": 4, "memory": 2 << 30}


class OnGpu(Operator):
    name = "on_gpu"
    resources = {"num_cpus": 2, "num_gpus": 0.5, "memory": 1 << 30, "accelerator_x": 1}


def args(*ops, **kw):
    return ray_stage_args([op.resources for op in ops], **kw)


def test_cpu_operators_take_the_largest_cpu_need_and_summed_memory():
    assert args(Cheap) == {"num_cpus": 1}
    assert args(Cheap, Wide) == {"num_cpus": 4, "memory": 2 << 30}
    assert args(Wide, OnGpu, gpus=0) == {"num_cpus": 4, "memory": 3 << 30, "resources": {"accelerator_x": 1}}


def test_gpus_are_requested_only_when_the_cluster_has_them():
    assert args(Cheap, OnGpu, gpus=2) == {"num_gpus": 0.5, "num_cpus": 2, "memory": 1 << 30,
                                          "resources": {"accelerator_x": 1}}
    assert "num_gpus" not in args(OnGpu, gpus=0)
    assert ray_stage_args([{"num_gpus": 1}], gpus=0) == {"num_cpus": 1}  # CPU fallback keeps a CPU
    assert ray_stage_args([{"num_gpus": 1}], gpus=1) == {"num_gpus": 1}
    with pytest.raises(ValueError, match="needs 2 GPUs; the cluster has 1"):
        ray_stage_args([{"num_gpus": 2}], gpus=1)


def test_memory_floor_and_validation():
    assert ray_stage_args([], memory=1 << 30) == {"num_cpus": 1, "memory": 1 << 30}
    assert args(Wide, memory=1 << 30)["memory"] == 2 << 30  # declared needs above the floor win
    for bad in ({"num_cpus": -1}, {"num_gpus": "1"}, {"memory": True}):
        with pytest.raises(ValueError, match="must be a number"):
            ray_stage_args([bad])


def test_the_defaults_keep_todays_stage_arguments():
    """Operators default to one CPU; encoders to one GPU (one CPU on CPU-only clusters), and
    their CPU prepare stage to one CPU."""
    from operators.models.base import Encoder
    from operators.models.encoders import EncoderConfig, encoder_class
    from operators.registry import DEFAULT_PROFILE_OPERATORS, get_operator

    assert ray_stage_args([get_operator(n).resources for n in DEFAULT_PROFILE_OPERATORS]) == {"num_cpus": 1}
    cls = encoder_class(EncoderConfig(name="c", model="RN50"))
    assert issubclass(cls, Encoder) and encoder_class(EncoderConfig(name="z", backend="chinese_clip")) is not cls
    assert ray_stage_args([cls.prepare_resources]) == {"num_cpus": 1}
    assert ray_stage_args([cls.resources], gpus=0, memory=1 << 30) == {"num_cpus": 1, "memory": 1 << 30}
    assert ray_stage_args([cls.resources], gpus=4, memory=1 << 30) == {"num_gpus": 1, "num_cpus": 1, "memory": 1 << 30}
