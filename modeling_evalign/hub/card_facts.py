"""What a model card states, gathered while the run's objects are still in memory (before any path is stripped).

* the tower: its Hub id and revision, or, for a local / proxy tower, its name and how to rebuild it;
* the input contract: the input name, the tensor layout and shape the model was trained on, the tower layer,
  checked by one forward pass of zeros at that shape (the output shape shown in the usage snippet is measured);
* the training data as it was: synthetic DSEC from evalign's generator (with its settings) or real DSEC windows;
* the evaluation: split, n, chance and the retrieval rule.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .paths import hub_repo_id, is_local_path, tower_field, tower_reference

SNIPPET_BATCH = 2
# how validation retrieval is scored today (training.evaluation.evaluate); a run may record its own rule in
# training_info["evaluation_rule"], which the card then states instead
DEFAULT_RULE = ("strict retrieval: a query's only positive is its own pair; cosine similarity on the model's "
                "pooled features (its pool_tokens, else the token mean); an item scoring >= the positive counts "
                "against it (ties count against the query)")
_SYNTHETIC_FILE = "evalign_synthetic.json"
_SIM_KEYS = ("contrast_threshold", "refractory_us", "hot_pixel_fraction", "hot_pixel_rate_hz", "background_rate_hz",
             "image_rate_hz", "sensor_size", "image_size")


def tower_facts(reference: str | None, revision: str | None = None) -> dict[str, Any] | None:
    """``{"repo_id", "name", "revision", "kind", "proxy_config"}`` of a tower reference (id or local path)."""
    if not reference:
        return None
    repo_id = hub_repo_id(reference)
    facts: dict[str, Any] = {"repo_id": repo_id, "revision": revision or ("main" if repo_id else None),
                             "name": repo_id or Path(reference).name, "kind": "hub" if repo_id else "local",
                             "proxy_config": None}
    proxy = Path(reference).expanduser() / "proxy_clip.json" if is_local_path(reference) else None
    if proxy is not None and proxy.is_file():
        facts["kind"] = "proxy"
        facts["proxy_config"] = json.loads(proxy.read_text()).get("config")
    return facts


def describe_dsec_tree(tree: str | Path) -> dict[str, Any]:
    """The recordings as they were: synthetic (evalign's generator, its settings) or real DSEC sequences."""
    tree = Path(tree)
    seqs = sorted(p for p in tree.iterdir() if p.is_dir()) if tree.is_dir() else []
    meta = [json.loads((s / _SYNTHETIC_FILE).read_text()) for s in seqs if (s / _SYNTHETIC_FILE).is_file()]
    if not meta:
        return {"synthetic": False, "sequences": len(seqs)}
    sim = meta[0].get("simulator", {})
    return {
        "synthetic": True, "sequences": len(meta),
        "seconds_per_sequence": round(meta[0].get("duration_us", 0) / 1e6, 3),
        "photographs": dict(sorted(Counter(m.get("scene") for m in meta).items())),
        "events": sum(int(m.get("num_events", 0)) for m in meta),
        "seed": meta[0].get("seed"),
        "simulator": {k: sim[k] for k in _SIM_KEYS if k in sim},
    }


def _samples(source: Mapping[str, Any]) -> tuple[list[dict], dict]:
    """Samples and metadata of a feature directory source (empty when the source has none)."""
    train_dir = source.get("train_dir")
    meta_file = Path(train_dir) / "metadata.json" if train_dir else None
    if meta_file is None or not meta_file.is_file():
        return [], {}
    meta = json.loads(meta_file.read_text())
    return list(meta.get("samples") or []), meta


def data_facts(source: Mapping[str, Any], counts: Mapping[str, int], durations: list[str]) -> dict[str, Any]:
    """Training data of a run: pair counts, durations, and the recordings (synthetic or real)."""
    samples, meta = _samples(source)
    provenance = meta.get("provenance") or {}
    tree = source.get("data_dir")
    recordings = provenance.get("data") or (describe_dsec_tree(tree) if tree else None)
    if recordings is None and samples:  # pre-extracted features: the builder names a synthetic scene, DSEC none
        synthetic = any(s.get("scene") for s in samples)
        scenes = {(s.get("sequence"), s.get("scene")) for s in samples}  # sequences per photograph
        recordings = {"synthetic": synthetic, "sequences": len({s.get("sequence") for s in samples}),
                      "photographs": dict(sorted(Counter(scene for _, scene in scenes).items())) if synthetic else None,
                      "seed": None}
    duration = provenance.get("duration") or (durations[0] if durations else source.get("duration"))
    return {"recordings": recordings, "duration": duration, "train_pairs": int(counts.get("train", 0)),
            "val_pairs": int(counts.get("val", 0)), "kind": source.get("type"),
            "layout": meta.get("space"), "extraction": (meta.get("extraction") or {}).get("options")}


@torch.no_grad()
def input_contract(model: torch.nn.Module, dataset: Any, input_name: str) -> dict[str, Any] | None:
    """The event input's per-sample shape and dtype (from the first training item), and the output shape of
    one forward pass of zeros at ``[SNIPPET_BATCH, *shape]`` (a contract the model cannot run is no contract)."""
    try:
        item = dataset[0]
    except (IndexError, TypeError, KeyError):
        return None
    x = item.get(input_name) if isinstance(item, Mapping) else None
    if not isinstance(x, torch.Tensor):
        return None
    shape = [SNIPPET_BATCH, *x.shape]
    was_training = model.training
    model.eval()
    try:
        out = model(**{input_name: torch.zeros(shape, dtype=torch.float32)})
    finally:
        model.train(was_training)
    aligned = getattr(out, "aligned_features", None)
    return {"input": input_name, "shape": shape, "output_shape": list(aligned.shape) if aligned is not None else None}


def eval_facts(metrics: Mapping[str, float], n: int, split: str, rule: str | None = None) -> dict[str, Any]:
    """Split, n, the chance level of each R@k on ``n`` items, and the rule."""
    ks = sorted({int(k.split("R@")[1]) for k in metrics if "R@" in k and k.split("R@")[1].isdigit()})
    chance = {k: min(1.0, k / n) for k in ks} if n else {}
    return {"split": split, "n": n, "chance": chance, "rule": rule or DEFAULT_RULE}


def gather(config, model: torch.nn.Module, data, info: Mapping[str, Any]) -> dict[str, Any]:
    """Every fact the card template needs, from the training run's objects (paths still local here)."""
    from ..training.data import model_inputs

    model_config = getattr(model, "config", None)
    reference, revision = tower_reference(model_config) if model_config is not None else (None, None)
    samples, meta = _samples(data.source)
    provenance = meta.get("provenance") or {}
    if reference is None and provenance.get("tower"):  # features: the tower that produced them
        reference, revision = provenance["tower"], provenance.get("revision")
    if reference is None and data.source.get("clip_model"):
        reference, revision = data.source["clip_model"], data.source.get("clip_revision")
    counts = info.get("counts", {})
    field, loaded_at_build = tower_field(model_config)
    facts = {
        "tower": tower_facts(reference, revision),
        "tower_field": field,
        "needs_tower": loaded_at_build,
        "contract": input_contract(model, data.train, model_inputs(config.strategy)[0]),
        "data": data_facts(data.source, counts, list(info.get("durations") or [])),
        "evaluation": eval_facts(info.get("final_metrics", {}), int(counts.get("val", 0)), "validation",
                                 info.get("evaluation_rule")),
    }
    if facts["contract"] is not None:
        facts["contract"]["layer"] = (facts["data"].get("extraction") or {}).get("event_layer",
                                                                                 getattr(model_config, "token_layer", None))
    return facts


__all__ = ["DEFAULT_RULE", "data_facts", "describe_dsec_tree", "eval_facts", "gather", "input_contract",
           "tower_facts"]
