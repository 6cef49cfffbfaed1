"""open_clip backend: any open_clip architecture, weights from local files or the local cache only.

Weight sources (`EncoderConfig.pretrained`) are resolved here to a local file *before* open_clip
sees them, so `open_clip.create_model` never reaches its download paths:

- a checkpoint file path, passed as `pretrained=<file>`;
- a pretrained tag (e.g. "openai"): looked up in the local Hugging Face cache and in open_clip's
  URL cache (~/.cache/clip), then passed as a file path together with the tag's preprocessing
  (mean / std / interpolation / resize_mode), which open_clip would otherwise take from the tag;
- "local-dir:/path": passed through (open_clip reads open_clip_config.json and the weights there);
- "hf-hub:org/repo": checked in the local cache, then passed through with the hub in offline mode.

All model and tokenizer construction runs with the Hugging Face hub in offline mode as well, so
HF text towers or tokenizers that are not cached fail instead of downloading.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from operators.models.base import Encoder, WeightsError, l2_normalize
from operators.models.prep import OpenClipGeometry
from operators.models.encoders import (
    EncoderConfig, encoder_identity, hub_offline, missing_weights, triple,
)

_FIX_FILE = "set encoders[].pretrained to a local checkpoint file or local-dir:, or random: true for tests"
# Tag preprocessing keys open_clip merges from a pretrained tag's config (see create_model).
_TAG_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


@dataclass(frozen=True)
class WeightSource:
    """A resolved, local weight source: what `open_clip.create_model` gets, and what is hashed."""

    model_name: str  # create_model's model_name: an architecture, "local-dir:..." or "hf-hub:..."
    arch: str  # label for the identity
    pretrained: str | None = None  # a local checkpoint file, or None
    weights_file: Path | None = None  # the file hashed into the identity; None = random init
    preprocess: dict[str, Any] = field(default_factory=dict)  # a tag's preprocessing overrides


def resolve_source(cfg: EncoderConfig) -> WeightSource:
    """Map `cfg.pretrained` to local files, raising `WeightsError` (what to set) when absent.
    File-system and cache look-ups only: no model is built, nothing is downloaded."""
    p = cfg.pretrained
    if p is None:
        if not cfg.random:
            raise missing_weights(cfg, "pretrained is not set (random init not allowed)", _FIX_FILE)
        arch = _require_arch(cfg)
        return WeightSource(arch, arch)

    if p.startswith("local-dir:"):
        folder = Path(p[len("local-dir:"):]).expanduser()
        conf = folder / "open_clip_config.json"
        if not folder.is_dir():
            raise missing_weights(cfg, f"local-dir folder {folder} not found", _FIX_FILE)
        if not conf.is_file():
            raise missing_weights(cfg, f"local-dir folder {folder} has no open_clip_config.json", _FIX_FILE)
        if "model_cfg" not in json.loads(conf.read_text(encoding="utf-8")):
            raise missing_weights(cfg, f"{conf} has no 'model_cfg' entry", _FIX_FILE)
        from open_clip.factory import _find_checkpoint_in_dir  # the file open_clip itself will load

        ckpt = _find_checkpoint_in_dir(folder)
        if ckpt is None:
            raise missing_weights(cfg, f"local-dir folder {folder} has no *.safetensors/*.bin/*.pth weights", _FIX_FILE)
        return WeightSource(f"local-dir:{folder}", cfg.model or folder.name, weights_file=Path(ckpt))

    if p.startswith("hf-hub:"):
        from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo = p[len("hf-hub:"):]
        conf = _hub_cached(repo, HF_CONFIG_NAME)
        weights = _hub_cached(repo, HF_SAFE_WEIGHTS_NAME) or _hub_cached(repo, HF_WEIGHTS_NAME)
        if conf is None or weights is None:
            raise missing_weights(
                cfg, f"{p} is not in the local Hugging Face cache ({_hub_cache_dir()})",
                "download it ahead of time, or " + _FIX_FILE,
            )
        return WeightSource(p, cfg.model or repo, weights_file=weights)

    arch = _require_arch(cfg)
    path = Path(p).expanduser()
    if path.is_file():
        return WeightSource(arch, arch, pretrained=str(path), weights_file=path)

    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(arch, p)
    if not tag_cfg:
        raise missing_weights(cfg, f"pretrained file {p} not found (and not an open_clip tag of {arch})", _FIX_FILE)
    cached = _cached_tag_file(tag_cfg)
    if cached is None:
        raise missing_weights(
            cfg, f"pretrained tag {p!r} of {arch} is not in the local cache ({_hub_cache_dir()} or ~/.cache/clip)",
            "download it ahead of time, or " + _FIX_FILE,
        )
    _check_quick_gelu(cfg, arch, p, tag_cfg)
    preprocess = {k: tag_cfg[k] for k in _TAG_PREPROCESS_KEYS if tag_cfg.get(k) is not None}
    return WeightSource(arch, arch, pretrained=str(cached), weights_file=cached, preprocess=preprocess)


class OpenClipEncoder(Encoder):
    """An open_clip model. Built on CPU in fp32; `.to(device, dtype)` moves and casts it.

    Preprocessing follows the model's own preprocess config (`model.visual.preprocess_cfg`):
    `prepare` does the geometry in PIL exactly as open_clip's eval transform does, and
    `encode_images` the /255 scaling and mean/std normalisation on the model's device.
    """

    kind = "open_clip"

    def __init__(self, cfg: EncoderConfig):
        import open_clip
        from open_clip.model import get_model_preprocess_cfg, get_model_tokenize_cfg

        src = resolve_source(cfg)
        self.name = cfg.name
        self.random_weights = src.weights_file is None
        try:
            with hub_offline(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = open_clip.create_model(
                    src.model_name, pretrained=src.pretrained, precision="fp32", device="cpu",
                    # No base-tower weights either (HF text towers would otherwise be fetched).
                    pretrained_image=False, pretrained_text=False,
                    force_preprocess_cfg=src.preprocess or None, **cfg.model_overrides,
                )
                ctx = get_model_tokenize_cfg(model).get("context_length")
                self.tokenizer = open_clip.get_tokenizer(src.model_name, context_length=ctx)
        except WeightsError:
            raise
        except Exception as e:  # layout mismatch, offline cache miss: say what to set
            raise missing_weights(
                cfg, f"could not build {src.arch} from {src.weights_file or 'random init'}: {e}",
                "set encoders[].model / model_overrides to the checkpoint's architecture, or " + _FIX_FILE,
            ) from e
        self.model = model.eval().requires_grad_(False)

        pp = get_model_preprocess_cfg(model)
        self.geometry = _geometry(pp)
        self.image_size = self.geometry.size
        self._mean = torch.tensor(triple(pp["mean"]), dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(triple(pp["std"]), dtype=torch.float32).view(1, 3, 1, 1)
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.embed_dim = _embed_dim(model, self.image_size)

        self.identity = encoder_identity(cfg)

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Captions -> L2-normalised text embeddings, float32 (B, D); truncated to the context length."""
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        tokens = self.tokenizer([str(t) for t in texts]).to(self.device)
        return l2_normalize(self.model.encode_text(tokens).float())


def geometry_for(cfg: EncoderConfig) -> OpenClipGeometry:
    """The encoder's `geometry` from its config alone (no model build), as create_model would
    set it: PreprocessCfg defaults, then the local-dir / hf-hub config's preprocess_cfg, then the
    tag's preprocessing; the size is the vision tower's image_size (overrides replace
    vision_cfg wholesale, as create_model's kwargs do)."""
    import open_clip
    from open_clip.transform import PreprocessCfg

    src = resolve_source(cfg)
    pp: dict[str, Any] = asdict(PreprocessCfg())
    if src.model_name.startswith(("local-dir:", "hf-hub:")):
        if src.model_name.startswith("local-dir:"):
            conf_path = Path(src.model_name[len("local-dir:"):]) / "open_clip_config.json"
        else:
            from open_clip.constants import HF_CONFIG_NAME

            conf_path = _hub_cached(src.model_name[len("hf-hub:"):], HF_CONFIG_NAME)
        conf = json.loads(Path(conf_path).read_text(encoding="utf-8"))
        model_cfg = dict(conf["model_cfg"])
        pp.update(conf.get("preprocess_cfg", {}))
    else:
        model_cfg = dict(open_clip.get_model_config(src.model_name) or {})
    model_cfg.update(cfg.model_overrides)
    pp.update(src.preprocess)
    pp["size"] = model_cfg.get("vision_cfg", {}).get("image_size", pp["size"])
    return _geometry(pp)


def _geometry(pp: dict[str, Any]) -> OpenClipGeometry:
    size = pp["size"]
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return OpenClipGeometry(size=size, interpolation=pp.get("interpolation") or "bicubic",
                            resize_mode=pp.get("resize_mode") or "shortest", fill_color=pp.get("fill_color", 0))


def _require_arch(cfg: EncoderConfig) -> str:
    import open_clip

    if not cfg.model:
        raise ValueError(f"encoder {cfg.name!r}: set encoders[].model to an open_clip architecture (e.g. ViT-B-32)")
    arch = cfg.model.replace("/", "-")  # open_clip's own spelling rule ("ViT-B/32" -> "ViT-B-32")
    if open_clip.get_model_config(arch) is None:
        raise ValueError(
            f"encoder {cfg.name!r}: unknown open_clip architecture {cfg.model!r}; "
            "set encoders[].model to one of open_clip.list_models()"
        )
    return arch


def _check_quick_gelu(cfg: EncoderConfig, arch: str, tag: str, tag_cfg: dict) -> None:
    """open_clip only warns when a tag was trained with QuickGELU and the architecture is not the
    -quickgelu variant; the embeddings are then silently wrong, so refuse."""
    import open_clip

    model_qg = cfg.model_overrides.get("quick_gelu", open_clip.get_model_config(arch).get("quick_gelu", False))
    tag_qg = tag_cfg.get("quick_gelu", False)
    if bool(model_qg) != bool(tag_qg):
        want = f"{arch}-quickgelu" if tag_qg else arch.removesuffix("-quickgelu")
        raise missing_weights(
            cfg, f"tag {tag!r} was trained with quick_gelu={tag_qg} but {arch} uses quick_gelu={model_qg}",
            f"set encoders[].model to {want!r}",
        )


def _hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return constants.HF_HUB_CACHE
    except ImportError:
        return "~/.cache/huggingface/hub"


def _hub_cached(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    hit = try_to_load_from_cache(repo_id=repo, filename=filename)
    return Path(hit) if isinstance(hit, str) and os.path.isfile(hit) else None


def _cached_tag_file(tag_cfg: dict) -> Path | None:
    """The local file of a pretrained tag, in open_clip's order of preference (hub, then URL)."""
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives

    if tag_cfg.get("file"):
        f = Path(tag_cfg["file"]).expanduser()
        return f if f.is_file() else None
    if tag_cfg.get("hf_hub"):
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        for name in (*_get_safe_alternatives(filename), filename):
            hit = _hub_cached(repo, name)
            if hit is not None:
                return hit
    if tag_cfg.get("url"):
        f = Path("~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        if f.is_file():
            return f
    return None


def _embed_dim(model: torch.nn.Module, size: tuple[int, int]) -> int:
    out = getattr(model.visual, "output_dim", None)
    if out:
        return int(out)
    with torch.inference_mode():  # timm towers do not expose it: one tiny forward
        return int(model.encode_image(torch.zeros(1, 3, *size)).shape[-1])
