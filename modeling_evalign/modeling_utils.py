"""Shared behaviour of every evalign strategy model: atomic saves that load with trust_remote_code."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from transformers import PreTrainedModel

from .hub.remote_code import write_bundle
from .utils.io_utils import atomic_directory, atomic_write_json


class EvalignPreTrainedModel(PreTrainedModel):
    """Base class of the strategy models.

    ``save_pretrained`` writes to a temporary directory and renames it into place, so an
    interrupted save never leaves a half-written checkpoint, and it always bundles the module
    files plus ``auto_map`` so ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works in
    a process where ``modeling_evalign`` is not installed.
    """

    base_model_prefix = "evalign"
    main_input_name = "event_features"
    supports_gradient_checkpointing = False

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        if push_to_hub:
            raise ValueError(
                "push_to_hub is not done inside save_pretrained: use modeling_evalign.hub.push.push_to_hub(folder, repo_id)."
            )
        save_directory = Path(save_directory)
        if save_directory.exists() and not save_directory.is_dir():
            raise NotADirectoryError(f"save_pretrained target {save_directory} exists and is not a directory")
        # Replaces only what a previous save wrote (its manifest); anything else already there (a model card,
        # training_info.json, a user's files and folders) is carried into the new directory.
        with atomic_directory(save_directory, keep_foreign=True) as tmp:
            # transformers' own remote-code copy cannot follow our package-relative imports.
            with auto_class_disabled(self, self.config):
                super().save_pretrained(tmp, *args, **kwargs)
            auto_map = write_bundle(self, tmp)
            config_path = tmp / "config.json"
            config = json.loads(config_path.read_text())
            config["auto_map"] = auto_map
            atomic_write_json(config_path, config)

    @staticmethod
    def _check_features(x: torch.Tensor, name: str, dim: int, *, allow_tokens: bool = True) -> None:
        """Validate a feature tensor's last dimension and rank with a message naming ``name``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        ranks = (2, 3) if allow_tokens else (2,)
        if x.dim() not in ranks or x.shape[-1] != dim:
            expected = "[B, D]" + (" or [B, N, D]" if allow_tokens else "")
            raise ValueError(f"{name} has shape {tuple(x.shape)}: expected {expected} with D={dim}")


def flatten_tokens(x: torch.Tensor) -> torch.Tensor:
    """The rows a token-layout loss and retrieval compare: ``[B, D]`` as it is, tokens ``[B, N, D]`` flattened to
    ``[B, N * D]`` (the layout that tells windows of one camera path apart)."""
    return x if x.dim() == 2 else x.flatten(1)


_UNSET = object()


@contextlib.contextmanager
def auto_class_disabled(*objects):
    """Hide ``_auto_class`` on the given objects and their classes while transformers saves.

    ``register_for_auto_class`` sets it on the CLASS, and transformers then copies the module files
    itself, which fails on our package-relative imports; we write the bundle ourselves instead.
    """
    saved = []
    for obj in objects:
        for holder in (obj, type(obj)):
            saved.append((holder, holder.__dict__.get("_auto_class", _UNSET)))
            holder._auto_class = None
    try:
        yield
    finally:
        for holder, value in reversed(saved):
            if value is _UNSET:
                delattr(holder, "_auto_class")
            else:
                holder._auto_class = value
