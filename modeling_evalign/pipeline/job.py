"""The main job (``make demo``): synthetic DSEC tree -> HF datasets -> CLIP features -> strategies -> one table.

Stages, each resumable (a finished stage's output is reused, an interrupted one is redone or resumed):

1. ``write_synthetic_dsec``: DSEC-format sequences made from scikit-image photographs (ESIM-style events);
2. ``DsecAlignmentBuilder``: the ``1s`` and ``200ms`` window datasets, split by sequence;
3. ``extract_features``: EventGPT-style pooled event features and RGB target features from one frozen CLIP
   vision tower (a tiny one built from config by default, since nothing is downloaded here; pass
   ``--clip openai/clip-vit-large-patch14-336`` for the real one);
4. training: ``lightweight`` and ``contrastive`` through the Accelerate loop (``modeling_evalign.training``);
5. evaluation on the held-out test sequences, beside three references: ``unaligned`` (event features used
   as they are), ``closed_form`` (ridge regression in float64) and ``reconstruction`` (FireNet frames from
   the events -> the same CLIP tower: zero paired data; needs the pretrained FireNet file).

Retrieval here is strict: a query's only positive is its own window (index-matched), although neighbouring
windows of one sequence look alike; ``R@K (seq)`` counts any window of the same sequence as a hit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils.io_utils import atomic_write_json, atomic_write_text

DEFAULT_FIRENET = Path(__file__).resolve().parents[2] / "shared" / "weights" / "firenet" / "model.pth"


@dataclass
class PipelineConfig:
    """Sizes default to a run of a few minutes on 2 CPU cores; DSEC's real sizes are 640x480 / 1440x1080."""

    output_dir: str = "outputs/demo"
    sequences: int = 8
    seconds: float = 16.0
    # Scenes recur across sequences (a place driven through twice, as in DSEC), so held-out sequences
    # show scenes seen in training from other camera paths.
    photos: list[str] = field(default_factory=lambda: ["astronaut", "coffee", "chelsea", "rocket"])
    seed: int = 0
    sensor_size: tuple[int, int] = (320, 240)
    image_size: tuple[int, int] = (480, 360)
    durations: list[str] = field(default_factory=lambda: ["1s", "200ms"])
    clip: str | None = None
    # sparse event frames survive downsampling to 128 px far better than to 64 px
    tiny_clip_image_size: int = 128
    tiny_clip_patch_size: int = 16
    num_epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    ridge: float = 0.1
    firenet: str | None = str(DEFAULT_FIRENET)
    # E2VID/FireNet take one recurrent step per 0.35*H*W events: a 1 s window is ~20 steps. The demo
    # splits a dense window into at most this many equal steps to stay within minutes on 2 cores.
    reconstruction_max_steps: int = 4
    num_proc: int = 1

    def __post_init__(self):
        for name in ("sequences", "num_epochs", "batch_size", "num_proc"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PipelineConfig.{name}={getattr(self, name)!r}: expected an integer >= 1")
        if self.sequences < 3:
            raise ValueError(f"PipelineConfig.sequences={self.sequences}: need >= 3 (train, validation, test)")
        if not self.seconds > 0:
            raise ValueError(f"PipelineConfig.seconds={self.seconds}: expected > 0")


@dataclass
class StrategyRow:
    duration: str
    strategy: str
    metrics: dict[str, float]
    note: str = ""


def _log(msg: str) -> None:
    print(f"[evalign] {msg}", flush=True)


def _encoder(cfg: PipelineConfig):
    from ..features.extraction import load_clip_vision, tiny_clip_vision

    if cfg.clip:
        return load_clip_vision(cfg.clip)
    return tiny_clip_vision(seed=cfg.seed, image_size=cfg.tiny_clip_image_size, patch_size=cfg.tiny_clip_patch_size)


def _extraction_options():
    from ..features.extraction import ExtractionOptions

    # pooled EventGPT event features vs the mean patch token of the RGB frame (penultimate layer, as
    # Video-LLaVA); a tiny random tower's CLS token barely depends on the image, its patch tokens do.
    return ExtractionOptions(event_pooling="pooled", event_layer=-2, target_tokens="mean", target_layer=-2)


def build_splits(cfg: PipelineConfig, tree: Path, duration: str, cache_dir: Path):
    from ..data.dsec_builder import DsecAlignmentBuilder

    builder = DsecAlignmentBuilder(
        config_name=duration, data_dir=str(tree), cache_dir=str(cache_dir), val_fraction=0.15, test_fraction=0.25
    )
    builder.download_and_prepare(num_proc=cfg.num_proc if cfg.num_proc > 1 else None)
    return {split: builder.as_dataset(split=split) for split in builder.info.splits}


def extract_splits(cfg: PipelineConfig, splits: dict, out: Path, encoder) -> dict[str, Path]:
    from ..features.extraction import extract_features

    dirs = {}
    for split, ds in splits.items():
        dirs[split] = out / split
        extract_features(ds, dirs[split], encoder, options=_extraction_options(), split=split, batch_size=16)
    return dirs


def evaluate_features(event: torch.Tensor, target: torch.Tensor, groups: list[Any]) -> dict[str, float]:
    from ..evaluation.metrics import bidirectional_recall, cosine_similarity, mse

    metrics = bidirectional_recall(event, target, ks=(1, 5, 10))
    seq = bidirectional_recall(event, target, ks=(1,), positive_groups=groups)
    metrics["seq/R@1"] = seq["mean/R@1"]
    metrics["cosine"] = cosine_similarity(event, target)
    metrics["mse"] = mse(event, target)
    return metrics


def _aligned(model, features: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model(event_features=features).aligned_features.float()


def _train_strategy(cfg: PipelineConfig, strategy: str, dirs: dict[str, Path], out: Path):
    from transformers import AutoModel

    from ..data.alignment_dataset import AlignmentDataset
    from ..training.config import TrainConfig
    from ..training.loop import run

    final = out / "final"
    if not (final / "config.json").is_file():
        n_train = len(AlignmentDataset.from_directory(dirs["train"]))
        if n_train < cfg.batch_size:
            _log(f"    {strategy}: batch size {cfg.batch_size} -> {n_train} (only {n_train} training windows)")
        config = TrainConfig(
            strategy=strategy,
            output_dir=str(out),
            train_dir=str(dirs["train"]),
            val_dir=str(dirs["validation"]) if "validation" in dirs else None,
            num_epochs=cfg.num_epochs,
            batch_size=min(cfg.batch_size, n_train),
            learning_rate=cfg.learning_rate,
            seed=cfg.seed,
            checkpointing_steps=10_000,
            checkpoints_total_limit=1,
            resume_from_checkpoint="latest",
            cpu=True,
            # the lightweight adapter starts from the ridge solution (fit_closed_form as a warm start)
            closed_form_init=cfg.ridge if strategy == "lightweight" else None,
        )
        run(config)
    return AutoModel.from_pretrained(final)


def _closed_form(cfg: PipelineConfig, train) -> torch.nn.Module:
    from ..lightweight.configuration_lightweight import LightweightAlignmentConfig
    from ..lightweight.modeling_lightweight import LightweightAlignmentModule

    model = LightweightAlignmentModule(
        LightweightAlignmentConfig(event_dim=train.event_dim, target_dim=train.target_dim, adapter_type="linear")
    )
    model.fit_closed_form(train.event_features, train.target_features, ridge=cfg.ridge)
    return model


def _reconstruction_features(cfg: PipelineConfig, tree: Path, test, encoder) -> torch.Tensor:
    """FireNet frames of every test window (state carried along each sequence) -> the same tower and token
    reduction as the target features (mean patch token of the penultimate layer)."""
    from ..events.dsec_reader import DsecEventReader
    from ..reconstruction.modeling_reconstruction import ReconstructionAlignmentModule, encode_windows

    model = ReconstructionAlignmentModule.from_reconstruction_checkpoint(
        cfg.firenet, clip_model_name_or_path=cfg.clip, clip_config=None if cfg.clip else encoder.config.to_dict(),
        feature_layer=-2, max_steps_per_window=cfg.reconstruction_max_steps,
    )
    model.set_clip_tower(encoder)
    readers: dict[str, DsecEventReader] = {}

    def windows():
        for row in test.samples_list():
            seq = row["sequence"]
            reader = readers.get(seq) or readers.setdefault(seq, DsecEventReader(tree / seq))
            w = reader.read_window(row["window_start_us"], row["window_end_us"])
            yield {"sequence": seq, "x": w.x, "y": w.y, "t": w.t, "p": w.p}

    width, height = cfg.sensor_size
    tokens = encode_windows(model, windows(), height=height, width=width, token_level=True)
    return tokens[:, 1:].mean(dim=1)


def run_pipeline(cfg: PipelineConfig) -> list[StrategyRow]:
    from ..data.alignment_dataset import AlignmentDataset
    from ..events.synthetic_dsec import write_synthetic_dsec

    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    started = time.perf_counter()
    tree = out / "dsec"
    _log(f"1/5 synthetic DSEC tree: {cfg.sequences} sequences x {cfg.seconds:g} s -> {tree}")
    write_synthetic_dsec(tree, sequences=cfg.sequences, seconds=cfg.seconds, seed=cfg.seed,
                         image_size=cfg.image_size, sensor_size=cfg.sensor_size, photos=cfg.photos)
    _log(f"    {time.perf_counter() - started:.0f} s")
    encoder = _encoder(cfg)
    rows: list[StrategyRow] = []
    for duration in cfg.durations:
        _log(f"2/5 [{duration}] building the HF dataset")
        splits = build_splits(cfg, tree, duration, out / "hf_cache")
        counts = {k: len(v) for k, v in splits.items()}
        _log(f"    windows per split: {counts}")
        if "test" not in splits or "train" not in splits:
            raise ValueError(f"[{duration}] the split rule left no train or test sequence: {counts}")
        _log(f"3/5 [{duration}] extracting features ({time.perf_counter() - started:.0f} s)")
        dirs = extract_splits(cfg, splits, out / "features" / duration, encoder)
        train = AlignmentDataset.from_directory(dirs["train"])
        test = AlignmentDataset.from_directory(dirs["test"])
        groups = test.metadata_column("sequence")
        _log(f"    chance: R@1 {100 / len(test):.1f}%, seq/R@1 {100 / len(set(groups)):.0f}% ({len(test)} test windows "
             f"from {len(set(groups))} sequences)")
        ev, tg = test.event_features.float(), test.target_features.float()

        _log(f"4/5 [{duration}] baselines and training ({time.perf_counter() - started:.0f} s)")
        if ev.shape[-1] == tg.shape[-1]:
            rows.append(StrategyRow(duration, "unaligned", evaluate_features(ev, tg, groups)))
        rows.append(StrategyRow(duration, "closed_form", evaluate_features(_aligned(_closed_form(cfg, train), ev), tg, groups)))
        for strategy in ("lightweight", "contrastive"):
            model = _train_strategy(cfg, strategy, dirs, out / "runs" / duration / strategy)
            rows.append(StrategyRow(duration, strategy, evaluate_features(_aligned(model, ev), tg, groups)))
        _log(f"5/5 [{duration}] reconstruction baseline, zero paired data ({time.perf_counter() - started:.0f} s)")
        if cfg.firenet and Path(cfg.firenet).is_file():
            recon = _reconstruction_features(cfg, tree, test, encoder)
            rows.append(StrategyRow(duration, "reconstruction", evaluate_features(recon, tg, groups), "FireNet"))
        else:
            _log(f"    skipped: no FireNet weights at {cfg.firenet} (pass --firenet PATH)")
    elapsed = time.perf_counter() - started
    table = format_table(rows)
    print(table, flush=True)
    _log(f"done in {elapsed:.0f} s; results in {out / 'results.json'} and {out / 'results.md'}")
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_json(out / "results.json", {"config": dataclasses.asdict(cfg), "elapsed_s": elapsed,
                                             "rows": [dataclasses.asdict(r) for r in rows]})
    return rows


COLUMNS = ("e2t/R@1", "e2t/R@5", "e2t/R@10", "t2e/R@1", "t2e/R@5", "t2e/R@10", "seq/R@1", "cosine", "mse")


def format_table(rows: list[StrategyRow]) -> str:
    """Markdown table: one row per (duration, strategy); recalls in percent."""
    head = "| duration | strategy | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in rows:
        cells = [f"{100 * r.metrics[c]:.1f}" if "R@" in c else f"{r.metrics[c]:.4f}" for c in COLUMNS]
        lines.append(f"| {r.duration} | {r.strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from err
    return w, h


def parse_args(argv: list[str] | None = None) -> PipelineConfig:
    defaults = PipelineConfig()
    p = argparse.ArgumentParser(prog="python -m modeling_evalign.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default=defaults.output_dir)
    p.add_argument("--sequences", type=int, default=defaults.sequences)
    p.add_argument("--seconds", type=float, default=defaults.seconds)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--sensor-size", type=_size, default=defaults.sensor_size, help="WxH of the event sensor")
    p.add_argument("--image-size", type=_size, default=defaults.image_size, help="WxH of the RGB frames")
    p.add_argument("--photos", nargs="+", default=defaults.photos, help="scikit-image photographs to animate")
    p.add_argument("--durations", nargs="+", default=defaults.durations)
    p.add_argument("--clip", default=None, help="CLIP vision tower repo id or path (default: tiny, from config)")
    p.add_argument("--num-epochs", type=int, default=defaults.num_epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument("--firenet", default=defaults.firenet, help="pretrained FireNet checkpoint (.pth)")
    p.add_argument("--reconstruction-max-steps", type=int, default=defaults.reconstruction_max_steps,
                   help="cap on FireNet steps per window (0 = no cap)")
    p.add_argument("--num-proc", type=int, default=defaults.num_proc)
    args = vars(p.parse_args(argv))
    return PipelineConfig(**{k: v for k, v in args.items()})


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_pipeline(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
