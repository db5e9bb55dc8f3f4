"""Reconstruction (events -> E2VID/FireNet frames -> frozen CLIP; no training) and its two networks."""

from __future__ import annotations

from ..registry import StrategySpec, register_strategy

_PKG = "modeling_evalign.reconstruction"

for name, config, model, model_type in (
    ("e2vid", "configuration_e2vid:E2VIDConfig", "modeling_e2vid:E2VIDModel", "evalign_e2vid"),
    ("firenet", "configuration_firenet:FireNetConfig", "modeling_firenet:FireNetModel", "evalign_firenet"),
    ("reconstruction", "configuration_reconstruction:ReconstructionAlignmentConfig",
     "modeling_reconstruction:ReconstructionAlignmentModel", "evalign_reconstruction"),
):
    register_strategy(StrategySpec(
        name=name, config_class=f"{_PKG}.{config}", model_class=f"{_PKG}.{model}", model_type=model_type,
        summary="Events -> E2VID/FireNet intensity frames -> frozen CLIP; no training." if name == "reconstruction" else "",
        profile=(0, 0, "none (pre-trained E2VID/FireNet)", "~15 ms", "medium") if name == "reconstruction" else None,
    ))
