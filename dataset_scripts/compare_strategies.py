#!/usr/bin/env python
"""Compare alignment strategies on the same feature directories and durations; one markdown report.

    python dataset_scripts/compare_strategies.py --out ./report \\
        --features 200ms=./features/200ms/train 1s=./features/1s/train 20s=./features/20s/train \\
        --strategies lightweight contrastive triple_modal --epochs 20 \\
        --text-model openai/clip-vit-large-patch14 --group-by sequence

For every strategy and duration: split (``--val-fraction``, whole ``--group-by`` groups), fit on the
train split, evaluate on the val split (MSE, cosine, bidirectional R@1/5/10); then the cross-duration
matrix (train on one duration, evaluate on all) with a heatmap, training curves, and t-SNE (and UMAP
with ``--umap``) of event/target features before and after alignment, coloured by modality and scene.
``reconstruction`` needs raw events (no training): it is listed as skipped here; evaluate it by
extracting features with a reconstruction encoder. ``--tiny-text-tower`` builds a random tiny CLIP
text tower for the scene names (tests/demo only: its text features carry no meaning).
Writes ``<out>/report.md``, ``<out>/results.json`` and the PNGs (each with a ``.png.json`` data file).
Every fit is saved under ``<out>/fits/<strategy>/<duration>/``; rerunning the same command after a kill
reloads finished fits instead of training again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modeling_evalign.utils.cli import ArgumentParser, CLIError, parse_named_paths, run_cli

PROG = "compare_strategies.py"

STRATEGIES = ("lightweight", "contrastive", "triple_modal", "reconstruction")
TABLE_METRICS = ("mean/R@1", "mean/R@5", "e2t/R@1", "t2e/R@1", "mse", "cosine")

REPORT_TEMPLATE = """\
# Alignment strategy comparison

Durations: {{ durations | join(", ") }}. Split: {{ split }}. Metrics on the validation split;
R@k is bidirectional retrieval recall (mean of event->target and target->event){% if positive_key %},
rows with equal `{{ positive_key }}` count as positives{% endif %}.

## In-duration results

| strategy | duration | train | val | {{ metrics | join(" | ") }} | fit s | notes |
|---|---|---|---|{% for _ in metrics %}---|{% endfor %}---|---|
{% for r in rows %}| {{ r.strategy }} | {{ r.duration }} | {{ r.train }} | {{ r.val }} | {% for m in metrics %}{{ "%.3f" | format(r.metrics[m]) }} | {% endfor %}{{ "%.2f" | format(r.seconds) }} | {{ r.notes }} |
{% endfor %}
{% if zero_shot %}## Triple-modal zero-shot classification (val split)

| duration | classes | accuracy | chance |
|---|---|---|---|
{% for z in zero_shot %}| {{ z.duration }} | {{ z.classes }} | {{ "%.3f" | format(z.accuracy) }} | {{ "%.3f" | format(z.chance) }} |
{% endfor %}
{% endif %}{% if skipped %}## Skipped

{% for name, why in skipped.items() %}- **{{ name }}**: {{ why }}
{% endfor %}
{% endif %}{% for s in strategies %}## {{ s.name }}

### Cross-duration generalisation

{{ s.cross_markdown }}
![{{ s.name }} cross-duration]({{ s.heatmap }})

{% if s.curve %}### Training curve ({{ s.curve_duration }})

![{{ s.name }} training curve]({{ s.curve }})

{% endif %}{% for plot in s.feature_plots %}### Feature space, {{ plot.method }} ({{ plot.duration }})

![{{ s.name }} {{ plot.method }}]({{ plot.file }})

{% endfor %}{% endfor %}"""


def _parse_features(items: list[str]) -> dict[str, str]:
    return parse_named_paths(items, "--features")


def _fitter(name: str, args, text_model: str | None):
    from modeling_evalign.evaluation.cross_duration import (
        contrastive_fitter,
        ridge_fitter,
        triple_modal_fitter,
    )

    if name == "lightweight":
        return ridge_fitter(args.ridge)
    if name == "contrastive":
        return contrastive_fitter(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    return triple_modal_fitter(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                               text_model_id=text_model, label_key=args.scene_key)


def _tiny_tower(out: Path, datasets: dict, scene_key: str, target_dim: int) -> str | None:
    from modeling_evalign.triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
    from modeling_evalign.triple_modal.text_tower import save_tiny_text_tower

    names = set()
    for ds in datasets.values():
        try:
            names.update(str(v) for v in ds.metadata_column(scene_key))
        except KeyError:
            return None
    cfg = TripleModalAlignmentConfig()
    texts = [t.format(n) for n in sorted(names) for t in (cfg.event_prompt_template, cfg.image_prompt_template)]
    return str(save_tiny_text_tower(out / "tiny_text_tower", texts, projection_dim=target_dim))


def _fit_or_resume(fitter, train, fit_dir: Path):
    """Fit, or reload the fit a previous (killed) run finished: the model is saved with save_pretrained
    and ``fit.json`` (history, seconds, notes, train size) is written last, so its presence marks a
    complete fit."""
    import json

    from transformers import AutoModel

    import modeling_evalign  # noqa: F401  (registers the strategies with AutoModel)
    from modeling_evalign.evaluation.cross_duration import aligner_from_model
    from modeling_evalign.utils.io_utils import atomic_write_json

    info_file = fit_dir / "fit.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if info.get("train_size") == len(train):
            model = AutoModel.from_pretrained(fit_dir / "model")
            print(f"resumed fit from {fit_dir}", file=sys.stderr)
            return aligner_from_model(model, history=info["history"], seconds=info["seconds"], notes=info["notes"])
    fitted = fitter(train)
    fitted.model.save_pretrained(fit_dir / "model")
    atomic_write_json(info_file, {"history": fitted.history, "seconds": fitted.seconds, "notes": fitted.notes,
                                  "train_size": len(train)})
    return fitted


def main(argv: list[str] | None = None) -> dict:
    ap = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", nargs="+", required=True, help="DURATION=DIR feature directories")
    ap.add_argument("--out", required=True, help="report folder")
    ap.add_argument("--strategies", nargs="+", default=["lightweight", "contrastive", "triple_modal"],
                    choices=STRATEGIES)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ridge", type=float, default=1e-3, help="ridge of the lightweight closed-form fit")
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--group-by", default=None, help="per-sample metadata key kept on one side of the split")
    ap.add_argument("--positive-key", default=None, help="metadata key whose equal values are retrieval positives")
    ap.add_argument("--scene-key", default="scene", help="metadata key with class/scene labels")
    ap.add_argument("--text-model", default=None, help="CLIP repo id/path for triple-modal text features")
    ap.add_argument("--tiny-text-tower", action="store_true", help="random tiny text tower (tests/demo only)")
    ap.add_argument("--metric", default="mean/R@1", help="metric of the cross-duration matrices")
    ap.add_argument("--max-plot-points", type=int, default=300, help="rows per modality in feature-space plots")
    ap.add_argument("--umap", action="store_true", help="also draw UMAP (needs umap-learn)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from jinja2 import Template

    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.evaluation.cross_duration import (
        cross_duration_matrix,
        evaluate_alignment,
        write_cross_duration_report,
    )
    from modeling_evalign.evaluation.plots import before_after_panels, plot_feature_space, plot_training_curve
    from modeling_evalign.utils.io_utils import atomic_write_json, atomic_write_text
    from modeling_evalign.utils.progress import progress_bar

    feature_dirs = _parse_features(args.features)
    if len(feature_dirs) < 2:  # the cross-duration matrix needs two: say so before any fit
        raise CLIError(f"--features: give at least two durations (DURATION=DIR ...) for the cross-duration "
                       f"matrix, got {list(feature_dirs)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = {d: AlignmentDataset.from_directory(p) for d, p in feature_dirs.items()}
    splits = {d: ds.split(args.val_fraction, seed=args.seed, group_by=args.group_by) for d, ds in datasets.items()}
    first = next(iter(datasets))
    text_model = args.text_model
    if "triple_modal" in args.strategies and text_model is None and args.tiny_text_tower:
        text_model = _tiny_tower(out, datasets, args.scene_key, datasets[first].target_dim)

    skipped = {}
    if "reconstruction" in args.strategies:
        skipped["reconstruction"] = ("works on raw events (E2VID/FireNet frames -> frozen CLIP, no training); "
                                     "it cannot be fitted on pre-extracted features")
    rows, zero_shot, sections = [], [], []
    results: dict = {"durations": list(feature_dirs), "strategies": {}, "skipped": skipped}
    for name in progress_bar([s for s in args.strategies if s != "reconstruction"], desc="strategies", unit="strategy"):
        fitter = _fitter(name, args, text_model)
        section = {"name": name, "feature_plots": [], "curve": None}
        per_duration = {}
        fits = {}
        for duration, (train, val) in splits.items():
            fitted = fits[duration] = _fit_or_resume(fitter, train, out / "fits" / name / duration)
            with torch.no_grad():
                aligned = fitted(val.event_features)
            groups = val.metadata_column(args.positive_key) if args.positive_key else None
            metrics = evaluate_alignment(aligned, val.target_features, positive_groups=groups)
            rows.append({"strategy": name, "duration": duration, "train": len(train), "val": len(val),
                         "metrics": metrics, "seconds": fitted.seconds, "notes": fitted.notes})
            per_duration[duration] = {"metrics": metrics, "seconds": fitted.seconds, "notes": fitted.notes,
                                      "history": fitted.history}
            model = fitted.model
            if name == "triple_modal" and model is not None and model.config.class_names:
                try:
                    truth = [str(v) for v in val.metadata_column(args.scene_key)]
                except KeyError:
                    truth = None
                if truth:
                    classes = list(model.config.class_names)
                    keep = [i for i, t in enumerate(truth) if t in classes]
                    if keep:
                        ev = val.event_features[keep]
                        ev = ev.mean(1) if ev.dim() == 3 else ev
                        pred = model.zero_shot_classify(ev, classes).labels.tolist()
                        acc = sum(classes[p] == truth[i] for p, i in zip(pred, keep)) / len(keep)
                        zero_shot.append({"duration": duration, "classes": len(classes), "accuracy": acc,
                                          "chance": 1 / len(classes)})
                        per_duration[duration]["zero_shot_accuracy"] = acc
            if duration == first:
                if fitted.history:
                    curve = plot_training_curve(fitted.history, out / f"{name}_training_curve.png")
                    section["curve"], section["curve_duration"] = curve.name, duration
                n = min(len(val), args.max_plot_points)
                ev, tg = val.event_features[:n], val.target_features[:n]
                ev, tg, al = (t.mean(1) if t.dim() == 3 else t for t in (ev, tg, aligned[:n]))
                try:
                    scenes = [str(v) for v in val.metadata_column(args.scene_key)][:n]
                except KeyError:
                    scenes = None
                for method in ("tsne", "umap") if args.umap else ("tsne",):
                    try:
                        plot = plot_feature_space(before_after_panels(ev, tg, al), out / f"{name}_{method}.png",
                                                  scenes=scenes, method=method, seed=args.seed)
                    except ImportError as e:
                        print(f"skipping {method} plot: {e}", file=sys.stderr)
                        continue
                    section["feature_plots"].append({"method": method, "file": plot.name, "duration": duration})
        cross = cross_duration_matrix(feature_dirs, fitter=fitter, fitted=fits, metric=args.metric,
                                      val_fraction=args.val_fraction, group_by=args.group_by,
                                      positive_key=args.positive_key, seed=args.seed)
        paths = write_cross_duration_report(cross, out / name)
        section["cross_markdown"] = cross.to_markdown()
        section["heatmap"] = f"{name}/{paths['heatmap'].name}"
        sections.append(section)
        results["strategies"][name] = {"per_duration": per_duration, "cross_duration": cross.to_dict()}

    split = f"val_fraction={args.val_fraction}, seed={args.seed}" + (
        f", whole `{args.group_by}` groups" if args.group_by else ", random rows")
    report = Template(REPORT_TEMPLATE).render(
        durations=list(feature_dirs), split=split, positive_key=args.positive_key, metrics=TABLE_METRICS,
        rows=rows, zero_shot=zero_shot, skipped=skipped, strategies=sections,
    )
    atomic_write_text(out / "report.md", report)
    atomic_write_json(out / "results.json", results)
    print(f"wrote {out / 'report.md'}")
    return results


if __name__ == "__main__":
    raise SystemExit(run_cli(lambda argv: (main(argv), 0)[1], prog=PROG))
