"""evalign: align event-camera features to RGB/CLIP feature spaces.

Importing the package registers every strategy of the registry (``registry``) with ``AutoConfig``
(config modules only); each model registers with ``AutoModel`` when its first config is created, so the
import pulls in neither transformers' modeling code nor accelerate or scipy. Everything else (datasets,
h5py, peft, accelerate, plotting) is imported on first use of the name that needs it.

Layout, by concern: one folder per strategy (``lightweight``, ``contrastive``, ``triple_modal``,
``reconstruction``); inputs (``events``, ``data``, ``features``); ``training`` (the one loop);
``evaluation``; ``hub``; ``pipeline`` (the main job); ``utils``. The root keeps the strategy registry
(``registry``), the shared model base (``configuration_utils``, ``modeling_utils``, ``modeling_outputs``,
``losses``, ``token_grid``) and ``selection``.
"""

from __future__ import annotations

from .hub.auto_registration import register_strategies
from .utils.lazy_exports import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily on first attribute access)
_LAZY: dict[str, str] = {
    # strategies
    "LightweightAlignmentConfig": "modeling_evalign.lightweight.configuration_lightweight",
    "LightweightAlignmentModel": "modeling_evalign.lightweight.modeling_lightweight",
    "LightweightAlignmentModule": "modeling_evalign.lightweight.modeling_lightweight",  # the brief's name
    "ContrastiveAlignmentConfig": "modeling_evalign.contrastive.configuration_contrastive",
    "ContrastiveAlignmentModel": "modeling_evalign.contrastive.modeling_contrastive",
    "ContrastiveAlignmentModule": "modeling_evalign.contrastive.modeling_contrastive",  # the brief's name
    "ContrastiveImageAlignmentConfig": "modeling_evalign.contrastive.configuration_contrastive_image",
    "ContrastiveImageAlignmentModel": "modeling_evalign.contrastive.modeling_contrastive_image",
    "TrainConfig": "modeling_evalign.training.config",
    "TripleModalAlignmentConfig": "modeling_evalign.triple_modal.configuration_triple_modal",
    "TripleModalAlignmentModel": "modeling_evalign.triple_modal.modeling_triple_modal",
    "TripleModalAlignmentModule": "modeling_evalign.triple_modal.modeling_triple_modal",  # the brief's name
    "TripleModalImageAlignmentConfig": "modeling_evalign.triple_modal.configuration_triple_modal_image",
    "TripleModalImageAlignmentModel": "modeling_evalign.triple_modal.modeling_triple_modal_image",
    "ReconstructionAlignmentConfig": "modeling_evalign.reconstruction.configuration_reconstruction",
    "ReconstructionAlignmentModel": "modeling_evalign.reconstruction.modeling_reconstruction",
    "ReconstructionAlignmentModule": "modeling_evalign.reconstruction.modeling_reconstruction",  # the brief's name
    "encode_windows": "modeling_evalign.reconstruction.modeling_reconstruction",
    "E2VIDConfig": "modeling_evalign.reconstruction.configuration_e2vid",
    "E2VIDModel": "modeling_evalign.reconstruction.modeling_e2vid",
    "FireNetConfig": "modeling_evalign.reconstruction.configuration_firenet",
    "FireNetModel": "modeling_evalign.reconstruction.modeling_firenet",
    "load_original_checkpoint": "modeling_evalign.reconstruction.checkpoint",
    # training and data
    "ContrastiveAlignmentTrainer": "modeling_evalign.training.trainer",
    "TrainingResult": "modeling_evalign.training.trainer",
    "AlignmentDataset": "modeling_evalign.data.alignment_dataset",
    "DsecAlignmentBuilder": "modeling_evalign.data.dsec_builder",
    # evaluation
    "diagnose": "modeling_evalign.evaluation.diagnosis",
    "DiagnosisReport": "modeling_evalign.evaluation.diagnosis",
    "measure_acceptance": "modeling_evalign.evaluation.speculative",
    "acceptance_from_trace": "modeling_evalign.evaluation.speculative",
    "feature_agreement_proxy": "modeling_evalign.evaluation.speculative",
    "AcceptanceResult": "modeling_evalign.evaluation.speculative",
    "cross_duration_matrix": "modeling_evalign.evaluation.cross_duration",
    # hub
    "push_to_hub": "modeling_evalign.hub.push",
    "write_model_card": "modeling_evalign.hub.cards",
    # selection
    "auto_select_alignment_strategy": "modeling_evalign.selection",
    "print_strategy_recommendation": "modeling_evalign.selection",
    "StrategyRecommendation": "modeling_evalign.selection",
    # events (representations, DSEC reading, simulation)
    "voxel_grid": "modeling_evalign.events.representations",
    "eventgpt_frames": "modeling_evalign.events.representations",
    "event_histogram_image": "modeling_evalign.events.representations",
    "count_frames": "modeling_evalign.events.representations",
    "DsecEventReader": "modeling_evalign.events.dsec_reader",
    "DsecSequence": "modeling_evalign.events.dsec_reader",
    "EventWindow": "modeling_evalign.events.dsec_reader",
    "EventSimulator": "modeling_evalign.events.simulator",
    "write_synthetic_dsec": "modeling_evalign.events.synthetic_dsec",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

register_strategies()
