"""Convert the brief's legacy ``.pt`` alignment checkpoints into Hugging Face directories.

    python -m modeling_evalign.convert_legacy checkpoints/alignment_1s/lightweight_alignment.pt evalign-1s

The brief saves ``torch.save({"model_state_dict": ..., "config": <LightweightAlignmentConfig or
ContrastiveAlignmentConfig object>, "training_stats": ..., "optimizer_state_dict": ...})``. Unpickling the
config object would normally need the brief's ``feature_alignment`` package and ``weights_only=False``,
which runs whatever the file says. Here the file is read with ``torch.load(weights_only=True)`` and an
allowlist: tensors, storages, plain containers, and the brief's config class names (``AlignmentConfig``,
``LightweightAlignmentConfig``, ``ContrastiveAlignmentConfig``, under any module path), which become plain
dicts of their fields. Anything else is refused before it runs, naming the class or function it met.

The output (``LegacyAlignmentModel``, ``model_type: evalign_legacy``) keeps the legacy layers and parameter
names, so ``AutoModel.from_pretrained(out)`` gives the legacy outputs; ``training_info.json`` records the
legacy config, training stats and the keys not converted (contrastive projection heads, logit scale and
queue: loss-only parts). Legacy feature files (``features/event_features.pt`` / ``target_features.pt``)
need no conversion: ``AlignmentDataset.from_directory`` reads them.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

LEGACY_CONFIG_CLASSES = ("AlignmentConfig", "LightweightAlignmentConfig", "ContrastiveAlignmentConfig")
FLAT_PIXELS = 224 * 224 * 3  # the brief's 200 ms run aligned flattened 224x224 RGB pixels, not features
# loss-only parts of the legacy contrastive module (the aligned features never pass through them)
_CONTRASTIVE_DROPPED = ("event_projection_head.", "target_projection_head.", "logit_scale", "queue", "queue_ptr")
# field defaults of the legacy configs (AlignmentConfig, then the lightweight additions)
_DEFAULTS = {"event_dim": 768, "target_dim": 1024, "hidden_dim": 512, "num_layers": 2, "dropout": 0.1,
             "use_layer_norm": True, "adapter_type": "mlp", "use_residual": True, "use_whitening": False}


class LegacyCheckpointError(ValueError):
    """A legacy checkpoint that cannot be converted (refused class, missing keys, unknown layout)."""


class _LegacyConfig:
    """Stand-in for a pickled legacy config object: keeps its fields, runs nothing."""

    legacy_class = "AlignmentConfig"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.legacy_class}: expected a dict of fields, got {type(state).__name__}")
        self.__dict__["fields"] = dict(state)


def pickle_globals(path: str | Path) -> list[str]:
    """``module.name`` of every global the checkpoint's pickle refers to, read opcode by opcode (nothing runs)."""
    path = Path(path)
    found: list[str] = []

    def scan(stream) -> None:
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST"):
                found.append(".".join(str(arg).split(" ", 1)))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    raise LegacyCheckpointError(f"{path}: a zip file without data.pkl is not a torch checkpoint")
                with archive.open(name) as stream:
                    scan(stream)
        else:  # legacy torch format: magic number, protocol, sys info, then the object
            with open(path, "rb") as stream:
                for _ in range(4):
                    scan(stream)
    except (ValueError, EOFError) as err:
        if isinstance(err, LegacyCheckpointError):
            raise
        raise LegacyCheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    return found


def load_legacy_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict with its config object as a plain dict (``{"__class__": name, **fields}``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"legacy checkpoint {str(path)!r} does not exist")
    names = pickle_globals(path)
    stand_ins = []
    for full in dict.fromkeys(names):
        cls_name = full.rsplit(".", 1)[-1]
        if cls_name in LEGACY_CONFIG_CLASSES:
            stand_ins.append((type(cls_name, (_LegacyConfig,), {"legacy_class": cls_name}), full))
    try:
        with torch.serialization.safe_globals(stand_ins):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        met = re.search(r"GLOBAL (\S+)", str(err))
        allowed = {full for _, full in stand_ins}
        other = [n for n in names if n not in allowed and not n.startswith(("torch.", "collections.OrderedDict"))]
        what = met.group(1) if met else (other[0] if other else str(err).split(".")[0])
        raise LegacyCheckpointError(
            f"{path}: refused: unpickling it needs {what}, which is not a tensor, a storage, a plain container "
            f"or one of the brief's config classes ({', '.join(LEGACY_CONFIG_CLASSES)}); nothing in the file was "
            "run (read with torch.load(weights_only=True))"
        ) from None
    except (RuntimeError, EOFError) as err:
        raise LegacyCheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt: {err})") from err
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint or "config" not in checkpoint:
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise LegacyCheckpointError(f"{path}: expected a dict with 'model_state_dict' and 'config', found {found}")
    config = checkpoint["config"]
    if isinstance(config, _LegacyConfig):
        checkpoint["config"] = {"__class__": config.legacy_class, **config.fields}
    elif not isinstance(config, dict):
        raise LegacyCheckpointError(f"{path}: 'config' is a {type(config).__name__}, expected a legacy config object")
    return checkpoint


def _legacy_config(path: Path, checkpoint: dict[str, Any]):
    """The LegacyAlignmentConfig for a loaded legacy checkpoint (architecture from its class and keys)."""
    from .legacy.configuration_legacy import LegacyAlignmentConfig

    fields = dict(checkpoint["config"])
    cls = fields.pop("__class__", None)
    keys = list(checkpoint["model_state_dict"])
    if cls not in ("LightweightAlignmentConfig", "ContrastiveAlignmentConfig"):  # base class or a plain dict
        if any(k.startswith("event_projector.") for k in keys):
            cls = "ContrastiveAlignmentConfig"
        elif any(k.startswith("adapter.") for k in keys):
            cls = "LightweightAlignmentConfig"
        else:
            raise LegacyCheckpointError(
                f"{path}: cannot tell the legacy strategy (config class {cls!r}, state-dict keys {keys[:4]}...): "
                "expected a lightweight ('adapter.*') or contrastive ('event_projector.*') module"
            )
    values = {k: fields.get(k, v) for k, v in _DEFAULTS.items()}
    if cls == "ContrastiveAlignmentConfig":
        values.update(adapter_type="mlp", use_residual=False, use_whitening=False)
    notes = []
    if values["event_dim"] == FLAT_PIXELS:
        notes.append("inputs are flattened 224x224x3 RGB pixels (150,528 values in [0, 1], CHW order), not encoder "
                     "features: feed the same flattened event images the legacy run used")
    if values["target_dim"] == FLAT_PIXELS:
        notes.append("targets were flattened 224x224x3 RGB pixels: aligned outputs live in pixel space, not CLIP space")
    try:
        config = LegacyAlignmentConfig(source_class=cls, legacy_config={"__class__": cls, **fields},
                                       input_description="; ".join(notes) or None, **values)
    except (TypeError, ValueError) as err:
        raise LegacyCheckpointError(f"{path}: legacy config {fields} does not describe a convertible module: {err}") from err
    return config, notes


def convert_legacy_checkpoint(src: str | Path, out_dir: str | Path) -> Path:
    """Convert ``src`` into the Hugging Face directory ``out_dir`` (written atomically); returns it."""
    import torch

    from .legacy.modeling_legacy import LegacyAlignmentModel
    from .utils.io_utils import atomic_directory, atomic_write_json, check_output_directory

    src, out_dir = Path(src), Path(out_dir)
    check_output_directory(out_dir)  # refuse a user's folder or file before reading anything
    checkpoint = load_legacy_checkpoint(src)
    config, notes = _legacy_config(src, checkpoint)
    state = {str(k): v for k, v in checkpoint["model_state_dict"].items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise LegacyCheckpointError(f"{src}: model_state_dict entries {bad[:5]} are not tensors")
    dropped = sorted(k for k in state if k.startswith(("event_encoder.", "target_encoder."))
                     or (config.source_class == "ContrastiveAlignmentConfig" and k.startswith(_CONTRASTIVE_DROPPED)))
    for k in dropped:
        state.pop(k)
    model = LegacyAlignmentModel(config)
    result = model.load_state_dict(state, strict=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = {k: (tuple(v.shape), expected[k]) for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]}
    if result.missing_keys or result.unexpected_keys or wrong:
        raise LegacyCheckpointError(
            f"{src}: the weights do not match the legacy {config.source_class} layout {config.adapter_type!r} "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}, shape found/expected "
            f"{dict(list(wrong.items())[:3])})"
        )
    model.eval()
    stats = checkpoint.get("training_stats")
    info = {
        "strategy": "legacy",
        "model_type": config.model_type,
        "converted_from": str(src),
        "legacy_config": config.legacy_config,
        "legacy_training_stats": stats if isinstance(stats, dict) else None,
        "dropped_keys": dropped,
        "notes": notes,
        "dims": {"event_dim": config.event_dim, "target_dim": config.target_dim},
    }
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        atomic_write_json(tmp / "training_info.json", info)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    from .utils.cli import ArgumentParser

    parser = ArgumentParser(prog="python -m modeling_evalign.convert_legacy", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the brief's .pt file (read with weights_only=True and an allowlist)")
    parser.add_argument("out_dir", help="output Hugging Face directory (replaced atomically)")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        parser.error(f"checkpoint {args.checkpoint!r} does not exist")
    import json

    out = convert_legacy_checkpoint(args.checkpoint, args.out_dir)
    info = json.loads((out / "training_info.json").read_text())
    print(f"wrote {out}: AutoModel.from_pretrained({str(out)!r}) (legacy {info['legacy_config']['__class__']}, "
          f"{len(info['dropped_keys'])} loss-only keys dropped)")
    for note in info["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    from .utils.cli import run_cli

    raise SystemExit(run_cli(main, prog="python -m modeling_evalign.convert_legacy"))
