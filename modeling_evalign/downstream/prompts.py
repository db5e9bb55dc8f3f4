"""Prompt format of the proxy vision-language model (Video-LLaVA's) and its offline word-level tokenizer.

A prompt is ``"USER: " + "<video>" * n + "\\n" + question + " ASSISTANT:"`` (``<image>`` for the image path), with
the placeholder already expanded to one token per visual token, as VideoLlava's processor would expand it; the
answer follows and ends with the tokenizer's eos token ``</s>``. The tokenizer prepends ``<s>``.

:func:`build_tokenizer` makes a ``PreTrainedTokenizerFast`` with a closed word-level vocabulary (every question,
answer and label of :mod:`.questions`, the prompt words and the special tokens ``<unk> <s> </s> <pad> <image>
<video>``) with the ``tokenizers`` library, offline; ``save_pretrained`` writes a normal HF fast tokenizer that
``AutoTokenizer.from_pretrained`` loads. Token ids are assigned in sorted order, so two builds agree exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "IMAGE_TOKEN",
    "SPECIAL_TOKENS",
    "VIDEO_TOKEN",
    "build_tokenizer",
    "decode_answer",
    "encode_answer",
    "encode_prompt",
    "format_prompt",
]

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, VIDEO_TOKEN)  # ids 0..5 in this order
_PLACEHOLDER = {"video": VIDEO_TOKEN, "image": IMAGE_TOKEN}
PROMPT_WORDS = "USER: ASSISTANT:"


def _placeholder(modality: str) -> str:
    if modality not in _PLACEHOLDER:
        raise ValueError(f"modality={modality!r}: expected 'video' or 'image'")
    return _PLACEHOLDER[modality]


def format_prompt(question: str, modality: str, num_visual_tokens: int) -> str:
    """``"USER: <video>*n\\n{question} ASSISTANT:"`` (``<image>`` for ``modality="image"``)."""
    token = _placeholder(modality)
    if int(num_visual_tokens) < 1:
        raise ValueError(f"num_visual_tokens={num_visual_tokens!r}: expected >= 1")
    if not question or not question.strip():
        raise ValueError("question must be a non-empty string")
    return f"USER: {token * int(num_visual_tokens)}\n{question} ASSISTANT:"


def encode_prompt(tokenizer, question: str, modality: str, num_visual_tokens: int):
    """The prompt's ids ``LongTensor [1, L]`` (``<s>`` first); exactly ``num_visual_tokens`` placeholder ids, or
    a ValueError (the tokenizer does not know the placeholder as one special token)."""
    ids = tokenizer(format_prompt(question, modality, num_visual_tokens), return_tensors="pt").input_ids
    token_id = tokenizer.convert_tokens_to_ids(_placeholder(modality))
    found = int((ids == token_id).sum())
    if found != int(num_visual_tokens):
        raise ValueError(f"prompt encodes {found} {_placeholder(modality)} tokens, expected {num_visual_tokens}: "
                         "the tokenizer must hold the placeholder as a special token")
    unk = tokenizer.unk_token_id
    if unk is not None and bool((ids == unk).any()):
        raise ValueError(f"question {question!r} has words outside the tokenizer's vocabulary")
    return ids


def encode_answer(tokenizer, answer: str) -> list[int]:
    """An answer's ids as the model should generate them: its words then the eos id (no ``<s>``)."""
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    if tokenizer.unk_token_id in ids:
        raise ValueError(f"answer {answer!r} has words outside the tokenizer's vocabulary")
    return list(ids) + [tokenizer.eos_token_id]


def decode_answer(tokenizer, ids: Sequence[int]) -> str:
    """Generated ids -> answer text (cut at the first eos)."""
    ids = list(ids)
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


def build_tokenizer(texts: Iterable[str]):
    """A word-level ``PreTrainedTokenizerFast`` whose vocabulary is every word of ``texts`` plus the prompt words
    and :data:`SPECIAL_TOKENS` (typically ``texts = questions.all_texts(labels)``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()  # words and punctuation runs; "\n" separates like a space
    words = {w for text in list(texts) + [PROMPT_WORDS] for w, _ in pre.pre_tokenize_str(text)}
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in sorted(words - set(vocab)):
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN},
        model_max_length=4096, padding_side="left",
    )
    return tok
