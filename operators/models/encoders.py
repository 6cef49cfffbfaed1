"""Encoder configuration, pre-flight weight checks and loading.

Two backends implement the `Encoder` contract of `operators.models.base`:

- "open_clip" (`operators.models.open_clip_encoder`): any open_clip architecture, weights from a
  local checkpoint file, a `local-dir:` folder, or a pretrained tag / `hf-hub:` id that is
  already in the local cache. Nothing is ever downloaded.
- "chinese_clip" (`operators.models.cn_clip_encoder`): Hugging Face `ChineseCLIPModel` from a
  local directory written by `save_pretrained` (or a downloaded OFA-Sys snapshot). Needs the
  optional `transformers` package.

`check_encoder_weights(cfg)` is the cheap pre-flight (file-system and cache look-ups only, no
model build) that the pipeline runs before starting any actor; `load_encoder(cfg)` builds the
model on CPU in fp32 and the scoring actor then calls `.to(device, encoder_dtype(cfg, device))`.

Importing this module does not import torch: job specs hold `EncoderConfig`s, and every `curate`
process and Ray worker that reads a spec would otherwise pay torch's import (seconds).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal

from operators.models.errors import WeightsError

if TYPE_CHECKING:
    import torch

    from operators.models.base import Encoder

Backend = Literal["open_clip", "chinese_clip"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]

_HASH_CHUNK = 1 << 20  # 1 MiB: bounded memory while hashing multi-GB checkpoints


@dataclass
class EncoderConfig:
    """One image/text encoder.

    name: the configured name (e.g. "clip_l14"); used in column names and the identity.
    backend: "open_clip" or "chinese_clip".
    model: open_clip architecture name (e.g. "ViT-L-14-quickgelu"; OpenAI weights need the
        quickgelu variant). Required for open_clip unless `pretrained` is "local-dir:" or
        "hf-hub:" (whose folder carries the architecture); then and for chinese_clip it only
        labels the identity (default: the folder / repo name).
    pretrained: where the weights come from; never downloaded.
        open_clip: a local checkpoint file (.pt/.bin/.pth/.safetensors), "local-dir:/path"
        (a folder with open_clip_config.json and the weights), "hf-hub:org/repo" (resolved from
        the local Hugging Face cache only) or a pretrained tag (e.g. "openai", resolved from the
        local open_clip / Hugging Face cache only).
        chinese_clip: a local directory saved with `save_pretrained` (config.json, weights,
        vocab.txt or tokenizer.json, preprocessor_config.json or processor_config.json).
        None: random init, only allowed with `random: true`.
    random: allow random init when `pretrained` is None (tests, demo; scores are meaningless).
        Ignored when `pretrained` is set. open_clip only.
    seed: torch seed for the random init (the global RNG state is restored afterwards).
    model_overrides: open_clip only, passed to `open_clip.create_model` as model keyword
        arguments, replacing top-level keys of the architecture config (e.g. embed_dim, or a
        whole vision_cfg / text_cfg dict for tiny test models; nested dicts are not merged).
    precision: model dtype on the accelerator: "auto" = fp16 on CUDA, fp32 on CPU; "fp16",
        "bf16" or "fp32" force it (see `encoder_dtype`). Embeddings are always returned as fp32.
    batch_size: optional hint, images per forward for the scoring actor (None: its default).
    """

    name: str
    backend: Backend = "open_clip"
    model: str | None = None
    pretrained: str | None = None
    random: bool = False
    seed: int = 0
    model_overrides: dict[str, Any] = field(default_factory=dict)
    precision: Precision = "auto"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("open_clip", "chinese_clip"):
            raise ValueError(
                f"encoder {self.name!r}: unknown backend {self.backend!r}; "
                "set encoders[].backend to 'open_clip' or 'chinese_clip'"
            )
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(
                f"encoder {self.name!r}: unknown precision {self.precision!r}; "
                "set encoders[].precision to auto, fp32, fp16 or bf16"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        """Build from a spec mapping; unknown keys are an error naming the accepted ones."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"encoder {d.get('name')!r}: unknown keys {unknown}; accepted: {sorted(known)}")
        return cls(**d)


def encoder_dtype(cfg: EncoderConfig, device: torch.device | str) -> torch.dtype:
    """The model dtype for `device`: precision "auto" is fp16 on CUDA and fp32 elsewhere
    (fp16 matmuls on CPU are slow and some kernels are missing)."""
    import torch

    dev = torch.device(device)
    if cfg.precision == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.precision]


def check_encoder_weights(cfg: EncoderConfig) -> None:
    """Fast pre-flight, no model build: raises `WeightsError` naming the setting to change when
    the weights cannot be found locally (missing file/folder, uncached tag or hf-hub id,
    `pretrained: null` without `random: true`)."""
    if cfg.backend == "open_clip":
        from operators.models.open_clip_encoder import resolve_source

        resolve_source(cfg)
    else:
        import importlib.util

        from operators.models.cn_clip_encoder import check_cn_clip_dir

        check_cn_clip_dir(cfg)
        if importlib.util.find_spec("transformers") is None:
            raise ImportError(f"encoder {cfg.name!r}: the chinese_clip backend needs the `transformers` package")


def load_encoder(cfg: EncoderConfig) -> Encoder:
    """Build the encoder on CPU in fp32 (runs the same checks as `check_encoder_weights` first)."""
    if cfg.backend == "open_clip":
        from operators.models.open_clip_encoder import OpenClipEncoder

        return OpenClipEncoder(cfg)
    from operators.models.cn_clip_encoder import ChineseClipEncoder

    return ChineseClipEncoder(cfg)


def encoder_class(cfg: EncoderConfig) -> type[Encoder]:
    """The `Encoder` subclass of `cfg`'s backend, without building a model: its class
    attributes (`resources`, `prepare_resources`) size the scoring step's Ray stages."""
    if cfg.backend == "open_clip":
        from operators.models.open_clip_encoder import OpenClipEncoder

        return OpenClipEncoder
    from operators.models.cn_clip_encoder import ChineseClipEncoder

    return ChineseClipEncoder


def encoder_identity(cfg: EncoderConfig) -> str:
    """The identity the loaded encoder reports (name@arch#sha256[:12] of its weights, or
    #random-<seed>), computed from files alone: provenance for the lake without a model build."""
    if cfg.backend == "open_clip":
        from operators.models.open_clip_encoder import resolve_source

        src = resolve_source(cfg)
        digest = f"random-{cfg.seed}" if src.weights_file is None else files_sha256([src.weights_file])[:12]
        return f"{cfg.name}@{src.arch}{overrides_tag(cfg.model_overrides)}#{digest}"
    from operators.models.cn_clip_encoder import check_cn_clip_dir

    d, weights = check_cn_clip_dir(cfg)
    return f"{cfg.name}@{cfg.model or d.name}#{files_sha256(weights)[:12]}"


def image_geometry(cfg: EncoderConfig):
    """The picklable resize/crop of `cfg`'s encoder, resolved without loading weights: what the
    scoring step's CPU stage runs (the encoder's own `prepare` uses the same object)."""
    if cfg.backend == "open_clip":
        from operators.models.open_clip_encoder import geometry_for
    else:
        from operators.models.cn_clip_encoder import geometry_for
    return geometry_for(cfg)


def missing_weights(cfg: EncoderConfig, what: str, fix: str) -> WeightsError:
    """A `WeightsError` in the one message shape used everywhere: what is wrong, then what to set."""
    return WeightsError(f"encoder {cfg.name!r}: {what}; {fix}")


def files_sha256(paths: Iterable[str | os.PathLike]) -> str:
    """Hex sha256 of one file's bytes; for several files (the shards of one checkpoint), the
    sha256 of their digests in the given order."""
    digests = []
    for p in paths:
        st = os.stat(p)
        digests.append(_file_sha256(str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too, so a rewritten file is hashed again; the cache spares the
    # second hash of a multi-GB checkpoint when the pre-flight and the load run in one process.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def overrides_tag(overrides: dict[str, Any]) -> str:
    """'' or '+<sha256[:8]>' of the overrides, so two tiny models with different shapes and the
    same seed never share an identity."""
    if not overrides:
        return ""
    blob = json.dumps(overrides, sort_keys=True, default=str).encode()
    return "+" + hashlib.sha256(blob).hexdigest()[:8]


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub offline mode for the duration: any uncached file raises instead of being
    downloaded. huggingface_hub reads HF_HUB_OFFLINE once at import, so its constant is set too.
    Process-global state: meant for the one-time model load, not for concurrent threads."""
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub client: nothing can be downloaded through it anyway
        constants = None
    old_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def triple(v: Any) -> tuple[float, float, float]:
    """Per-channel mean/std as 3 floats (a scalar is repeated)."""
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),) * 3
