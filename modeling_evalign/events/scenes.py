"""Photographs seen through a moving virtual camera: the ground-truth intensity for simulated events.

A :class:`PhotoScene` renders a photograph (any ``[H, W]`` or ``[H, W, 3]`` array) through a camera
whose pose at time ``t`` is a similarity transform (pan, zoom, rotation) given by :class:`CameraMotion`.
Poses are in photo units, independent of the output resolution, so the same scene renders at the event
sensor's size and at the RGB camera's size (as DSEC's two cameras see one scene). Bilinear sampling
with mirror padding (torch ``grid_sample``). scikit-image is imported only by :func:`load_photo`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PHOTOS", "CameraMotion", "PhotoScene", "load_photo"]

# skimage.data loader -> class label (photographs shipped inside scikit-image, no download)
PHOTOS: dict[str, str] = {
    "astronaut": "astronaut",
    "coffee": "cup of coffee",
    "chelsea": "cat",
    "rocket": "rocket",
    "camera": "cameraman",
    "hubble_deep_field": "galaxies",
    "coins": "coins",
    "moon": "moon",
    "brick": "brick wall",
    "grass": "grass",
    "gravel": "gravel",
    "stereo_motorcycle": "motorcycle",
    "clock": "clock",
    "immunohistochemistry": "stained tissue",
}


def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph as uint8 RGB ``[H, W, 3]`` (grey images are replicated)."""
    if name not in PHOTOS:
        raise KeyError(f"unknown photograph {name!r}; expected one of {sorted(PHOTOS)}")
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: the left view
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


@dataclass
class CameraMotion:
    """Camera pose over time, in photo units.

    The view centre is ``(0.5 + pan_amplitude * sin(2 pi pan_frequency_hz t + pan_phase)) * photo size
    + velocity * t * photo size`` (x and y separately); the view height is ``view_fraction * (1 +
    zoom_amplitude * sin(2 pi zoom_frequency_hz t))`` of the photo height; the rotation is
    ``rotation_amplitude_rad * sin(2 pi rotation_frequency_hz t)``. ``t`` in seconds.
    """

    view_fraction: float = 0.6
    pan_amplitude: tuple[float, float] = (0.1, 0.05)
    pan_frequency_hz: tuple[float, float] = (0.2, 0.3)
    pan_phase: tuple[float, float] = (0.0, 0.0)
    velocity: tuple[float, float] = (0.0, 0.0)
    zoom_amplitude: float = 0.0
    zoom_frequency_hz: float = 0.1
    rotation_amplitude_rad: float = 0.0
    rotation_frequency_hz: float = 0.1

    @classmethod
    def random(cls, rng: np.random.Generator, speed: float = 1.0) -> CameraMotion:
        """A random smooth motion; ``speed`` scales every frequency and the drift velocity."""

        def pair(lo, hi):
            return (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))

        return cls(
            view_fraction=float(rng.uniform(0.45, 0.75)),
            pan_amplitude=pair(0.03, 0.12),
            pan_frequency_hz=tuple(speed * f for f in pair(0.1, 0.4)),
            pan_phase=pair(0, 2 * math.pi),
            velocity=tuple(speed * v for v in pair(-0.02, 0.02)),
            zoom_amplitude=float(rng.uniform(0.0, 0.15)),
            zoom_frequency_hz=speed * float(rng.uniform(0.05, 0.3)),
            rotation_amplitude_rad=float(rng.uniform(0.0, 0.15)),
            rotation_frequency_hz=speed * float(rng.uniform(0.05, 0.3)),
        )

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def pose(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(cx, cy, view_height, angle)`` per time, as fractions of the photo size / radians."""
        t_s = np.asarray(t_s, dtype=np.float64)
        c = [
            0.5 + a * np.sin(2 * math.pi * f * t_s + ph) + v * t_s
            for a, f, ph, v in zip(self.pan_amplitude, self.pan_frequency_hz, self.pan_phase, self.velocity)
        ]
        zoom = self.view_fraction * (
            1 + self.zoom_amplitude * np.sin(2 * math.pi * self.zoom_frequency_hz * t_s)
        )
        angle = self.rotation_amplitude_rad * np.sin(2 * math.pi * self.rotation_frequency_hz * t_s)
        return c[0], c[1], zoom, angle


class PhotoScene:
    """A photograph under a :class:`CameraMotion`.

    ``photo``: ``[H, W]`` or ``[H, W, 3]`` array of intensities 0..255 (uint8 or float).
    ``blur_sigma``: Gaussian blur of the photo in photo pixels (optics; also keeps the simulator's
    adaptive sub-frame count reasonable, as sharp edges need tiny time steps).
    """

    def __init__(self, photo: np.ndarray, motion: CameraMotion | None = None, blur_sigma: float = 0.0):
        photo = np.asarray(photo)
        if photo.ndim == 2:
            photo = photo[..., None]
        if photo.ndim != 3 or photo.shape[2] not in (1, 3):
            raise ValueError(f"photo must be [H, W] or [H, W, 3], got shape {photo.shape}")
        self.motion = motion or CameraMotion()
        rgb = torch.from_numpy(photo.astype(np.float32)).permute(2, 0, 1)
        if rgb.shape[0] == 1:
            rgb = rgb.expand(3, -1, -1)
        self._rgb = _gaussian_blur(rgb.unsqueeze(0).contiguous(), blur_sigma)  # [1, 3, Hp, Wp]
        lum = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        self._gray = (self._rgb * lum).sum(1, keepdim=True)  # [1, 1, Hp, Wp]
        self.photo_height, self.photo_width = photo.shape[:2]

    def _grid(self, t_us: np.ndarray, height: int, width: int) -> torch.Tensor:
        cx, cy, vh, ang = (torch.from_numpy(v).float().view(-1, 1, 1) for v in self.motion.pose(t_us * 1e-6))
        hp, wp = self.photo_height, self.photo_width
        half_h = vh * (hp / 2)  # photo pixels
        half_w = half_h * (width / height)
        u = ((torch.arange(width) + 0.5) * (2 / width) - 1).view(1, 1, width)
        v = ((torch.arange(height) + 0.5) * (2 / height) - 1).view(1, height, 1)
        du, dv = u * half_w, v * half_h  # [T, 1, W], [T, H, 1]
        cos, sin = torch.cos(ang), torch.sin(ang)
        # source position in photo pixels, then grid_sample's [-1, 1] (align_corners=False) units
        gx = (cx * wp + cos * du - sin * dv) * (2 / wp) - 1
        gy = (cy * hp + sin * du + cos * dv) * (2 / hp) - 1
        return torch.stack([gx, gy], dim=-1)

    def render(self, t_us, height: int, width: int, rgb: bool = False) -> np.ndarray:
        """Frames at times ``t_us`` (scalar or ``[T]`` µs): float32 ``[T, height, width]`` grey (or
        ``[T, height, width, 3]`` with ``rgb``), intensity 0..255. A scalar time gives no T axis."""
        scalar = np.ndim(t_us) == 0
        t = np.atleast_1d(np.asarray(t_us, dtype=np.float64))
        src = self._rgb if rgb else self._gray
        grid = self._grid(t, height, width)
        out = F.grid_sample(
            src.expand(len(t), -1, -1, -1),
            grid,
            mode="bilinear",
            padding_mode="reflection",
            align_corners=False,
        )
        out = out.permute(0, 2, 3, 1).numpy() if rgb else out[:, 0].numpy()
        out = np.clip(out, 0, 255)
        return out[0] if scalar else out


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[1, C, H, W]`` with mirror padding; ``sigma`` in pixels."""
    if sigma < 0:
        raise ValueError(f"blur_sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return img
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    img = F.pad(img, (r, r, r, r), mode="reflect")
    img = F.conv2d(img, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(img, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
