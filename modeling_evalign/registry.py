"""The one strategy registry: every strategy declares itself once, everything else reads it.

Modelled on lerobot's ``policies/factory.py`` (one place maps a policy name to its config and model) and
transformers' auto mappings (classes named by import strings, resolved on first use, so registering stays
cheap). Each strategy folder holds a ``strategy.py`` that builds its :class:`StrategySpec` (s) and calls
:func:`register_strategy`; :data:`BUILTIN` lists those modules (adding a strategy = a new folder + one line
there, or one :func:`register_strategy` call from user code).

What reads a spec: Auto registration (``register_auto_classes``: configs at import, models on the first
config instance), training (``training.config``/``data``/``models``: data kind, forward input names, build
from the data's shapes, which need class labels), validation (the evaluation rule), the main job's recipe
(``pipeline.strategies``), the strategy map (its grid and fitter), cross-duration and selection (the
strategies' data-size profiles).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: strategy modules registered on first use of the registry (one line per strategy folder)
BUILTIN: tuple[str, ...] = (
    "modeling_evalign.lightweight.strategy",
    "modeling_evalign.contrastive.strategy",
    "modeling_evalign.triple_modal.strategy",
    "modeling_evalign.reconstruction.strategy",
    "modeling_evalign.legacy.strategy",
)

#: data kinds the training loop knows how to load
DATA_KINDS = ("features", "images")
FEATURE_INPUTS = ("event_features", "target_features")
IMAGE_INPUTS = ("event_pixel_values", "pixel_values")


@dataclass(frozen=True)
class StrategySpec:
    """Everything that is particular to one strategy.

    Attributes:
        name: the ``--strategy`` value (``lightweight``).
        config_class, model_class: the classes, or ``"module:Name"`` import strings (resolved on first use).
        model_type: the config's ``model_type`` (given here so Auto registration needs no model import).
        data_kind: ``"features"`` (pre-extracted feature pairs), ``"images"`` (DSEC image pairs through a CLIP
            tower) or None (not trained by the loop: reconstruction, legacy, building blocks).
        build: ``build(train_config, data, overrides, clip_model) -> model`` (a callable or import string):
            the model from the data's shapes (``data.event_dim``/``target_dim``/``class_names``) and the
            ``--model_config`` overrides. None: ``config_class(event_dim=, target_dim=, **overrides)``.
        needs_labels: training reads a class label per sample (``--label_key``).
        closed_form_init: the model has ``fit_closed_form`` (``--closed_form_init`` warm start).
        recipe: the strategy's row in the main job (``pipeline``): its TrainConfig fields (``model_config`` as a
            dict), or a callable ``recipe(pipeline_config, tower) -> dict`` when they depend on the job's
            settings; None: the main job does not train it.
        evaluation: the evaluation rule's name in :data:`EVALUATION_RULES` (how aligned features and targets
            become retrieval rows); ``"flatten"``: ``[B, D]`` as is, tokens ``[B, N, D]`` flattened.
        map_grid: the strategy map's default hyperparameter grid (None: not in the map).
        map_fit: ``fit(train, params, settings, context) -> (model, info)`` for the strategy map.
        profile: the selection table's row ``(min_pairs, comfortable_pairs, training, inference, quality)``.
        aliases: other spellings kept for old command lines / old ``training_info.json``.
        summary: one sentence for model cards and listings.
    """

    name: str
    config_class: Any
    model_class: Any
    model_type: str
    data_kind: str | None = None
    build: Any = None
    needs_labels: bool = False
    closed_form_init: bool = False
    recipe: Any = None
    evaluation: str = "flatten"
    map_grid: Mapping[str, list[float]] | None = None
    map_fit: Any = None
    profile: tuple | None = None
    aliases: tuple[str, ...] = ()
    summary: str = ""

    def __post_init__(self):
        if self.data_kind not in (None, *DATA_KINDS):
            raise ValueError(f"StrategySpec {self.name!r}: data_kind={self.data_kind!r}, expected one of {DATA_KINDS} or None")
        if self.evaluation not in EVALUATION_RULES:
            raise ValueError(f"StrategySpec {self.name!r}: evaluation={self.evaluation!r}, expected one of "
                             f"{sorted(EVALUATION_RULES)}")

    @property
    def trainable(self) -> bool:
        return self.data_kind is not None

    @property
    def inputs(self) -> tuple[str, str]:
        """(event, target) argument names of the model's forward."""
        return IMAGE_INPUTS if self.data_kind == "images" else FEATURE_INPUTS

    def get_config_class(self) -> type:
        return resolve(self.config_class)

    def get_model_class(self) -> type:
        return resolve(self.model_class)

    def rows(self, x):
        """This strategy's evaluation rule applied to features ``x`` (see :data:`EVALUATION_RULES`)."""
        return EVALUATION_RULES[self.evaluation](x)


def _flatten(x):
    return x if x.dim() == 2 else x.flatten(1)


def _mean(x):
    return x if x.dim() == 2 else x.mean(dim=1)


#: evaluation rules: how a feature layout becomes retrieval rows. "flatten" is the README's rule (the token
#: layout tells windows of one camera path apart); "mean" exists for strategies whose space is pooled.
EVALUATION_RULES: dict[str, Callable] = {"flatten": _flatten, "mean": _mean}

_SPECS: dict[str, StrategySpec] = {}
_ALIASES: dict[str, str] = {}
_BY_MODEL_TYPE: dict[str, StrategySpec] = {}
_loaded = False


def resolve(obj: Any) -> Any:
    """An object given directly or as ``"package.module:Name"``."""
    if not isinstance(obj, str):
        return obj
    module, sep, name = obj.partition(":")
    if not sep:
        raise ValueError(f"import string {obj!r} is invalid: expected 'package.module:Name'")
    return getattr(importlib.import_module(module), name)


def register_strategy(spec: StrategySpec, *, exist_ok: bool = False) -> StrategySpec:
    """Add ``spec``; registers its config with ``AutoConfig`` when Auto registration already ran."""
    old = _SPECS.get(spec.name)
    if old is not None and old != spec and not exist_ok:
        raise ValueError(f"strategy {spec.name!r} is already registered (pass exist_ok=True to replace it)")
    _SPECS[spec.name] = spec
    _BY_MODEL_TYPE[spec.model_type] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    if _auto_done:
        _register_config(spec)
    return spec


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(module)


def get_strategy(name: str) -> StrategySpec:
    """The spec of ``name`` (or an alias); ValueError naming the known strategies otherwise."""
    _load_builtin()
    spec = _SPECS.get(_ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"unknown strategy {name!r}: expected one of {strategy_names()}")
    return spec


def strategy_names(data_kind: str | None = "any") -> list[str]:
    """Registered strategy names in registration order; ``data_kind``: only those trained on that kind
    (``"any"``: every trainable one; None: all, reconstruction and building blocks included)."""
    _load_builtin()
    if data_kind is None:
        return list(_SPECS)
    if data_kind == "any":
        return [n for n, s in _SPECS.items() if s.trainable]
    return [n for n, s in _SPECS.items() if s.data_kind == data_kind]


def job_strategies() -> list[str]:
    """Strategies the main job trains (a ``recipe``): feature-level ones first, then image-level ones."""
    _load_builtin()
    return [n for kind in DATA_KINDS for n, s in _SPECS.items() if s.data_kind == kind and s.recipe is not None]


def spec_for_model_type(model_type: str | None) -> StrategySpec | None:
    _load_builtin()
    return _BY_MODEL_TYPE.get(model_type)


def spec_of(model) -> StrategySpec | None:
    """The spec whose ``model_type`` ``model.config`` carries (None for other models)."""
    return spec_for_model_type(getattr(getattr(model, "config", None), "model_type", None))


def retrieval_rows(model, x):
    """The evaluation rule of ``model``'s strategy applied to ``x`` (the README's flatten rule by default)."""
    spec = spec_of(model)
    return spec.rows(x) if spec is not None else _flatten(x)


# --- Auto classes ---------------------------------------------------------------------------------------
_auto_done = False


def _register_config(spec: StrategySpec) -> None:
    from transformers import AutoConfig

    AutoConfig.register(spec.model_type, spec.get_config_class(), exist_ok=True)


def register_auto_classes() -> None:
    """Register every config with ``AutoConfig`` (config modules only: cheap). Models register with
    ``AutoModel`` when their first config is created (:func:`register_model_for`), so ``import
    modeling_evalign`` never imports ``transformers.modeling_utils`` (and with it accelerate and scipy)."""
    global _auto_done
    if _auto_done:
        return
    _load_builtin()
    _auto_done = True
    for spec in _SPECS.values():
        _register_config(spec)


_models_done: set[str] = set()


def register_model_for(config_class: type) -> None:
    """Register the model of ``config_class``'s strategy with ``AutoModel`` (once; called by
    ``EvalignConfig.__post_init__``, so ``AutoModel.from_pretrained``/``from_config`` find it)."""
    model_type = getattr(config_class, "model_type", None)
    if model_type in _models_done:
        return
    spec = _BY_MODEL_TYPE.get(model_type)
    if spec is None or resolve(spec.config_class) is not config_class:
        return
    _models_done.add(model_type)
    from transformers import AutoModel

    AutoModel.register(config_class, spec.get_model_class(), exist_ok=True)

