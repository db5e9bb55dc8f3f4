"""Is the camera's pan direction visible to the proxy VLM's vision tower? Probes by pan magnitude.

    python benchmarks/bench_vlm_motion_probe.py [--tower DIR] [--train-windows 6000] [--test-windows 3000]

Uses the proxy VLM's own data (``ProxyVlmConfig()``: rendered sequences, train/held-out camera paths, the tower's
``hidden_states[-2]`` tokens of every frame). Windows of 0.2 s, 1 s and log-uniform 0.1-2 s; the label is the pan
direction of the view centre over the window (as :func:`window_answers` defines it, diagonal windows dropped, no
magnitude threshold); the magnitude is the larger axis displacement in view heights (x 80 = pixels at the tower's
input, / 0.2 = tower patches). Probes, trained on training paths, scored on held-out paths per magnitude bin:

- ``tower-diff``: logistic regression on the last minus first frame's tower tokens (26 x hidden);
- ``tower-shift``: logistic regression on 25 shift-match scores (mean cosine of the first frame's 5x5 patch-token
  grid shifted by -2..2 patches in x and y against the last frame's): what a decoder attending across frames can
  compare;
- ``pixel-shift``: the same shift-match scores on the frames' 16x16-pixel mean colours (the tower's patch grid
  without the tower): whether the frames themselves show the direction at patch resolution.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modeling_evalign.downstream.proxy_vlm import ProxyVlmConfig
from modeling_evalign.downstream.proxy_vlm_build import _features, load_tower
from modeling_evalign.downstream.proxy_vlm_data import window_frame_indices

BINS_PX = (0, 1, 2, 4, 6, 8, 12, 16, 24, 40)


def shift_scores(a: torch.Tensor, b: torch.Tensor, cosine: bool) -> np.ndarray:
    """Match scores of grid ``a`` [25, C] shifted by (sx, sy) in -2..2 against grid ``b`` [25, C]."""
    ga, gb = a.reshape(5, 5, -1), b.reshape(5, 5, -1)
    if cosine:
        ga, gb = F.normalize(ga, dim=-1), F.normalize(gb, dim=-1)
    out = []
    for sy in range(-2, 3):
        for sx in range(-2, 3):
            pa = ga[max(0, sy):5 + min(0, sy), max(0, sx):5 + min(0, sx)]
            pb = gb[max(0, -sy):5 + min(0, -sy), max(0, -sx):5 + min(0, -sx)]
            out.append(float((pa * pb).sum(-1).mean()) if cosine else -float(((pa - pb) ** 2).mean()))
    return np.array(out)


def windows(seqs, feats, pix, count: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = {"tower-diff": [], "tower-shift": [], "pixel-shift": []}
    labels, mags, durs = [], [], []
    for _ in range(count):
        s = int(rng.integers(len(seqs.labels)))
        dur = float(rng.choice([0.2, 1.0])) if rng.random() < 0.5 else math.exp(rng.uniform(math.log(0.1), math.log(2)))
        t0 = float(rng.uniform(0, seqs.seconds - 1 / seqs.frame_rate_hz - dur))
        cx, cy, vh, _ = seqs.motions[s].pose(np.array([t0, t0 + dur]))
        dx, dy = (float(c[1] - c[0]) / float(vh[0]) for c in (cx, cy))
        big, small = max(abs(dx), abs(dy)), min(abs(dx), abs(dy))
        if small > 0.5 * big:
            continue
        idx = window_frame_indices(t0, t0 + dur, 5, seqs.frame_rate_hz)
        f0, f1 = feats[s, idx[0]], feats[s, idx[-1]]
        rows["tower-diff"].append((f1 - f0).flatten().numpy())
        rows["tower-shift"].append(shift_scores(f0[1:], f1[1:], cosine=True))
        rows["pixel-shift"].append(shift_scores(pix[s, idx[0]], pix[s, idx[-1]], cosine=False))
        labels.append((0 if dx < 0 else 1) if abs(dx) >= abs(dy) else (2 if dy < 0 else 3))
        mags.append(big)
        durs.append(dur)
    return {k: np.array(v) for k, v in rows.items()}, np.array(labels), np.array(mags), np.array(durs)


def patch_colours(frames: torch.Tensor, size: int) -> torch.Tensor:
    """[S, T, 3, H, W] uint8 -> centre-cropped to size x size, 16x16 mean colours [S, T, 25, 3] (5x5 grid)."""
    s, t, _, h, w = frames.shape
    top, left = (h - size) // 2, (w - size) // 2
    x = frames[..., top:top + size, left:left + size].reshape(-1, 3, size, size).float()
    x = F.adaptive_avg_pool2d(x, 5)
    return x.reshape(s, t, 3, 25).transpose(-1, -2)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tower", default=None, help="CLIP vision tower dir (default: ensure_proxy_clip())")
    parser.add_argument("--train-windows", type=int, default=6000)
    parser.add_argument("--test-windows", type=int, default=3000)
    parser.add_argument("--work", default="/tmp/bench_vlm_motion_probe", help="features cache dir")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.tower is None:
        from modeling_evalign.features.proxy_clip import ensure_proxy_clip

        args.tower = ensure_proxy_clip()
    t = time.perf_counter()
    cfg = ProxyVlmConfig()
    vision_config, state = load_tower(Path(args.tower))
    seqs, feats = _features(cfg, vision_config, state, Path(args.work), progress=False)
    pix = {k: patch_colours(s.frames, vision_config.image_size) for k, s in seqs.items()}
    xtr, ytr, _, _ = windows(seqs["train"], feats["train"], pix["train"], args.train_windows, 1)
    xte, yte, mte, dte = windows(seqs["test"], feats["test"], pix["test"], args.test_windows, 2)
    px = mte * vision_config.image_size
    print(f"pan direction probes, held-out paths (n={len(yte)}, chance 25%); magnitude in pixels at the tower's "
          f"{vision_config.image_size}px input (16 px = one patch)")
    print("| probe | overall | " + " | ".join(f"{a}-{b}px" for a, b in zip(BINS_PX[:-1], BINS_PX[1:])) + " |")
    print("|---" * (len(BINS_PX) + 1) + "|")
    for name, c in (("tower-diff", 0.05), ("tower-shift", 10.0), ("pixel-shift", 10.0)):
        scaler = StandardScaler().fit(xtr[name])
        clf = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(xtr[name]), ytr)
        hit = clf.predict(scaler.transform(xte[name])) == yte
        cells = [f"{hit[(px >= a) & (px < b)].mean():.0%}" if ((px >= a) & (px < b)).any() else "-"
                 for a, b in zip(BINS_PX[:-1], BINS_PX[1:])]
        print(f"| {name} | {hit.mean():.0%} | " + " | ".join(cells) + " |")
    print("| n | " + f"{len(yte)} | " + " | ".join(str(int(((px >= a) & (px < b)).sum()))
                                                   for a, b in zip(BINS_PX[:-1], BINS_PX[1:])) + " |")
    for d in (0.2, 1.0):
        m = np.isclose(dte, d)
        q = np.quantile(px[m], [0.1, 0.5, 0.9])
        print(f"{d:g} s windows: pan magnitude p10/p50/p90 = {q[0]:.1f}/{q[1]:.1f}/{q[2]:.1f} px; share >= 12 px: "
              f"{(px[m] >= 12).mean():.0%}")
    print(f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
