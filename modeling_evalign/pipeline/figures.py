"""Pictures of the main job: a summary figure at the top of its output and one sample panel per duration.

* ``summary.png``: mean R@1 (%) of every row of ``results.json``, one panel per duration, against chance
  (1 / test windows) and ``unaligned``; when the downstream evaluation ran (``results["downstream"]``), a
  panel of its accuracies per duration and condition;
* ``samples_<duration>.png``: one held-out window: its 5 EventGPT event frames, the RGB target frame and the
  FireNet reconstruction of the same events.

Every PNG has its data beside it (``<name>.png.json``; the sample arrays in ``samples_<duration>.npz``): the
summary's numbers are read back from the drawn bars, so the data file is what the figure shows.
``results.md`` gets a section linking them above the table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.io_utils import atomic_write_bytes, atomic_write_text
from .features import log

SUMMARY_NAME = "summary.png"
FIGURES_HEADING = "## Figures"
_REFERENCE_ROWS = ("unaligned",)


def _bar_heights(ax) -> list[float]:
    return [float(p.get_height()) for p in ax.patches]


def plot_summary(results: Mapping[str, Any], path: str | Path) -> Path:
    """Mean R@1 per strategy and duration (percent) against chance and unaligned, plus downstream accuracies."""
    from ..evaluation.plots import _pyplot, _save

    rows = list(results.get("rows") or [])
    if not rows:
        raise ValueError("results has no rows: nothing to plot in the summary figure")
    durations = list(dict.fromkeys(r["duration"] for r in rows))
    downstream = list(results.get("downstream") or [])
    plt = _pyplot()
    n_panels = len(durations) + (1 if downstream else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.2), squeeze=False)
    data: dict[str, Any] = {"metric": "mean/R@1", "unit": "percent", "panels": []}
    for ax, duration in zip(axes[0], durations):
        mine = [r for r in rows if r["duration"] == duration]
        names = [r["strategy"] for r in mine]
        values = [100 * float(r["metrics"]["mean/R@1"]) for r in mine]
        colors = ["0.6" if n in _REFERENCE_ROWS else f"C{(0, 1, 2, 3, 4, 5, 6, 8, 9)[i % 9]}"  # C7 is grey
                  for i, n in enumerate(names)]
        ax.bar(range(len(names)), values, color=colors)
        n_test = int(mine[0]["metrics"]["n_test"])
        chance = 100.0 / n_test
        ax.axhline(chance, ls=":", color="black", lw=1.2, label=f"chance {chance:.2g}%")
        unaligned = next((v for n, v in zip(names, values) if n == "unaligned"), None)
        if unaligned is not None:
            ax.axhline(unaligned, ls="--", color="0.4", lw=1, label=f"unaligned {unaligned:.1f}%")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("test mean R@1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{duration}: {n_test} test windows")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        data["panels"].append({"duration": duration, "strategies": names, "values": _bar_heights(ax),
                               "chance": chance, "unaligned": unaligned, "n_test": n_test})
    if downstream:
        ax = axes[0][-1]
        conditions = list(dict.fromkeys(r["condition"] for r in downstream))
        d_durations = list(dict.fromkeys(r["duration"] for r in downstream))
        width = 0.8 / max(1, len(conditions))
        drawn = []
        for i, condition in enumerate(conditions):
            for j, duration in enumerate(d_durations):
                row = next((r for r in downstream if r["condition"] == condition and r["duration"] == duration), None)
                if row is None:
                    continue
                ax.bar(j + (i - (len(conditions) - 1) / 2) * width, 100 * float(row["accuracy"]), width,
                       color=f"C{i % 10}", label=condition if j == 0 else None)
                drawn.append({"duration": duration, "condition": condition, "n": row.get("n")})
        for entry, height in zip(drawn, _bar_heights(ax)):
            entry["accuracy"] = height
        ax.set_xticks(range(len(d_durations)), d_durations)
        ax.set_ylabel("downstream accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title("downstream answers")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        data["downstream"] = drawn
    fig.suptitle("evalign main job: held-out retrieval (strict, mean of both directions)")
    fig.tight_layout()
    return _save(fig, path, data)


def _sample_arrays(cfg, out: Path, duration: str, tower: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Event frames, RGB target and FireNet frame of the first held-out window of ``duration``."""
    from PIL import Image

    from ..data.alignment_dataset import AlignmentDataset
    from ..data.windows import nearest_frame_index
    from ..events.dsec_format import IMAGE_NAME, IMAGES_DIR, TIMESTAMPS_FILE
    from ..events.dsec_reader import DsecEventReader
    from ..events.representations import eventgpt_frames

    test = AlignmentDataset.from_directory(out / "features" / duration / "test")
    row = test.samples_list()[0]
    seq = out / "dsec" / row["sequence"]
    window = DsecEventReader(seq).read_window(row["window_start_us"], row["window_end_us"])
    width, height = cfg.sensor_size
    arrays = {"event_frames": eventgpt_frames(window.x, window.y, window.t, window.p, height, width)}
    stamps = np.loadtxt(seq / TIMESTAMPS_FILE, dtype=np.int64, ndmin=1)
    k = int(nearest_frame_index(stamps, [row["window_end_us"]])[0])
    arrays["rgb"] = np.asarray(Image.open(seq / IMAGES_DIR / IMAGE_NAME.format(k)).convert("RGB"))
    meta = {"duration": duration, "sequence": row["sequence"], "window_start_us": int(row["window_start_us"]),
            "window_end_us": int(row["window_end_us"]), "rgb_index": k, "num_events": int(len(window.x))}
    if cfg.firenet and Path(cfg.firenet).is_file():
        from ..reconstruction.modeling_reconstruction import ReconstructionAlignmentModel
        from .features import load_vision_tower

        model = ReconstructionAlignmentModel.from_reconstruction_checkpoint(
            cfg.firenet, clip_model_id=cfg.clip, max_steps_per_window=cfg.reconstruction_max_steps,
            clip_config=None if cfg.clip else json.loads(load_vision_tower(tower).config.to_json_string()))
        model.set_clip_tower(load_vision_tower(tower, with_projection=False))
        model.reset()  # the first test window of its sequence: the recurrent state starts fresh
        image = model.encode_window(window.x, window.y, window.t, window.p, height, width).images
        arrays["reconstruction"] = image[0, 0].float().numpy()
    return arrays, meta


def plot_samples(cfg, out: Path, duration: str, tower: str) -> Path:
    """``samples_<duration>.png`` (+ ``.png.json`` and the drawn arrays in ``samples_<duration>.npz``)."""
    import io

    from ..evaluation.plots import _pyplot, _save

    arrays, meta = _sample_arrays(cfg, out, duration, tower)
    frames = arrays["event_frames"]
    panels = [(f"event frame {i + 1}", frames[i], None) for i in range(len(frames))]
    panels.append(("RGB target", arrays["rgb"], None))
    if "reconstruction" in arrays:
        panels.append(("FireNet reconstruction", arrays["reconstruction"], "gray"))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.4), squeeze=False)
    for ax, (title, image, cmap) in zip(axes[0], panels):
        ax.imshow(image, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{duration} window {meta['sequence']} [{meta['window_start_us']}, {meta['window_end_us']}) µs: "
                 f"{meta['num_events']} events", fontsize=9)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    arrays_file = f"samples_{duration}.npz"
    atomic_write_bytes(out / arrays_file, buf.getvalue())
    meta.update(panels=[p[0] for p in panels], arrays=arrays_file,
                shapes={k: list(v.shape) for k, v in arrays.items()})
    return _save(fig, out / f"samples_{duration}.png", meta)


def _figures_section(names: list[str]) -> str:
    lines = [FIGURES_HEADING, ""]
    for name in names:
        lines.append(f"![{name}]({name})")
        lines.append(f"Data: [`{name}.json`]({name}.json)")
        lines.append("")
    return "\n".join(lines)


def write_figures(cfg, out: str | Path, tower: str) -> list[Path]:
    """Draw the summary and sample figures of a finished main job and link them from ``results.md``
    (above the table). A figure that cannot be drawn (matplotlib missing) is skipped with a log line."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    written: list[Path] = []
    try:
        written.append(plot_summary(results, out / SUMMARY_NAME))
        for duration in dict.fromkeys(r["duration"] for r in results["rows"]):
            written.append(plot_samples(cfg, out, duration, tower))
    except ImportError as exc:
        log(f"    figures skipped: {exc}")
    if written:
        table = (out / "results.md").read_text()
        if FIGURES_HEADING in table:  # a rerun: replace the previous section
            table = table.split("\n## Table\n", 1)[-1]
        section = _figures_section([p.name for p in written])
        atomic_write_text(out / "results.md", f"{section}\n## Table\n\n{table.lstrip()}")
        log(f"    figures: {', '.join(p.name for p in written)} (linked from results.md)")
    return written


__all__ = ["SUMMARY_NAME", "plot_samples", "plot_summary", "write_figures"]
