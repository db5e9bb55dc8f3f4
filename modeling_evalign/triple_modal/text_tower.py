"""TEST-ONLY helpers: a word-level tokenizer and a tiny random CLIP text tower saved like a Hub repo.

Real runs point ``TripleModalAlignmentConfig.text_model_id`` at a CLIP repo (e.g.
``openai/clip-vit-large-patch14``) whose BPE tokenizer and trained text tower give meaningful text
features. The tiny tower here is randomly initialised: different prompts give different embeddings,
which is all the tests need, and nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def _words(texts: Iterable[str]) -> list[str]:
    return sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})


def build_word_level_tokenizer(texts: Iterable[str], model_max_length: int = 32):
    """A ``PreTrainedTokenizerFast`` over the lower-cased words and punctuation of ``texts`` (test-only).

    Every sequence is wrapped as ``[BOS] ... [EOS]`` (the CLIP text tower pools at the EOS token);
    unknown words map to ``[UNK]``; padding uses ``[PAD]`` (id 0).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in _words(texts):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[BOS]",
        eos_token="[EOS]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        model_max_length=model_max_length,
    )


def save_tiny_text_tower(
    path: str | os.PathLike,
    texts: Iterable[str],
    *,
    projection_dim: int = 16,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Save a random ``CLIPTextModelWithProjection`` plus a word-level tokenizer to ``path`` (test-only).

    ``texts`` give the vocabulary (every prompt the test will encode). The directory loads with
    ``CLIPTextModelWithProjection.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``,
    i.e. it can be used as ``text_model_id``. Returns ``path``.
    """
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from ..utils.io_utils import atomic_directory

    tokenizer = build_word_level_tokenizer(texts)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection_dim,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config).eval()
    path = Path(path)
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path
