"""Model cards (README.md with model-index metadata) for saved evalign checkpoints."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.io_utils import atomic_write_bytes, atomic_write_text
from .paths import hub_repo_id, strip_machine_paths
from .templates import template_path

CARD_TEMPLATE = "model_card.md.jinja"
TRAINING_CURVE_FILE = "training_curve.png"

def _strategy_summary(strategy: str) -> str:
    """The one-sentence summary the strategy's spec declares (empty for a name the registry does not know)."""
    from ..registry import get_strategy

    try:
        return get_strategy(strategy).summary
    except (KeyError, ValueError):
        return ""


def _metric_type(name: str) -> str:
    """Hub-friendly metric id: 'R@1' -> 'recall_at_1', 'cosine sim' -> 'cosine_sim'."""
    name = re.sub(r"(?i)(^|\W)r@(\d+)", r"\1recall_at_\2", name.strip()).replace("@", "_at_")
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() or "metric"


def _task_type(name: str) -> str:
    return "retrieval" if re.search(r"(?i)(^|\W)(r@\d|recall)", name) else "feature-extraction"


def _normalise_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{name: value}`` or ``{config: {name: value}}`` -> ``{config or '': {name: float}}``."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name -> value (or config -> mapping), got {type(metrics).__name__}")
    flat = {k: v for k, v in metrics.items() if not isinstance(v, Mapping)}
    nested = {k: v for k, v in metrics.items() if isinstance(v, Mapping)}
    groups = {"": flat} if flat else {}
    groups.update(nested)
    out: dict[str, dict[str, float]] = {}
    for config, values in groups.items():
        out[str(config)] = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                where = f"metrics[{config!r}][{name!r}]" if config else f"metrics[{name!r}]"
                raise ValueError(f"{where}={value!r} is invalid: expected a number")
            out[str(config)][str(name)] = float(value)
    return out


def _format(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table_worthy(key: str, value: Any) -> bool:
    """Scalars and short lists of scalars go into the training table; per-step logs and nested
    sections (history, losses, configs) stay in training_info.json."""
    scalar = (str, int, float, bool)
    if key == "history" or value is None:
        return False
    if isinstance(value, (list, tuple)):
        return 0 < len(value) <= 8 and all(isinstance(v, scalar) for v in value)
    return isinstance(value, scalar)


def _contract_text(contract: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The input contract with its shapes as ``[batch, 25, 128]`` text for the card."""
    if not contract:
        return None
    out = dict(contract)
    out["shape_text"] = "[" + ", ".join(["batch", *map(str, contract["shape"][1:])]) + "]"
    shape = contract.get("output_shape")
    out["output_shape_text"] = "[" + ", ".join(["batch", *map(str, shape[1:])]) + "]" if shape else "not recorded"
    return out


def _layout_text(space: str | None, contract: Mapping[str, Any] | None) -> str | None:
    """What the input dimensions mean, in words."""
    if contract and contract["input"] == "event_pixel_values":
        return "CLIP-preprocessed event images (RGB, CLIP mean/std) fed to the LoRA copy of the tower"
    if space and space.startswith("tokens"):
        n = len(contract["shape"]) if contract else 0
        return ("patch tokens (EventGPT's spatial tokens: per-patch mean over the 5 event frames, CLS dropped), "
                "mapped token by token" if n == 3 else space)
    return space


def build_card_data(
    *, model_id: str, strategy: str, metrics: Mapping[str, Any], datasets: Sequence[str], base_model: str | None = None,
    split: str = "validation", extra_tags: Sequence[str] = (), default_dataset: str = "synthetic",
):
    """The card's YAML metadata as a ``ModelCardData`` (library, tags, datasets, model-index results)."""
    from huggingface_hub import EvalResult, ModelCardData

    groups = _normalise_metrics(metrics)
    dataset = datasets[0] if datasets else default_dataset
    results = [
        EvalResult(
            task_type=_task_type(name),
            task_name="Event-to-image retrieval" if _task_type(name) == "retrieval" else "Event feature alignment",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_config=config or None,
            dataset_split=split,
            metric_type=_metric_type(name),
            metric_name=name,
            metric_value=value,
        )
        for config, values in groups.items()
        for name, value in values.items()
        if math.isfinite(value)  # a metric that could not be computed (NaN) is shown in the table only
    ]
    return ModelCardData(
        model_name=model_id.split("/")[-1],
        library_name="transformers",
        tags=["evalign", "event-camera", strategy, "feature-alignment", *extra_tags],
        datasets=list(datasets) or None,
        base_model=hub_repo_id(base_model),  # a Hub repo id or nothing: never a local directory
        pipeline_tag="feature-extraction",
        license="apache-2.0",
        eval_results=results or None,
    )


def write_model_card(
    folder: str | os.PathLike,
    *,
    model_id: str,
    strategy: str,
    metrics: Mapping[str, Any],
    training_info: Mapping[str, Any] | None = None,
    datasets: Sequence[str] = (),
    plot_path: str | os.PathLike | None = None,
    base_model: str | None = None,
    split: str = "validation",
    facts: Mapping[str, Any] | None = None,
) -> Path:
    """Render ``hub_cards/model_card.md.jinja`` into ``folder/README.md`` (atomically) and return its path.

    Args:
        folder: checkpoint directory written by ``save_pretrained``.
        model_id: Hub repo id (``org/name``) used in the usage snippet and metadata.
        strategy: strategy name (``lightweight``, ``contrastive``, ``triple_modal``, ``reconstruction``).
        metrics: ``{"R@1": 0.41, "mse": 0.02}``, or per dataset config ``{"1s": {"R@1": ...}}``; every
            value becomes a model-index result (R@k -> task ``retrieval``, others ``feature-extraction``).
        training_info: settings shown in the training table; a ``"history"`` entry (list of per-epoch
            dicts or ``{series: [values]}``) is drawn as the training curve when ``plot_path`` is None.
        datasets: Hub dataset ids the model was trained/evaluated on (first one names the results).
        plot_path: an existing training-curve PNG to embed; copied into ``folder`` when outside it.
        base_model: repo id of the frozen target tower, if any (a local path is dropped: ``base_model`` is a
            Hub repo id or absent).
        split: the dataset split the metrics were measured on (model-index ``dataset.split``).
        facts: what :func:`.card_facts.gather` found (tower, input contract, training data, evaluation); default:
            ``training_info["card"]`` (recorded by the training run). Its tower's Hub id becomes ``base_model``
            when none is given.
    """
    from huggingface_hub import ModelCard

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"write_model_card: checkpoint folder {folder} does not exist")
    if not isinstance(model_id, str) or not model_id.strip():
        raise ValueError(f"write_model_card: model_id={model_id!r} is invalid: expected 'namespace/name'")
    if isinstance(datasets, str):
        datasets = [datasets]
    training_info = strip_machine_paths(dict(training_info or {}), folder)
    facts = dict(facts or training_info.get("card") or {})  # the facts the training run recorded
    tower = facts.get("tower")
    data = facts.get("data") or {}
    recordings = data.get("recordings")
    synthetic = bool((recordings or {}).get("synthetic"))
    evaluation = facts.get("evaluation")
    card_data = build_card_data(
        model_id=model_id, strategy=strategy, metrics=metrics, datasets=datasets,
        base_model=base_model or (tower or {}).get("repo_id"), split=(evaluation or {}).get("split", split),
        extra_tags=["synthetic-data"] if synthetic else [],
        default_dataset="evalign-synthetic-dsec" if synthetic else "dsec" if recordings else "unspecified",
    )

    plot_file = None
    if plot_path is not None:
        plot_path = Path(plot_path)
        if not plot_path.is_file():
            raise FileNotFoundError(f"write_model_card: plot_path {plot_path} does not exist")
        if plot_path.resolve().parent != folder.resolve():
            atomic_write_bytes(folder / plot_path.name, plot_path.read_bytes())
        plot_file = plot_path.name
    elif training_info.get("history"):
        from ..evaluation.plots import plot_training_curve

        plot_training_curve(training_info["history"], folder / TRAINING_CURVE_FILE)
        plot_file = TRAINING_CURVE_FILE

    groups = _normalise_metrics(metrics)
    names = list(dict.fromkeys(name for values in groups.values() for name in values))
    has_config = any(groups)
    header = (["config"] if has_config else []) + names
    rows = [
        ([config or "-"] if has_config else []) + [_format(values[n]) if n in values else "-" for n in names]
        for config, values in groups.items()
    ]
    training_rows = [(str(k), _format(v)) for k, v in sorted(training_info.items()) if _table_worthy(k, v)]
    config = {}
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
    contract = _contract_text(facts.get("contract"))
    proxy = (tower or {}).get("proxy_config")
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(CARD_TEMPLATE)),
        model_id=model_id,
        strategy=strategy,
        strategy_summary=_strategy_summary(strategy),
        datasets=list(datasets),
        event_dim=config.get("event_dim"),
        metric_header=header,
        metric_rows=rows,
        training_rows=training_rows,
        plot_file=plot_file,
        synthetic=synthetic,
        tower=tower,
        tower_field=facts.get("tower_field"),
        needs_tower=bool(facts.get("needs_tower")),
        proxy_config_literal=repr(proxy) if proxy is not None else None,
        contract=contract,
        layout=_layout_text(data.get("layout"), contract),
        extraction=data.get("extraction"),
        data=strip_machine_paths(data, folder, name_only=True) if data else None,
        evaluation=evaluation,
    )
    return atomic_write_text(folder / "README.md", str(card))


__all__ = ["build_card_data", "write_model_card"]
