"""One-off study (not a speed benchmark): other training recipes on the main job's downstream features.

    python benchmarks/downstream_recipes.py [--output-dir outputs/demo] [--duration 1s]

Reads a finished ``make demo`` output (the video-layout features of ``--duration`` and the proxy VLM it used),
retrains contrastive with a tower-space MSE term (weights 1, 10, 100) and lightweight for 40 epochs (linear from
the ridge fit; a 512-wide MLP without warm start) into a temporary directory, and prints the downstream row of each
next to rgb_video, unaligned and closed_form on the job's held-out windows. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch


def main(argv=None) -> list[dict]:
    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.downstream.evaluate import Condition, evaluate_conditions, subsample
    from modeling_evalign.downstream.features import load_split
    from modeling_evalign.downstream.stage import _unflatten, aligned_tokens, load_vlm
    from modeling_evalign.pipeline import strategies as st
    from modeling_evalign.pipeline.config import PipelineConfig
    from modeling_evalign.pipeline.features import tower_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="outputs/demo", help="a finished main job's output")
    ap.add_argument("--duration", default="1s")
    args = ap.parse_args(argv)
    cfg = PipelineConfig(output_dir=args.output_dir)
    tower = tower_path(cfg)
    vlm = load_vlm(cfg, tower)
    base = Path(args.output_dir) / "features" / args.duration / "downstream"
    dirs = {k: base / k for k in ("train", "validation", "test")}
    test, _, frames = load_split(dirs["test"])
    rows = subsample(len(test), cfg.downstream_max_windows)
    truth = [test.samples_list()[i]["answers"] for i in rows]
    events = test.event_features.float()[torch.as_tensor(rows)]
    conds = [Condition("rgb_video", "video", _unflatten(test.target_features.float()[torch.as_tensor(rows)], frames)),
             Condition("unaligned", "video", _unflatten(events, frames))]
    ridge = st.closed_form(cfg, AlignmentDataset.from_directory(dirs["train"]))
    conds.append(Condition("closed_form", "video", _unflatten(aligned_tokens(ridge, events), frames)))
    variants = {f"contrastive + mse_weight {w:g}": ("contrastive", {"model_config": {"mse_weight": w}})
                for w in (1.0, 10.0, 100.0)}
    variants["lightweight linear, 40 epochs from the ridge fit"] = (
        "lightweight", {"num_epochs": 40, "closed_form_init": cfg.ridge, "model_config": {"adapter_type": "linear"}})
    variants["lightweight MLP 512, 40 epochs, no warm start"] = (
        "lightweight", {"num_epochs": 40, "model_config": {"adapter_type": "mlp", "hidden_dim": 512}})
    scfg = dataclasses.replace(cfg, num_epochs=cfg.downstream_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (strategy, change)) in enumerate(variants.items()):
            fields = st.recipe(scfg, strategy, tower)  # the job's recipe, changed where the variant says
            if "closed_form_init" not in change:
                fields.pop("closed_form_init", None)
            fields.update({k: v for k, v in change.items() if k != "model_config"})
            extra = [f"{k}={json.dumps(v)}" for k, v in change["model_config"].items()]
            keys = {e.split("=", 1)[0] for e in extra}
            fields["model_config"] = [e for e in fields["model_config"] if e.split("=", 1)[0] not in keys] + extra
            with st.quiet_loading():
                model = st.train_feature_strategy(scfg, strategy, dirs, Path(tmp) / str(i), tower, fields=fields)
            conds.append(Condition(name, "video", _unflatten(aligned_tokens(model, events), frames)))
    table, _ = evaluate_conditions(vlm.target, vlm.tokenizer, conds, truth, args.duration,
                                   max_new_tokens=cfg.downstream_max_new_tokens, gamma=cfg.downstream_gamma,
                                   log=lambda message: None)
    print(f"{args.duration}: {len(rows)} held-out windows; accuracy / scene / agreement / alpha in %")
    for r in table:
        print(f"{r['condition']:52s} {100 * r['accuracy']:5.1f} {100 * r['accuracy_by_type']['scene']:5.1f} "
              f"{100 * r['agreement']:5.1f} {100 * (r['alpha'] or 0):5.1f}")
    return table


if __name__ == "__main__":
    main()
