"""ESIM-style event simulator: log-intensity frames in, events (x, y, t µs, p) out.

Model: ``L = log(I / 255 + eps)`` per pixel; each pixel keeps a reference level ``ref``. Between two
frames the log intensity is interpolated linearly in time; every crossing of ``ref + k * C`` (up, p=1)
or ``ref - k * C`` (down, p=0) emits one event at the interpolated crossing time and moves ``ref`` by
``C``. So a static scene gives no events and a log step of ``k * C`` gives ``k`` events of one polarity.
Optional non-idealities: per-pixel threshold spread (``threshold_sigma``, relative, drawn once per
pixel and polarity), a refractory period (an event closer than ``refractory_us`` to the pixel's
previous event is dropped; ``ref`` still advances), hot pixels and background activity (Poisson noise
events that do not touch ``ref``). Deterministic for a given ``seed``.

Re-implemented from the ESIM paper's description (Rebecq et al. 2018); no ESIM code is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .validation import check_sensor_size

__all__ = ["EventSimulator", "Events", "simulate_adaptive"]


@dataclass
class Events:
    """An event stream sorted by time: ``x, y`` uint16 ``[N]`` pixel coordinates, ``t`` int64 ``[N]`` µs,
    ``p`` uint8 ``[N]`` polarity (1 = brighter, 0 = darker)."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @classmethod
    def empty(cls) -> Events:
        return cls(
            np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0, np.int64), np.zeros(0, np.uint8)
        )

    @classmethod
    def concatenate(cls, parts: list[Events]) -> Events:
        """Join streams that follow each other in time (the result stays sorted)."""
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(e, f) for e in parts]) for f in ("x", "y", "t", "p")))


class EventSimulator:
    """Stateful per-pixel event generator for a ``height x width`` sensor.

    Args:
        contrast_threshold: C, in log-intensity units (0.2 is typical of DVS/DAVIS sensors).
        threshold_sigma: relative std of the per-pixel threshold (C * (1 + sigma * N(0, 1)), >= 0.01).
        refractory_us: minimum time between two events of one pixel; later ones are dropped.
        hot_pixel_fraction / hot_pixel_rate_hz: share of pixels that fire at this Poisson rate regardless
            of the scene.
        background_rate_hz: Poisson rate of noise events per pixel (background activity).
        eps: offset inside the log, in units of full scale (intensity 0..255 is divided by 255).

    Use :meth:`simulate` for a whole clip, or :meth:`reset` + :meth:`step` to stream frames.
    """

    def __init__(
        self,
        height: int,
        width: int,
        contrast_threshold: float = 0.2,
        threshold_sigma: float = 0.0,
        refractory_us: int = 0,
        hot_pixel_fraction: float = 0.0,
        hot_pixel_rate_hz: float = 50.0,
        background_rate_hz: float = 0.0,
        eps: float = 1e-3,
        seed: int = 0,
    ):
        self.height, self.width = check_sensor_size(height, width)
        for name, value in (
            ("contrast_threshold", contrast_threshold),
            ("eps", eps),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in (
            ("threshold_sigma", threshold_sigma),
            ("refractory_us", refractory_us),
            ("hot_pixel_rate_hz", hot_pixel_rate_hz),
            ("background_rate_hz", background_rate_hz),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 <= hot_pixel_fraction <= 1:
            raise ValueError(f"hot_pixel_fraction must be in [0, 1], got {hot_pixel_fraction}")
        self.contrast_threshold = float(contrast_threshold)
        self.threshold_sigma = float(threshold_sigma)
        self.refractory_us = int(refractory_us)
        self.hot_pixel_rate_hz = float(hot_pixel_rate_hz)
        self.background_rate_hz = float(background_rate_hz)
        self.eps = float(eps)
        self.rng = np.random.default_rng(seed)
        npix = self.height * self.width
        c = np.full((2, npix), self.contrast_threshold)
        if self.threshold_sigma > 0:
            c *= 1 + self.threshold_sigma * self.rng.standard_normal((2, npix))
        self.c_neg, self.c_pos = np.maximum(c, 0.01 * self.contrast_threshold)
        n_hot = int(round(hot_pixel_fraction * npix))
        self.hot_pixels = np.sort(self.rng.choice(npix, n_hot, replace=False)) if n_hot else np.zeros(0, int)
        self._ref: np.ndarray | None = None
        self._log: np.ndarray | None = None
        self._t: int | None = None
        self.adaptive_dt_us: int | None = None  # last step chosen by simulate_adaptive
        self._last_t = np.full(npix, np.iinfo(np.int64).min // 2, dtype=np.int64)

    # -- state -----------------------------------------------------------------------------------
    def log_intensity(self, frame: np.ndarray) -> np.ndarray:
        """``log(frame / 255 + eps)`` as float64 ``[H * W]``; ``frame`` is ``[H, W]`` intensity in 0..255."""
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width):
            raise ValueError(
                f"frame must have shape (height, width) = ({self.height}, {self.width}), got {frame.shape}"
            )
        return np.log(frame.reshape(-1).astype(np.float64) / 255.0 + self.eps)

    @property
    def time_us(self) -> int | None:
        """Time of the last frame seen (None before :meth:`reset`)."""
        return self._t

    @property
    def last_log_intensity(self) -> np.ndarray | None:
        return self._log

    def reset(self, frame: np.ndarray, t_us: int) -> None:
        """Start a new stream: the reference level of every pixel becomes the log intensity of ``frame``."""
        self.reset_log(self.log_intensity(frame), t_us)

    def reset_log(self, log_frame: np.ndarray, t_us: int) -> None:
        self._log = np.array(log_frame, dtype=np.float64).reshape(-1)
        self._ref = self._log.copy()
        self._t = int(t_us)
        self._last_t[:] = np.iinfo(np.int64).min // 2

    def step(self, frame: np.ndarray, t_us: int) -> Events:
        """Events between the previous frame and ``frame`` at ``t_us`` (sorted; times in [t_prev, t_us])."""
        return self.step_log(self.log_intensity(frame), t_us)

    def step_log(self, log_frame: np.ndarray, t_us: int) -> Events:
        """As :meth:`step`, with the log intensity already computed (``[H * W]`` float64)."""
        if self._ref is None:
            raise RuntimeError("call reset(first_frame, t_us) before step()")
        t_us = int(t_us)
        t_prev = self._t
        if t_us < t_prev:
            raise ValueError(f"t_us must not decrease: got {t_us} after {t_prev}")
        new = np.asarray(log_frame, dtype=np.float64).reshape(-1)
        old, ref = self._log, self._ref
        diff = new - ref
        n_up = np.floor(diff / self.c_pos)
        n_dn = np.floor(-diff / self.c_neg)
        active = np.flatnonzero((n_up >= 1) | (n_dn >= 1))
        parts = []
        if active.size:
            up = n_up[active] >= 1
            count = np.where(up, n_up[active], n_dn[active]).astype(np.int64)
            step = np.where(up, self.c_pos[active], -self.c_neg[active])
            a_old, a_ref = old[active], ref[active]
            slope = new[active] - a_old
            slope[slope == 0] = 1.0  # only possible when ref drifted, then frac is clipped below
            dt = t_us - t_prev
            for k in range(1, int(count.max()) + 1):
                sel = np.flatnonzero(count >= k)
                frac = np.clip((a_ref[sel] + k * step[sel] - a_old[sel]) / slope[sel], 0.0, 1.0)
                tk = t_prev + np.floor(frac * dt).astype(np.int64)
                pix = active[sel]
                if self.refractory_us > 0:
                    keep = tk - self._last_t[pix] >= self.refractory_us
                    pix, tk, sel = pix[keep], tk[keep], sel[keep]
                    self._last_t[pix] = tk
                parts.append((pix, tk, up[sel].astype(np.uint8)))
            ref[active] += count * step
        parts.extend(self._noise(t_prev, t_us))
        self._log = new
        self._t = t_us
        return self._assemble(parts)

    # -- helpers ---------------------------------------------------------------------------------
    def _noise(self, t0: int, t1: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        dt_s = (t1 - t0) * 1e-6
        if dt_s <= 0:
            return out
        npix = self.height * self.width
        if self.background_rate_hz > 0:
            n = self.rng.poisson(self.background_rate_hz * npix * dt_s)
            if n:
                out.append(
                    (
                        self.rng.integers(0, npix, n),
                        self.rng.integers(t0, t1 + 1, n),
                        self.rng.integers(0, 2, n),
                    )
                )
        if self.hot_pixels.size and self.hot_pixel_rate_hz > 0:
            counts = self.rng.poisson(self.hot_pixel_rate_hz * dt_s, self.hot_pixels.size)
            n = int(counts.sum())
            if n:
                pix = np.repeat(self.hot_pixels, counts)
                out.append((pix, self.rng.integers(t0, t1 + 1, n), self.rng.integers(0, 2, n)))
        return out

    def _assemble(self, parts) -> Events:
        if not parts:
            return Events.empty()
        pix = np.concatenate([q[0] for q in parts])
        t = np.concatenate([q[1] for q in parts]).astype(np.int64)
        p = np.concatenate([q[2] for q in parts]).astype(np.uint8)
        order = np.argsort(t, kind="stable")
        pix = pix[order]
        return Events(
            (pix % self.width).astype(np.uint16), (pix // self.width).astype(np.uint16), t[order], p[order]
        )

    def simulate(self, frames: np.ndarray, timestamps_us: np.ndarray) -> Events:
        """Events of a clip: ``frames`` float ``[T, H, W]`` intensity 0..255, ``timestamps_us`` ``[T]``
        increasing integers. The first frame sets the reference levels (it emits nothing)."""
        frames = np.asarray(frames)
        ts = np.asarray(timestamps_us)
        if frames.ndim != 3 or frames.shape[1:] != (self.height, self.width):
            raise ValueError(f"frames must be [T, {self.height}, {self.width}], got shape {frames.shape}")
        if ts.shape != (frames.shape[0],):
            raise ValueError(f"timestamps_us must have shape ({frames.shape[0]},), got {ts.shape}")
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            raise ValueError("timestamps_us must be non-decreasing")
        if not len(frames):
            return Events.empty()
        self.reset(frames[0], int(ts[0]))
        return Events.concatenate([self.step(f, int(t)) for f, t in zip(frames[1:], ts[1:])])


def simulate_adaptive(
    render: Callable[[float], np.ndarray],
    simulator: EventSimulator,
    t_start_us: int,
    t_end_us: int,
    max_log_step: float | None = None,
    min_dt_us: int = 100,
    max_dt_us: int = 10_000,
) -> Iterator[Events]:
    """Simulate a continuously rendered scene from ``t_start_us`` to ``t_end_us``, choosing sub-frame
    times adaptively (ESIM's idea) so that no pixel's log intensity moves by more than
    ``max_log_step`` (default: the contrast threshold) between two sub-frames; steps never go below
    ``min_dt_us`` nor above ``max_dt_us``. ``render(t_us)`` returns a ``[H, W]`` intensity frame.

    Continues from the simulator's current state when its time equals ``t_start_us`` (so consecutive
    calls chain); otherwise resets it with ``render(t_start_us)``. Yields one sorted :class:`Events`
    chunk per accepted sub-frame.
    """
    limit = simulator.contrast_threshold if max_log_step is None else float(max_log_step)
    if not limit > 0 or min_dt_us < 1 or max_dt_us < min_dt_us:
        raise ValueError(
            f"need max_log_step > 0 and 1 <= min_dt_us <= max_dt_us, got {limit}, {min_dt_us}, {max_dt_us}"
        )
    t = int(t_start_us)
    if simulator.time_us != t or simulator.last_log_intensity is None:
        simulator.reset(render(t), t)
    cur = simulator.last_log_intensity
    dt = min(max_dt_us, max(min_dt_us, simulator.adaptive_dt_us or min_dt_us))
    while t < t_end_us:
        while True:
            step = min(dt, t_end_us - t)
            cand = simulator.log_intensity(render(t + step))
            change = float(np.max(np.abs(cand - cur)))
            # next step from the observed rate of change (ESIM: dt ~ C / max |dL/dt|)
            scale = 2.0 if change == 0 else min(2.0, max(0.25, 0.8 * limit / change))
            dt = min(max_dt_us, max(min_dt_us, int(step * scale)))
            if change <= limit or step <= min_dt_us:
                break
        t += step
        yield simulator.step_log(cand, t)
        cur = cand
    simulator.adaptive_dt_us = dt
