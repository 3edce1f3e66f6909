"""The probe prompts the parity verdict is measured on.

Several short chat turns in English and Japanese, each wrapped in Qwen2-VL's ChatML prompt
(:func:`so8t.llama.chat.chat_prompt`) and scored at every position (the logits llama.cpp produces while
reading the prompt). Each prompt is its own sequence (positions restart at 0, no shared KV cache).

``MIN_POSITIONS``: a verdict rests on at least this many scored positions in all. With the Qwen2 BPE
vocabulary the prompts below give about 190; a tokenizer that yields fewer makes the check an ERROR
rather than a verdict on too little evidence.
"""

from __future__ import annotations

PROBE_PROMPTS: tuple[str, ...] = (
    "What does a rotation in SO(8) preserve, and why does it not change the length of a vector?",
    "Write a short haiku about autumn leaves falling into a quiet river.",
    "Explain in two sentences how a transformer layer mixes information between tokens.",
    "日本の首都はどこですか？その都市について一文で説明してください。",
    "量子化されたモデルの精度を確かめる方法を簡単に教えてください。",
    "List three safe ways to store kitchen knives at home.",
)
MIN_POSITIONS = 128
