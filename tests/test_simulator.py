"""ESIM-style simulator: exact crossing semantics against a per-pixel float64 reference, static and
step scenes, noise, refractory period, adaptive sub-frames, and the photo scene renderer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modeling_evalign.events.scenes import CameraMotion, PhotoScene, load_photo
from modeling_evalign.events.simulator import Events, EventSimulator, simulate_adaptive

C = 0.2
EPS = 1e-3


def intensity(log_level):
    """Intensity 0..255 whose simulator log is ``log_level``."""
    return (np.exp(log_level) - EPS) * 255.0


def ref_simulate(frames, ts, c=C, eps=EPS):
    """Slow reference: per pixel, per frame pair, walk the crossings one at a time in float64."""
    _, h, w = frames.shape
    logs = np.log(frames.astype(np.float64) / 255.0 + eps)
    out = []
    for yy in range(h):
        for xx in range(w):
            ref = logs[0, yy, xx]
            for k in range(1, len(ts)):
                a, b = logs[k - 1, yy, xx], logs[k, yy, xx]
                while b - ref >= c or ref - b >= c:
                    level = ref + c if b > ref else ref - c
                    frac = min(max((level - a) / (b - a), 0.0), 1.0)
                    t = int(ts[k - 1]) + math.floor(frac * (int(ts[k]) - int(ts[k - 1])))
                    out.append((t, xx, yy, 1 if b > ref else 0))
                    ref = level
    return sorted(out)


def as_sorted_tuples(ev: Events):
    return sorted(zip(ev.t.tolist(), ev.x.tolist(), ev.y.tolist(), ev.p.tolist()))


def test_matches_per_pixel_reference_on_random_clip():
    rng = np.random.default_rng(0)
    frames = rng.uniform(5, 250, size=(6, 4, 5))
    ts = np.array([0, 1000, 1500, 4000, 4001, 9000])
    ev = EventSimulator(4, 5, contrast_threshold=C, eps=EPS).simulate(frames, ts)
    ref = ref_simulate(frames, ts)
    assert len(ref) > 50
    assert as_sorted_tuples(ev) == ref
    assert np.all(np.diff(ev.t) >= 0)
    assert ev.x.dtype == np.uint16 and ev.t.dtype == np.int64 and ev.p.dtype == np.uint8


def test_static_scene_gives_no_events():
    frame = np.random.default_rng(1).uniform(0, 255, size=(8, 9))
    ev = EventSimulator(8, 9).simulate(np.stack([frame] * 5), np.arange(5) * 10_000)
    assert len(ev) == 0


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("direction", [1, -1])
def test_log_step_of_k_thresholds_gives_k_events(k, direction):
    base = np.full((3, 4), math.log(0.3 + EPS))
    after = base.copy()
    after[1, 2] += direction * (k + 0.5) * C  # k crossings, not k + 1
    frames = intensity(np.stack([base, after]))
    ev = EventSimulator(3, 4, contrast_threshold=C, eps=EPS).simulate(frames, np.array([1000, 2000]))
    assert len(ev) == k
    assert set(ev.x.tolist()) == {2} and set(ev.y.tolist()) == {1}
    assert set(ev.p.tolist()) == {1 if direction > 0 else 0}
    # crossing j happens at the linearly interpolated fraction j / (k + 0.5) of the interval
    expected = [1000 + math.floor(j / (k + 0.5) * 1000) for j in range(1, k + 1)]
    assert np.abs(ev.t - np.array(expected)).max() <= 1
    assert np.all((ev.t >= 1000) & (ev.t <= 2000)) and np.all(np.diff(ev.t) >= 0)


def test_refractory_period_drops_close_events():
    base = np.full((1, 2), math.log(0.3 + EPS))
    after = base + 3.5 * C  # 3 crossings per pixel within 1000 µs
    frames = intensity(np.stack([base, after]))
    ev = EventSimulator(1, 2, eps=EPS, refractory_us=400).simulate(frames, np.array([0, 1000]))
    # crossings at ~286, 571, 857 µs: the second is 285 µs after the first -> dropped; third kept
    assert len(ev) == 4
    for x in (0, 1):
        times = ev.t[ev.x == x]
        assert np.all(np.diff(times) >= 400)


def test_background_noise_rate_and_determinism():
    frames = np.full((2, 20, 30), 100.0)
    kwargs = dict(background_rate_hz=50.0, hot_pixel_fraction=0.01, hot_pixel_rate_hz=100.0, seed=7)
    ev = EventSimulator(20, 30, **kwargs).simulate(frames, np.array([0, 200_000]))
    expected = 50.0 * 600 * 0.2 + 100.0 * 6 * 0.2  # background + 6 hot pixels
    assert abs(len(ev) - expected) < 5 * math.sqrt(expected)
    assert np.all((ev.t >= 0) & (ev.t <= 200_000)) and np.all(np.diff(ev.t) >= 0)
    assert ev.x.max() < 30 and ev.y.max() < 20
    again = EventSimulator(20, 30, **kwargs).simulate(frames, np.array([0, 200_000]))
    assert as_sorted_tuples(ev) == as_sorted_tuples(again)


def test_threshold_spread_is_per_pixel_and_seeded():
    a = EventSimulator(5, 6, threshold_sigma=0.1, seed=3)
    b = EventSimulator(5, 6, threshold_sigma=0.1, seed=3)
    assert np.array_equal(a.c_pos, b.c_pos) and a.c_pos.std() > 0
    assert not np.array_equal(a.c_pos, a.c_neg)


def test_bad_input():
    sim = EventSimulator(4, 5)
    with pytest.raises(RuntimeError, match="reset"):
        sim.step(np.zeros((4, 5)), 10)
    with pytest.raises(ValueError, match=r"frame must have shape \(height, width\) = \(4, 5\)"):
        sim.reset(np.zeros((5, 4)), 0)
    sim.reset(np.zeros((4, 5)), 100)
    with pytest.raises(ValueError, match="must not decrease"):
        sim.step(np.zeros((4, 5)), 50)
    with pytest.raises(ValueError, match="contrast_threshold must be > 0"):
        EventSimulator(4, 5, contrast_threshold=0)
    with pytest.raises(ValueError, match="timestamps_us must have shape"):
        sim.simulate(np.zeros((3, 4, 5)), np.arange(2))


def small_scene():
    photo = load_photo("astronaut")[::4, ::4]
    motion = CameraMotion(pan_amplitude=(0.1, 0.05), pan_frequency_hz=(1.0, 0.7), rotation_amplitude_rad=0.1)
    return PhotoScene(photo, motion, blur_sigma=0.5)


def test_adaptive_subframes_bound_the_log_change_and_chain():
    scene = small_scene()
    h, w = 24, 32
    sim = EventSimulator(h, w, contrast_threshold=C)
    times = []

    def render(t):
        times.append(t)
        return scene.render(t, h, w)

    chunks = list(simulate_adaptive(render, sim, 0, 50_000, min_dt_us=20))
    probes = len(times)
    chunks += list(simulate_adaptive(render, sim, 50_000, 100_000, min_dt_us=20))
    assert len(times) > probes and 0 not in times[probes:]  # the second call continued, no reset at 0
    ev = Events.concatenate(chunks)
    assert len(ev) > 0 and np.all(np.diff(ev.t) >= 0) and ev.t.min() >= 0 and ev.t.max() <= 100_000
    assert sim.time_us == 100_000
    # the same scene sampled on a fixed fine grid gives a similar number of events
    grid = np.arange(0, 100_001, 100)
    fine = EventSimulator(h, w, contrast_threshold=C).simulate(scene.render(grid, h, w), grid)
    assert 0.8 < len(ev) / len(fine) < 1.25


def test_adaptive_step_bound_exact():
    scene = small_scene()
    h, w = 24, 32
    sim = EventSimulator(h, w, contrast_threshold=C)
    steps = []
    orig = sim.step_log

    def spy(log_frame, t):
        steps.append((sim.time_us, t, float(np.abs(log_frame - sim.last_log_intensity).max())))
        return orig(log_frame, t)

    sim.step_log = spy
    list(simulate_adaptive(lambda t: scene.render(t, h, w), sim, 0, 80_000, min_dt_us=10, max_dt_us=5000))
    assert steps[0][0] == 0 and steps[-1][1] == 80_000
    assert all(a[1] == b[0] for a, b in zip(steps, steps[1:]))  # contiguous
    assert all(change <= C or t1 - t0 <= 10 for t0, t1, change in steps)
    assert all(t1 - t0 <= 5000 for t0, t1, _ in steps)


def test_scene_renders_the_same_view_at_two_resolutions():
    scene = small_scene()
    small = scene.render(30_000, 24, 32)
    big = scene.render(30_000, 72, 96)
    pooled = big.reshape(24, 3, 32, 3).mean(axis=(1, 3))
    r = np.corrcoef(small.ravel(), pooled.ravel())[0, 1]
    assert r > 0.95
    other = scene.render(400_000, 24, 32)
    assert np.corrcoef(small.ravel(), other.ravel())[0, 1] < r  # the camera moved
    assert np.array_equal(scene.render(30_000, 24, 32), small)
    rgb = scene.render(np.array([0, 1000]), 24, 32, rgb=True)
    assert rgb.shape == (2, 24, 32, 3) and rgb.dtype == np.float32 and rgb.min() >= 0 and rgb.max() <= 255
    with pytest.raises(KeyError, match="unknown photograph"):
        load_photo("nope")
