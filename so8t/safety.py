"""Safety head: three-way classifier on the final-norm hidden state of the last non-pad token.

``Linear(hidden, hidden) -> GELU -> Linear(hidden, 3)``; classes ``ALLOW``, ``ESCALATE``, ``REFUSE`` in that
order (logit index = position in :data:`SAFETY_CLASSES`). The module is an ``nn.Sequential`` so its state
dict keys are ``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``; the SO8T gates file stores them with the
prefix ``safety_head.``. Row vectors: ``logits = gelu(h @ W0.T + b0) @ W2.T + b2``.
"""

from __future__ import annotations

import torch
from torch import nn

#: Class names, in logit order.
SAFETY_CLASSES: tuple[str, ...] = ("ALLOW", "ESCALATE", "REFUSE")

#: Key prefix of the safety head's tensors in ``so8t_gates.safetensors``.
STATE_PREFIX = "safety_head."


def last_token_index(attention_mask: torch.Tensor | None, batch: int, seq_len: int) -> torch.Tensor:
    """Index of the last non-pad token per row (``[batch]`` long). Works for left and right padding.

    Without a mask every token counts, so the index is ``seq_len - 1``. A row with no real token maps
    to index 0.
    """
    if attention_mask is None:
        return torch.full((batch,), seq_len - 1, dtype=torch.long)
    positions = torch.arange(1, seq_len + 1, device=attention_mask.device)
    return ((attention_mask != 0).long() * positions).argmax(dim=-1)


class SafetyHead(nn.Sequential):
    """``Linear(hidden, hidden) -> GELU -> Linear(hidden, 3)`` over :data:`SAFETY_CLASSES`."""

    classes = SAFETY_CLASSES

    def __init__(self, hidden_size: int, seed: int | None = None):
        generator_state = None
        if seed is not None:  # deterministic init without touching the global RNG stream for callers
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        try:
            super().__init__(
                nn.Linear(hidden_size, hidden_size),
                nn.GELU(),
                nn.Linear(hidden_size, len(SAFETY_CLASSES)),
            )
        finally:
            if generator_state is not None:
                torch.random.set_rng_state(generator_state)
        self.hidden_size = hidden_size

    def classify(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Safety logits ``[batch, 3]`` from final-norm hidden states ``[batch, seq, hidden]``."""
        batch, seq_len, _ = hidden_states.shape
        index = last_token_index(attention_mask, batch, seq_len).to(hidden_states.device)
        last = hidden_states[torch.arange(batch, device=hidden_states.device), index]
        return self(last.to(self[0].weight.dtype))

    def file_state(self) -> dict[str, torch.Tensor]:
        """State dict with the gates-file prefix, float32, contiguous."""
        return {
            STATE_PREFIX + key: value.detach().to(torch.float32).contiguous()
            for key, value in self.state_dict().items()
        }

    @classmethod
    def from_file_state(cls, tensors: dict[str, torch.Tensor]) -> SafetyHead:
        """Rebuild from the ``safety_head.*`` tensors of a gates file."""
        return cls.from_state(
            {k[len(STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
        )

    @classmethod
    def from_state(cls, state: dict) -> SafetyHead:
        """Rebuild from unprefixed tensors (``0.weight`` ...: torch tensors or numpy arrays), keeping their
        dtype (a float64 state gives a float64 head)."""
        tensors = {k: torch.as_tensor(v) for k, v in state.items()}
        head = cls(int(tensors["0.weight"].shape[1])).to(tensors["0.weight"].dtype)
        head.load_state_dict(tensors)
        return head
