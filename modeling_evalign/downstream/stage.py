"""The main job's downstream stage, per duration: video-layout features -> strategies trained on them -> the VLM's
answers under every condition (:mod:`.evaluate`) -> the speculative-decoding measurement.

Strategies (train split only, through the main job's own functions in ``pipeline.strategies``, so they train
exactly as the retrieval rows do, now on ``[N, frames * (1 + patches), D]`` tokens): ``closed_form`` (per-token
ridge) and every strategy of the registry the main job trains (``registry.job_strategies()``, each with its
recipe): feature-level ones (``lightweight`` warm-started at the ridge solution, ``contrastive``'s per-token head,
``triple_modal`` in token mode) read the event tokens; image-level ones (``contrastive_image``: the main job's
LoRA tower, trained on the last EventGPT frame vs the window's RGB frame) are fed each of the 5 event frames (its
penultimate tokens, CLS kept). The VLM reads each model's ``aligned_features`` in tower space. Reconstruction is
not a downstream condition (FireNet steps per chunk would exceed the stage's time budget).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.io_utils import atomic_write_json
from .evaluate import Condition, best_strategy, evaluate_conditions, speculative_entry, subsample
from .features import build_video_features, load_split


@dataclass
class DownstreamVlm:
    """The target VLM, its distilled draft and their tokenizer (loaded once per job)."""

    path: str
    target: object
    draft: object | None
    tokenizer: object


def _build_in_child(send, tower: str, cache_dir: str | None, fields: dict, log) -> None:
    from .proxy_vlm import ProxyVlmConfig, ensure_proxy_vlm

    try:
        torch.set_num_threads(1)  # as when the main job built it in its own process: the same weights
        send.send((True, str(ensure_proxy_vlm(tower, cache_dir, ProxyVlmConfig(**fields), log=log))))
    except BaseException as err:  # the parent re-raises it; an unpicklable error travels as its text
        try:
            send.send((False, err))
        except Exception:
            send.send((False, RuntimeError(f"{type(err).__name__}: {err}")))


class ProxyVlmBuild:
    """The proxy VLM built (or found) in a spawned process while the caller's stages run. ``result()`` waits for
    its directory and re-raises the build's error; ``stop()`` kills the build, which resumes from its last
    checkpoint next time. The configuration is checked before the process starts."""

    def __init__(self, cfg, tower: str, log=print):
        import multiprocessing

        from .proxy_vlm import ProxyVlmConfig

        ProxyVlmConfig(**cfg.proxy_vlm)
        context = multiprocessing.get_context("spawn")  # not fork: this process holds torch threads
        self._receive, send = context.Pipe(duplex=False)
        # daemon: dies with this process, never outlives an interrupted job
        self._process = context.Process(target=_build_in_child, daemon=True, name="evalign-proxy-vlm",
                                        args=(send, tower, cfg.proxy_cache_dir, dict(cfg.proxy_vlm), log))
        self._process.start()
        send.close()

    def result(self) -> str:
        try:
            ok, value = self._receive.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"the proxy VLM build process ended without a result (exit code "
                               f"{self._process.exitcode})") from None
        self._process.join()
        if not ok:
            raise value
        return value

    def running(self) -> bool:
        return self._process.is_alive()

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()


def load_vlm(cfg, tower: str, log=print, root: str | Path | None = None) -> DownstreamVlm:
    """``root`` (a built VLM directory), else ``cfg.vlm`` (a directory with ``target/`` and ``draft/``), else the proxy
    VLM pretrained here on ``tower``."""
    from transformers import AutoTokenizer, VideoLlavaForConditionalGeneration

    if root is not None or cfg.vlm:
        root = Path(root if root is not None else cfg.vlm)
    else:
        from .proxy_vlm import ProxyVlmConfig, ensure_proxy_vlm

        root = Path(ensure_proxy_vlm(tower, cfg.proxy_cache_dir, ProxyVlmConfig(**cfg.proxy_vlm), log=log))
    if not (root / "target" / "config.json").is_file():
        raise FileNotFoundError(f"{root / 'target'}: expected a VideoLlavaForConditionalGeneration directory")
    target = VideoLlavaForConditionalGeneration.from_pretrained(root / "target").eval()
    draft = None
    if (root / "draft" / "config.json").is_file():
        draft = VideoLlavaForConditionalGeneration.from_pretrained(root / "draft").eval()
    return DownstreamVlm(str(root), target, draft, AutoTokenizer.from_pretrained(root / "target"))


def _unflatten(tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[N, F * T, D]`` (or flattened ``[N, F * T * D]`` with ``D`` from the caller) -> ``[N, F, T, D]``."""
    n, ft, d = tokens.shape
    return tokens.reshape(n, num_frames, ft // num_frames, d)


@torch.inference_mode()
def aligned_tokens(model, events: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The model's aligned tokens ``[N, T, D]`` in tower space, as the VLM reads them (not through a retrieval
    rule, which may flatten or normalise the rows)."""
    model.eval()
    out = [model(event_features=events[i: i + batch_size].float()).aligned_features.float()
           for i in range(0, len(events), batch_size)]
    tokens = torch.cat(out)
    if tokens.shape != events.shape:
        raise ValueError(f"{type(model).__name__}: aligned features {tuple(tokens.shape)}, expected the event "
                         f"tokens' shape {tuple(events.shape)} (a per-token strategy in tower space)")
    return tokens


def _image_strategy_frames(cfg, strategy: str, splits, runs: Path, tower: str, vision, tree: Path, duration: str,
                           rows) -> torch.Tensor:
    """An image-level strategy (contrastive_image: the main job's LoRA tower, trained here through the registry if
    the job has not) on each of the test windows' event frames: its penultimate tokens, CLS kept ``[n, F, T, D]``."""
    import copy

    import numpy as np

    from ..pipeline import strategies as st
    from ..registry import get_strategy
    from .features import FEATURE_LAYER, tower_tokens

    final = runs / strategy / "final"
    if not (final / "config.json").is_file():
        st.train_image_strategy(cfg, strategy, splits, runs / strategy, tower, vision, tree, duration)
    model = get_strategy(strategy).get_model_class().from_pretrained(final, clip_model=copy.deepcopy(vision)).eval()
    frames = splits["test"].select(rows.tolist())["eventgpt_frames"]
    out = []
    for i in range(0, len(frames), 16):
        images = [np.asarray(im.convert("RGB")) for fs in frames[i: i + 16] for im in fs]
        tok = tower_tokens(model.event_encoder, images, FEATURE_LAYER)
        out.append(tok.view(len(frames[i: i + 16]), -1, *tok.shape[1:]))
    return torch.cat(out)


def strategy_conditions(cfg, duration: str, dirs: dict, splits: dict, tree: Path, out: Path, tower: str, vision,
                        rows, log=print) -> list[Condition]:
    """Every trained strategy's aligned test tokens ``[n, F, T, D]`` (windows ``rows`` of the test split):
    ``closed_form`` and every strategy of the registry the main job trains (its recipe, ``pipeline.strategies``)."""
    from ..data.alignment_dataset import AlignmentDataset
    from ..pipeline import strategies as st
    from ..registry import get_strategy, job_strategies

    test, _, num_frames = load_split(dirs["test"])
    ev = test.event_features.float()[torch.as_tensor(rows)]
    runs = out / "runs" / duration / "downstream"
    scfg = dataclasses.replace(cfg, num_epochs=cfg.downstream_epochs)
    want = [s for s in ["closed_form", *job_strategies()] if s in cfg.strategies]
    conds = []
    for name in want:
        started = time.perf_counter()
        if name == "closed_form":
            model = st.closed_form(cfg, AlignmentDataset.from_directory(dirs["train"]))
        elif get_strategy(name).data_kind == "images":
            feats = _image_strategy_frames(cfg, name, splits, out / "runs" / duration, tower, vision, tree, duration,
                                           rows)
            conds.append(Condition(name, "video", feats, "the main job's LoRA tower, each event frame"))
            log(f"    {name}: {time.perf_counter() - started:.1f} s")
            continue
        else:
            with st.quiet_loading():
                model = st.train_feature_strategy(scfg, name, dirs, runs / name, tower)
        conds.append(Condition(name, "video", _unflatten(aligned_tokens(model, ev), num_frames)))
        log(f"    {name}: {time.perf_counter() - started:.1f} s")
    return conds


def run_downstream(cfg, duration: str, tree: Path, out: Path, tower: str, vision, splits: dict,
                   vlm: DownstreamVlm, log=print) -> tuple[list[dict], dict | None, float]:
    """Rows of every condition at ``duration``, the speculative entry (None without a draft) and the seconds."""
    started = time.perf_counter()
    if "test" not in splits or "train" not in splits:
        raise ValueError(f"[{duration}] downstream needs train and test splits, have {sorted(splits)}")
    dirs = build_video_features(splits, tree, out / "features" / duration / "downstream", vision, log=log,
                                frame_cache=out / "features" / "downstream_rgb_frames")
    test, frame, num_frames = load_split(dirs["test"])
    rows = subsample(len(test), cfg.downstream_max_windows)
    pick = torch.as_tensor(rows)
    truth = [test.samples_list()[i]["answers"] for i in rows]
    conds = [Condition("rgb_video", "video", _unflatten(test.target_features.float()[pick], num_frames)),
             Condition("rgb_frame", "image", frame.float()[pick]),
             Condition("unaligned", "video", _unflatten(test.event_features.float()[pick], num_frames))]
    log(f"    [{duration}] downstream features {time.perf_counter() - started:.0f} s; training on "
        f"{len(load_split(dirs['train'])[0])} windows")
    conds += strategy_conditions(cfg, duration, dirs, splits, tree, out, tower, vision, rows, log=log)
    table, answers = evaluate_conditions(vlm.target, vlm.tokenizer, conds, truth, duration,
                                         max_new_tokens=cfg.downstream_max_new_tokens, gamma=cfg.downstream_gamma,
                                         log=log)
    # every answer beside the ground truth, for inspection and independent rescoring
    atomic_write_json(out / "downstream" / duration / "answers.json", {
        "windows": [test.samples_list()[i]["sequence"] + f"@{test.samples_list()[i]['window_start_us']}" for i in rows],
        "truth": truth, "answers": {name: a.texts for name, a in answers.items()}})
    spec = None
    best = best_strategy(table)
    if vlm.draft is not None and best is not None:
        t = time.perf_counter()
        by_name = {c.name: c for c in conds}
        spec = speculative_entry(vlm.target, vlm.draft, vlm.tokenizer, by_name["rgb_video"], by_name[best], truth,
                                 None, cfg.downstream_max_new_tokens, cfg.downstream_speed_windows,
                                 cfg.downstream_speed_repeats)
        log(f"    [{duration}] speculative ({best} -> draft): {spec.get('speedup', float('nan')):.2f}x, "
            f"{time.perf_counter() - t:.1f} s")
    return table, spec, time.perf_counter() - started
