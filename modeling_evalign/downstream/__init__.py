"""Downstream proof (issue 19): an RGB-trained vision-language model reads aligned events, and speculative decoding
with an event draft.

- ``questions``: the closed question set and its ground truth from the generator's metadata (``window_answers``).
- ``prompts``: Video-LLaVA's prompt format, the offline word-level tokenizer.
- ``proxy_vlm``: the proxy ``VideoLlavaForConditionalGeneration`` (target + distilled draft) pretrained here on the
  proxy CLIP tower (``ensure_proxy_vlm``).
- ``visual``, ``generation``: visual tokens into the VLM's embeddings; greedy decoding, acceptance, speedup.
- ``evaluate``: the per-duration downstream table.

Names are imported on first use (no heavy imports at package import).
"""

from ..utils.lazy_exports import lazy_exports

_LAZY = {
    "QUESTION_TYPES": "questions",
    "QUESTIONS": "questions",
    "window_answers": "questions",
    "format_prompt": "prompts",
    "encode_prompt": "prompts",
    "encode_answer": "prompts",
    "decode_answer": "prompts",
    "build_tokenizer": "prompts",
    "ProxyVlmConfig": "proxy_vlm",
    "ensure_proxy_vlm": "proxy_vlm",
    "proxy_vlm_dir": "proxy_vlm",
    "tower_features": "visual",
    "visual_inputs_embeds": "visual",
    "greedy_answers": "generation",
    "trace_acceptance": "generation",
    "measure_speedup": "generation",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
