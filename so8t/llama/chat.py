"""Qwen2-VL's chat format (ChatML), the one place prompts are rendered for llama.cpp.

``chat_prompt(user)`` for one user turn; ``chatml(messages)`` for an OpenAI-style conversation (``so8t
serve``). Both end where the assistant's answer starts (``<|im_start|>assistant\n``), exactly what the
safety head is trained to read (so8t/training/data.py renders the same template).
"""

from __future__ import annotations

CHATML_SYSTEM = "You are a helpful assistant."
ROLES = ("system", "user", "assistant")


def chat_prompt(user: str, system: str | None = CHATML_SYSTEM) -> str:
    """Qwen2-VL's ChatML prompt for one user turn, ending where the assistant's answer starts."""
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return f"{head}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def chatml(messages: list[dict[str, str]]) -> str:
    """A conversation of ``{"role", "content"}`` text messages in ChatML, with Qwen2-VL's default system
    turn when the first message is not one; ``ValueError`` for another role or a non-string content."""
    turns = list(messages)
    if not turns or turns[0].get("role") != "system":
        turns.insert(0, {"role": "system", "content": CHATML_SYSTEM})
    parts = []
    for turn in turns:
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise ValueError(f"a message needs a role in {ROLES} and a string content, got {role!r}")
        parts.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    return "".join(parts) + "<|im_start|>assistant\n"
