"""The geometric half of a model's preprocessing, as small picklable objects.

The scoring step resolves these from the encoder config alone (`encoders.image_geometry`, no
weights loaded), runs them in CPU task stages right after the one decode, and ships uint8
pixels to the model actors, which normalise on their device. The encoders use the very same
objects in `prepare`, so the two paths cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class OpenClipGeometry:
    """open_clip's eval transform up to ToTensor: size (height, width) px, interpolation
    ("bicubic" | "bilinear"), resize_mode ("shortest" | "squash" | "longest"), fill_color."""

    size: tuple[int, int]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __call__(self, image: Image.Image) -> np.ndarray:
        import torchvision.transforms.functional as TF
        from open_clip.transform import ResizeKeepRatio, center_crop_or_pad
        from torchvision.transforms import InterpolationMode

        image = image if image.mode == "RGB" else image.convert("RGB")
        mode = InterpolationMode.BILINEAR if self.interpolation == "bilinear" else InterpolationMode.BICUBIC
        h, w = self.size
        # The same torchvision / open_clip calls in the same order as open_clip's transform,
        # so the pixels are identical to it.
        if self.resize_mode == "longest":
            image = center_crop_or_pad(ResizeKeepRatio((h, w), interpolation=mode, longest=1)(image), [h, w],
                                       fill=self.fill_color)
        elif self.resize_mode == "squash":
            image = TF.resize(image, [h, w], interpolation=mode)
        elif self.resize_mode == "shortest":
            # open_clip uses ResizeKeepRatio's default (bicubic) for non-square sizes.
            image = TF.resize(image, h, interpolation=mode) if h == w else ResizeKeepRatio((h, w))(image)
            image = TF.center_crop(image, [h, w])
        else:
            raise ValueError(f"unknown open_clip resize_mode {self.resize_mode!r}")
        return np.array(image, dtype=np.uint8)


@dataclass(frozen=True)
class ProcessorGeometry:
    """A Hugging Face image processor's resize (+ centre crop), as Chinese-CLIP uses it.

    resize: int = shortest edge (aspect kept), (height, width) = squash (OFA-Sys checkpoints),
        None = no resize; crop: (height, width) centre crop or None; resample: PIL code.
    """

    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None = None
    resample: int = int(Image.Resampling.BICUBIC)

    @property
    def size(self) -> tuple[int, int]:
        return self.crop or self.resize  # type: ignore[return-value]

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image if image.mode == "RGB" else image.convert("RGB")
        if self.resize is not None:
            w, h = image.size
            if isinstance(self.resize, int):  # shortest edge -> n, aspect kept (HF's rounding)
                short, long = min(w, h), max(w, h)
                new_short, new_long = self.resize, int(self.resize * long / short)
                new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
            else:
                new_h, new_w = self.resize
            if (new_w, new_h) != (w, h):
                image = image.resize((new_w, new_h), Image.Resampling(self.resample))
        arr = np.array(image, dtype=np.uint8)
        return _center_crop(arr, self.crop) if self.crop else arr


def _center_crop(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """HF's centre crop: zero-pad when smaller, offsets floor((H - h) / 2)."""
    ch, cw = hw
    h, w = arr.shape[:2]
    if ch > h or cw > w:
        top, left = max(ch - h, 0) // 2, max(cw - w, 0) // 2
        padded = np.zeros((max(h, ch), max(w, cw), 3), dtype=arr.dtype)
        padded[top:top + h, left:left + w] = arr
        arr, (h, w) = padded, padded.shape[:2]
    top, left = int((h - ch) / 2.0), int((w - cw) / 2.0)
    return np.ascontiguousarray(arr[top:top + ch, left:left + cw])
