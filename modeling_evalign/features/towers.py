"""The one loader of frozen CLIP vision towers: it checks that what it loaded IS a pretrained CLIP vision tower.

``from_pretrained`` on any directory builds a model of the requested class and fills in what it finds:
an alignment checkpoint or a ViT of another family gives a randomly initialised tower and features that
mean nothing, with only a load report (which the callers silence, as a full CLIP checkpoint's text
weights are always unused) as a trace. So every tower is loaded here: the config must be a CLIP (or
CLIP-vision) config and no vision weight may be missing, unexpected or of the wrong shape; otherwise one
line names the checkpoint and what was expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Model types whose checkpoints hold a CLIP vision tower (a full CLIP, or the vision part alone).
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
# Weights of a full CLIP checkpoint that a vision tower is expected not to use (the projection: a plain
# CLIPVisionModel has none).
_TEXT_PREFIXES = ("text_model.", "text_projection.", "logit_scale", "visual_projection.")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class TowerError(ValueError):
    """A checkpoint given as a CLIP vision tower is not one (or is incomplete)."""


def check_tower_reference(name_or_path: str | os.PathLike, what: str = "CLIP tower") -> None:
    """Cheap check before any work: a path that does not exist (or a name that is neither a path nor a Hub repo
    id) is refused with one line naming it. Repo ids are resolved when the tower loads."""
    name = str(name_or_path)
    if Path(name).expanduser().exists():
        return
    if name.startswith(("/", ".", "~")) or os.sep + os.sep in name or not _REPO_ID.match(name):
        raise FileNotFoundError(f"{what} {name!r}: no such directory (expected a CLIP checkpoint directory or a "
                                "Hub repo id such as openai/clip-vit-large-patch14)")


def _model_type(name: str, revision: str | None, what: str) -> str:
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(name, revision=revision)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TowerError(f"{what} {name!r}: cannot read its config.json ({first})") from None
    return str(config.get("model_type", ""))


def load_clip_vision_tower(name_or_path: str | os.PathLike, *, revision: str | None = None, dtype=None,
                           with_projection: bool = False, what: str = "CLIP tower", frozen: bool = True):
    """A frozen (eval, no gradients; ``frozen=False``: as ``from_pretrained`` gives it) ``CLIPVisionModel`` (or ``CLIPVisionModelWithProjection``) from a repo id
    or directory holding a CLIP or CLIP-vision checkpoint; anything else raises :class:`TowerError`
    (a missing path: ``FileNotFoundError``). ``what`` names the flag in messages (``--event-model``)."""
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    name = str(name_or_path)
    check_tower_reference(name, what)
    model_type = _model_type(name, revision, what)
    if model_type not in CLIP_MODEL_TYPES:
        raise TowerError(f"{what} {name!r} has model_type {model_type or None!r}: expected a CLIP vision tower "
                         f"(model_type one of {list(CLIP_MODEL_TYPES)})")
    cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the report is checked below instead of printed
    try:
        kwargs = {"revision": revision} if revision is not None else {}
        if dtype is not None:
            kwargs["dtype"] = dtype
        model, info = cls.from_pretrained(name, output_loading_info=True, **kwargs)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TowerError(f"{what} {name!r}: cannot load its weights ({first})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(k for k in info.get("unexpected_keys") or ()
                        if not k.startswith(_TEXT_PREFIXES) and not k.endswith("position_ids"))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing or unexpected or mismatched:
        def show(keys):
            return f"{len(keys)} ({', '.join(map(str, keys[:3]))}{', ...' if len(keys) > 3 else ''})"

        hint = (" (a CLIPVisionModel checkpoint has no visual_projection: give the full CLIP checkpoint)"
                if missing == ["visual_projection.weight"] else "")
        raise TowerError(f"{what} {name!r} does not hold a complete {cls.__name__}: missing weights {show(missing)}, "
                         f"unexpected {show(unexpected)}, wrong shape {show(mismatched)}{hint}")
    return model.eval().requires_grad_(False) if frozen else model
