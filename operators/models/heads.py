"""Scoring heads: small torch modules mapping one encoder's image embedding (B, D) to a score (B,).

The three public layouts are reproduced key for key so their released files load unchanged:

- `AestheticHead`: christophschuhmann/improved-aesthetic-predictor (e.g.
  `sac+logos+ava1-l14-linearMSE.pth`), on the L2-normalised embedding.
- `NsfwHead`: LAION-AI/CLIP-based-NSFW-Detector (ViT-L/14 variant), a PyTorch port of the Keras
  model, on the L2-normalised embedding.
- `AigcHead`: UnivFD (Ojha et al., CVPR 2023) linear probe `fc_weights.pth`, on the RAW embedding.

`MlpHead` is the generic in-house layout, shaped by `HeadConfig`.

Loading is strict: `torch.load(..., weights_only=True)` only (a checkpoint is data, never code),
then every missing key, unexpected key and shape mismatch is reported in one `WeightsError`,
because a silently half-loaded head produces plausible-looking but meaningless scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from operators.models.encoders import files_sha256
from operators.models.base import ImageEmbeddings, WeightsError
from operators.models.head_config import HeadConfig

__all__ = [
    "AestheticHead",
    "AigcHead",
    "Head",
    "HeadConfig",
    "MlpHead",
    "NsfwHead",
    "check_head_weights",
    "load_head",
]


class Head(nn.Module):
    """Base of all heads. `forward(emb (B, D)) -> (B,)` float32; `score` picks the embedding.

    name: output column name. kind: HeadConfig.kind. input: "normalized" or "raw".
    in_dim: D. identity: "<name>@<sha256(file)[:12]>" or "<name>@random-<seed>" (provenance).
    random_weights: True unless a weight file was loaded.
    """

    kind: ClassVar[str] = ""
    layout: ClassVar[str] = ""  # the expected file layout, quoted in error messages

    def __init__(self, name: str, in_dim: int, input: str = "normalized"):
        super().__init__()
        self.name = name
        self.in_dim = in_dim
        self.input = input
        self.identity = f"{name}@unloaded"
        self.random_weights = True

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    @torch.inference_mode()
    def score(self, embeddings: ImageEmbeddings) -> torch.Tensor:
        """Scores (B,) from the embedding this head was trained on (raw or normalised)."""
        emb = embeddings.raw if self.input == "raw" else embeddings.normalized
        return self(emb)

    @staticmethod
    def remap_keys(state: dict) -> dict:
        """Hook for layouts whose released files use other key names (see AigcHead)."""
        return state

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Seeded init: nn.Linear's default distribution U(+-1/sqrt(fan_in)), drawn from `generator`
        so the global RNG is left alone."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features**0.5
                with torch.no_grad():
                    m.weight.uniform_(-bound, bound, generator=generator)
                    m.bias.uniform_(-bound, bound, generator=generator)


class AestheticHead(Head):
    """improved-aesthetic-predictor MLP: no activations (as released); Dropout is off in eval."""

    kind = "aesthetic"
    layout = "improved-aesthetic-predictor: layers.{0,2,4,6,7}.{weight,bias}"

    def __init__(self, in_dim: int = 768, name: str = "aesthetic"):
        super().__init__(name, in_dim, "normalized")
        self.layers = nn.Sequential(
            nn.Linear(in_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb.float()).squeeze(-1)


class NsfwHead(Head):
    """CLIP-based-NSFW-Detector (L/14) ported from Keras: Normalization, 3 ReLU Dense, sigmoid.

    Linear weights are (out, in), i.e. the Keras kernels transposed.
    """

    kind = "nsfw"
    layout = (
        "CLIP-based-NSFW-Detector port: norm.{mean,variance}, linear_{1,2,3,4}.{weight,bias}"
    )

    def __init__(self, in_dim: int = 768, name: str = "nsfw"):
        super().__init__(name, in_dim, "normalized")
        self.norm = nn.Module()
        # Buffers, not parameters: they are data of the file (Keras adapt() statistics).
        self.norm.register_buffer("mean", torch.zeros(in_dim))
        self.norm.register_buffer("variance", torch.ones(in_dim))
        self.linear_1 = nn.Linear(in_dim, 64)
        self.linear_2 = nn.Linear(64, 512)
        self.linear_3 = nn.Linear(512, 256)
        self.linear_4 = nn.Linear(256, 1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        # Keras Normalization divides by max(std, epsilon): a constant feature gives 0, not NaN.
        std = self.norm.variance.sqrt().clamp_min(1e-7)
        x = (emb.float() - self.norm.mean) / std
        x = torch.relu(self.linear_1(x))
        x = torch.relu(self.linear_2(x))
        x = torch.relu(self.linear_3(x))
        return torch.sigmoid(self.linear_4(x)).squeeze(-1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        super().reset_parameters(generator)
        self.norm.mean.zero_()
        self.norm.variance.fill_(1.0)


class AigcHead(Head):
    """UnivFD linear probe on the unnormalised CLIP embedding (the paper probes raw features)."""

    kind = "aigc"
    layout = "UnivFD fc_weights.pth: {weight, bias} (or fc.{weight, bias})"

    def __init__(self, in_dim: int = 768, name: str = "aigc"):
        super().__init__(name, in_dim, "raw")
        self.fc = nn.Linear(in_dim, 1)

    @staticmethod
    def remap_keys(state: dict) -> dict:
        # The released fc_weights.pth is `model.fc.state_dict()`: bare "weight"/"bias".
        return {(f"fc.{k}" if k in ("weight", "bias") else k): v for k, v in state.items()}

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(emb.float())).squeeze(-1)


class MlpHead(Head):
    """In-house MLP: Linear layers with `activation` between them; keys layers.<i>.{weight,bias}
    at the Linear positions (0, 2, 4, ... with an activation; 0, 1, 2, ... with "none")."""

    kind = "mlp"
    layout = "MlpHead: layers.<i>.{weight,bias} per HeadConfig.hidden/activation"

    def __init__(
        self,
        in_dim: int,
        hidden: list[int] | tuple[int, ...] = (),
        activation: str = "relu",
        input: str = "normalized",
        output: str = "identity",
        name: str = "mlp",
    ):
        super().__init__(name, in_dim, input)
        acts = {"relu": nn.ReLU, "gelu": nn.GELU, "none": None}
        if activation not in acts or input not in ("normalized", "raw"):
            raise ValueError(f"head '{name}': bad activation {activation!r} or input {input!r}")
        if output not in ("sigmoid", "identity"):
            raise ValueError(f"head '{name}': output must be sigmoid/identity, got {output!r}")
        self.output = output
        widths = [in_dim, *hidden, 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i > 0 and acts[activation] is not None:
                layers.append(acts[activation]())
            layers.append(nn.Linear(a, b))
        self.layers = nn.Sequential(*layers)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        y = self.layers(emb.float()).squeeze(-1)
        return torch.sigmoid(y) if self.output == "sigmoid" else y


_KINDS: dict[str, type[Head]] = {
    "aesthetic": AestheticHead,
    "nsfw": NsfwHead,
    "aigc": AigcHead,
    "mlp": MlpHead,
}
_MLP_ONLY = {"hidden": [], "activation": "relu", "input": "normalized", "output": "identity"}


def _validate(cfg: HeadConfig) -> None:
    if cfg.kind not in _KINDS:
        raise ValueError(f"head '{cfg.name}': unknown kind {cfg.kind!r}; one of {sorted(_KINDS)}")
    # The public layouts fix their own input/output: a setting here would be silently ignored.
    if cfg.kind != "mlp":
        set_ = [k for k, v in _MLP_ONLY.items() if getattr(cfg, k) != v]
        if set_:
            raise ValueError(
                f"head '{cfg.name}': {set_} apply to kind 'mlp' only, not {cfg.kind!r}"
            )


def check_head_weights(cfg: HeadConfig) -> str | None:
    """Cheap pre-flight (no torch.load): None if `load_head` can proceed, a skip reason if the
    head is optional and its weights are absent; raises WeightsError (or ValueError for a bad
    config) otherwise. Run it for every head before any work starts."""
    _validate(cfg)
    layout = _KINDS[cfg.kind].layout
    if cfg.weights is None:
        if cfg.random:
            return None
        if cfg.optional:
            return f"head '{cfg.name}' skipped: no weights configured (optional)"
        raise WeightsError(
            f"head '{cfg.name}' has no weights: set heads[].weights to a local .pth file "
            f"({layout}), or mark it optional"
        )
    path = Path(cfg.weights).expanduser()
    if path.is_file():
        return None
    if cfg.optional:
        return f"head '{cfg.name}' skipped: weights file {path} not found (optional)"
    raise WeightsError(
        f"head '{cfg.name}': weights file {path} not found: set heads[].weights to an existing "
        f"local .pth file ({layout}), or mark the head optional"
    )


def head_identity(cfg: HeadConfig) -> str:
    """"<name>@<sha256(weights)[:12]>" or "<name>@random-<seed>": provenance, without loading."""
    if cfg.weights is None:
        return f"{cfg.name}@random-{cfg.seed}"
    return f"{cfg.name}@{files_sha256([Path(cfg.weights).expanduser()])[:12]}"


def _read_state_dict(head: Head, path: Path) -> dict[str, torch.Tensor]:
    """weights_only load, unwrap the common wrappers, strict key/shape check against `head`."""
    where = f"head '{head.name}' ({head.layout}), file {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable/unsafe file is the same user error
        raise WeightsError(f"{where}: not a plain state dict (weights_only load): {e}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{where}: expected a state dict, got {type(state).__name__}")
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    state = head.remap_keys(state)

    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    problems = []
    if missing := sorted(expected.keys() - state.keys()):
        problems.append(f"missing keys {missing}")
    if unexpected := sorted(map(str, state.keys() - expected.keys())):
        problems.append(f"unexpected keys {unexpected}")
    bad = []
    for k in sorted(expected.keys() & state.keys()):
        v = state[k]
        if not isinstance(v, torch.Tensor):
            bad.append(f"{k}: expected tensor {expected[k]}, got {type(v).__name__}")
        elif tuple(v.shape) != expected[k]:
            bad.append(f"{k}: expected {expected[k]}, got {tuple(v.shape)}")
    if bad:
        problems.append("shape mismatches [" + "; ".join(bad) + "]")
    if problems:
        raise WeightsError(f"{where} does not match the layout: " + "; ".join(problems))
    return state


def load_head(cfg: HeadConfig, in_dim: int) -> Head | None:
    """Build and load one head for an encoder of width `in_dim`, in eval mode on CPU.

    Returns None when the head is optional and its weights are absent (see check_head_weights).
    Raises WeightsError on missing/mismatching weights, ValueError on a bad config.
    """
    if check_head_weights(cfg) is not None:
        return None
    if cfg.in_dim is not None and cfg.in_dim != in_dim:
        raise ValueError(
            f"head '{cfg.name}': in_dim {cfg.in_dim} but encoder '{cfg.encoder}' embeds {in_dim}"
        )
    cls = _KINDS[cfg.kind]
    kwargs = {"name": cfg.name}
    if cls is MlpHead:
        kwargs.update(hidden=cfg.hidden, activation=cfg.activation, input=cfg.input,
                      output=cfg.output)
    # Build on the meta device: no wasted default init and no draw from the global RNG.
    with torch.device("meta"):
        head = cls(in_dim, **kwargs)
    head = head.to_empty(device="cpu")

    if cfg.weights is not None:
        path = Path(cfg.weights).expanduser()
        head.load_state_dict(_read_state_dict(head, path), strict=True)
        head.random_weights = False
    else:  # cfg.random, checked above
        head.reset_parameters(torch.Generator().manual_seed(cfg.seed))
        head.random_weights = True
    head.identity = head_identity(cfg)
    return head.eval()
