"""Offline Qwen2-style tokenizers for tiny random backbones (tests, demo, toy runs).

Real checkpoints ship their own tokenizer; these exist so that a backbone in the real
architecture can be built, saved in its original layout and loaded back with nothing
downloaded.  The vocabulary is a byte-level BPE trained on a small built-in corpus; the
special tokens are Qwen2 / Qwen2-VL's, so chat templates and vision placeholders behave
as with the released tokenizer.
"""
from __future__ import annotations

from transformers import PreTrainedTokenizerFast

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# The chat template of Qwen2 / Qwen2.5-VL instruct models (text and vision parts).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "You are a helpful assistant. Answer the questions.",
    "Answer with the option's letter from the given choices directly.",
    "Select the best answer to the following multiple-choice question based on the video.",
    "Only give the best option. Best option: (A) (B) (C) (D) (E)",
    "What is the scene at the beginning of the video? A. B. C. D. E.",
    "Respond with only the letter (A, B, C, or D) of the correct option.",
    "the a an of to in is was what who where when why how which color red green blue",
    "0 1 2 3 4 5 6 7 8 9 10 seconds minutes frame frames time <think> </think> <answer> </answer>",
]


def tiny_qwen_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Qwen2's special tokens and chat template.

    Token ids: the 8 special tokens come first (0-7), then the 256 byte symbols, then
    merges up to `vocab_size`.  The class is transformers' Qwen2 tokenizer, so
    `AutoTokenizer` / `AutoProcessor` load a saved copy like a released one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None)
    fast.chat_template = QWEN_CHAT_TEMPLATE
    return fast
