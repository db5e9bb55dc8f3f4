"""One tower naming across configs (``<role>_model_id`` + ``<role>_revision``, revision None = the default branch);
config.json files and keywords with the old names still load."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from modeling_evalign.contrastive.configuration_contrastive_image import ContrastiveImageAlignmentConfig
from modeling_evalign.reconstruction.configuration_reconstruction import ReconstructionAlignmentConfig
from modeling_evalign.triple_modal.configuration_triple_modal_image import TripleModalImageAlignmentConfig

OLD = {  # config.json as written before the rename
    "evalign_contrastive_image": ({"clip_model_name_or_path": "org/clip-a", "clip_revision": "v1"},
                                  {"clip_model_id": "org/clip-a", "clip_revision": "v1"}),
    "evalign_triple_modal_image": ({"clip_model_name_or_path": "org/clip-a", "clip_revision": "main",
                                    "text_model_name_or_path": "org/text-b", "text_revision": "main"},
                                   {"clip_model_id": "org/clip-a", "text_model_id": "org/text-b", "text_revision": "main"}),
    "evalign_reconstruction": ({"clip_model_name_or_path": "org/clip-336"}, {"clip_model_id": "org/clip-336"}),
}


@pytest.mark.parametrize("model_type", sorted(OLD))
def test_old_config_json_loads_under_the_new_names(model_type, tmp_path):
    old, want = OLD[model_type]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, **old}))
    config = AutoConfig.from_pretrained(tmp_path)
    for field, value in want.items():
        assert getattr(config, field) == value
    saved = config.to_dict()
    assert not {"clip_model_name_or_path", "text_model_name_or_path"} & set(saved)  # written with the new names
    assert {k: saved[k] for k in want} == want
    # the old attribute name reads the field (transformers' attribute_map)
    assert config.clip_model_name_or_path == want["clip_model_id"]


def test_new_names_and_defaults():
    image = ContrastiveImageAlignmentConfig(clip_model_id="org/x")
    assert image.clip_model_id == "org/x" and image.clip_revision is None
    assert ContrastiveImageAlignmentConfig(clip_model_name_or_path="org/y").clip_model_id == "org/y"  # the brief's name
    triple = TripleModalImageAlignmentConfig(clip_model_id="org/x", clip_revision="r1")
    assert (triple.text_model_id, triple.text_revision) == ("org/x", "r1")  # the CLIP checkpoint's own text tower
    assert TripleModalImageAlignmentConfig(text_model_id="org/t").text_revision is None
    assert ReconstructionAlignmentConfig().clip_revision is None
    with pytest.raises(ValueError, match="clip_model_id"):
        ContrastiveImageAlignmentConfig(clip_model_id="")


def test_brief_class_names_are_aliases_of_the_transformers_style_names():
    import modeling_evalign as ev

    for name in ("Lightweight", "Contrastive", "TripleModal", "Reconstruction"):
        assert getattr(ev, f"{name}AlignmentModule") is getattr(ev, f"{name}AlignmentModel")
    assert ev.LightweightAlignmentModule.__name__ == "LightweightAlignmentModel"
