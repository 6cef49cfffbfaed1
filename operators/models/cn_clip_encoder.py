"""chinese_clip backend: Hugging Face `ChineseCLIPModel` from a local directory (needs `transformers`).

The directory is what `save_pretrained` writes (or an OFA-Sys snapshot): config.json, the weights
(model.safetensors / pytorch_model.bin, or a sharded index), the BERT vocabulary (vocab.txt or
tokenizer.json) and the image processor config (preprocessor_config.json, or processor_config.json
as transformers v5 writes it). Everything is loaded with `local_files_only=True`.

Preprocessing follows the saved image processor: OFA-Sys checkpoints squash-resize to
size x size (bicubic, no crop); a processor with `shortest_edge` + centre crop is honoured too.
`prepare` does the geometry in PIL, `encode_images` the rescale and mean/std normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from operators.models.base import Encoder, l2_normalize
from operators.models.prep import ProcessorGeometry
from operators.models.encoders import EncoderConfig, encoder_identity, hub_offline, missing_weights, triple

# Chinese-CLIP was trained with a 52-token text context (OFA-Sys `context_length`); the BERT
# config carries 512 positions, but those past 52 never saw CLIP training.
CN_CLIP_CONTEXT = 52
_FIX_DIR = "set encoders[].pretrained to a local directory saved with save_pretrained (config.json, weights, vocab.txt)"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_cn_clip_dir(cfg: EncoderConfig) -> tuple[Path, list[Path]]:
    """Check the directory without loading anything; returns it and its weight file(s) in order.
    Raises `WeightsError` naming what is missing."""
    if cfg.pretrained is None:
        raise missing_weights(cfg, "chinese_clip has no random init (its tokenizer needs a vocabulary)", _FIX_DIR)
    d = Path(cfg.pretrained).expanduser()
    if not d.is_dir():
        raise missing_weights(cfg, f"chinese_clip directory {d} not found", _FIX_DIR)
    conf = d / "config.json"
    if not conf.is_file():
        raise missing_weights(cfg, f"{d} has no config.json", _FIX_DIR)
    model_type = json.loads(conf.read_text(encoding="utf-8")).get("model_type")
    if model_type != "chinese_clip":
        raise missing_weights(cfg, f"{conf} has model_type {model_type!r}, not 'chinese_clip'", _FIX_DIR)
    weights = _weight_files(d)
    if not weights:
        raise missing_weights(cfg, f"{d} has no {' or '.join(_WEIGHT_FILES)} (or all shards of a sharded index)", _FIX_DIR)
    if not any((d / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        raise missing_weights(cfg, f"{d} has no tokenizer (vocab.txt or tokenizer.json)", _FIX_DIR)
    if not any((d / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise missing_weights(cfg, f"{d} has no preprocessor_config.json / processor_config.json", _FIX_DIR)
    return d, weights


class ChineseClipEncoder(Encoder):
    """Chinese-CLIP (OFA-Sys) via transformers. Raw embeddings are the projected features
    (`get_image_features`); scores live on a different scale from OpenAI CLIP."""

    kind = "chinese_clip"

    def __init__(self, cfg: EncoderConfig):
        d, weights = check_cn_clip_dir(cfg)
        try:
            from transformers import ChineseCLIPModel, ChineseCLIPProcessor
        except ImportError as e:
            raise ImportError("the chinese_clip backend needs the `transformers` package") from e
        with hub_offline():
            # transformers v5 defaults to dtype="auto" (the checkpoint's dtype): ask for fp32.
            model = ChineseCLIPModel.from_pretrained(d, local_files_only=True, dtype=torch.float32)
            processor = ChineseCLIPProcessor.from_pretrained(d, local_files_only=True)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = processor.tokenizer
        ip = processor.image_processor
        self.name = cfg.name
        self.random_weights = False
        self.embed_dim = int(model.config.projection_dim)
        self.max_length = min(CN_CLIP_CONTEXT, int(model.config.text_config.max_position_embeddings))

        self.geometry = _geometry(cfg, d, ip)
        self.image_size = self.geometry.size
        self._scale = float(ip.rescale_factor) if getattr(ip, "do_rescale", True) else 1.0
        norm = getattr(ip, "do_normalize", True)
        mean = ip.image_mean if norm else (0.0, 0.0, 0.0)
        std = ip.image_std if norm else (1.0, 1.0, 1.0)
        self._mean = torch.tensor(triple(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(triple(std), dtype=torch.float32).view(1, 3, 1, 1)
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.identity = encoder_identity(cfg)

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=x))

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Captions (Chinese or English) -> L2-normalised embeddings, float32 (B, D); 52 tokens max."""
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        enc = self.tokenizer(
            [str(t) for t in texts], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return l2_normalize(_features(self.model.get_text_features(**enc)).float())


def _features(out: Any) -> torch.Tensor:
    # transformers v5 returns BaseModelOutputWithPooling (projection in pooler_output); v4 a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _weight_files(d: Path) -> list[Path]:
    for name in _WEIGHT_FILES:
        if (d / name).is_file():
            return [d / name]
    for name in _INDEX_FILES:
        index = d / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            files = [d / s for s in shards]
            return files if files and all(f.is_file() for f in files) else []
    return []


def _get(size: Any, key: str) -> Any:
    # v5 image processors hold a SizeDict (attributes), older ones a plain dict.
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _hw(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(_get(size, "height")), int(_get(size, "width")))


def _resize_target(ip: Any) -> int | tuple[int, int]:
    """int: shortest edge; (height, width): squash."""
    size = ip.size
    if isinstance(size, int):
        return (size, size)
    if _get(size, "shortest_edge") and not _get(size, "longest_edge"):
        return int(_get(size, "shortest_edge"))
    if _get(size, "height") and _get(size, "width"):
        return _hw(size)
    raise ValueError(f"unsupported Chinese-CLIP image processor size {size!r}")


def geometry_for(cfg: EncoderConfig) -> ProcessorGeometry:
    """The encoder's `geometry` from the directory's image processor config (no weights)."""
    from transformers import ChineseCLIPProcessor

    d, _ = check_cn_clip_dir(cfg)
    with hub_offline():
        ip = ChineseCLIPProcessor.from_pretrained(d, local_files_only=True).image_processor
    return _geometry(cfg, d, ip)


def _geometry(cfg: EncoderConfig, d: Path, ip: Any) -> ProcessorGeometry:
    resize = _resize_target(ip) if getattr(ip, "do_resize", True) else None
    crop = _hw(ip.crop_size) if getattr(ip, "do_center_crop", False) else None
    if crop is None and (resize is None or isinstance(resize, int)):
        raise missing_weights(cfg, f"{d}: image processor gives no fixed output size", _FIX_DIR)
    return ProcessorGeometry(resize=resize, crop=crop, resample=int(getattr(ip, "resample", Image.Resampling.BICUBIC)))
