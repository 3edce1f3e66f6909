"""The streamed float64 reference: the SO8T text model evaluated decoder layer by decoder layer.

What it computes is what :class:`so8t.model.SO8TModel` computes for text-only token ids (transformers'
Qwen2-VL decoder with the gates applied on the gate sites), in float64, at every position of each
sequence (positions ``0..n-1``, one causal sequence each; row vectors, ``y = x @ W.T + b``)::

    h = E[ids]
    per layer:  a = RMSNorm(h);  q, k, v = a @ W.T + b;  RoPE(q, k);  causal GQA attention
                o = attn @ W_o.T;  o = o @ R_rot @ R_safe @ R_cmd   (gate by gate, per 8-dim block)
                h = h + o
                m = RMSNorm(h);  d = (silu(m @ W_gate.T) * (m @ W_up.T)) @ W_down.T;  d = d @ R_mlp
                h = h + d
    hidden = RMSNorm(h);  logits = hidden @ E_out.T        (E_out = E when tied, else lm_head)

with ``RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w``. Gate sites and their order come from
:mod:`so8t.adapters.qwen2vl`, the rotations from :meth:`SO8TCheckpoint.rotation` (float64).

Note [rope angles]: transformers computes ``inv_freq``, ``position * inv_freq``, cos and sin in float32
and casts them to the model dtype; llama.cpp also computes its angles in float32. The reference does the
same, so it differs from a float64 ``SO8TModel`` by float64 rounding only. For text-only input the three
M-RoPE sections see the same position, so M-RoPE is plain (neox-style) RoPE here.

Note [RMSNorm dtype]: transformers' ``Qwen2VLRMSNorm`` casts its input to float32 (an upcast for bf16
models, a *downcast* in a float64 model); the reference normalises in float64. Tests compare against
``SO8TModel`` with that norm patched to keep the input dtype.

Variants (:class:`Variant`): gates on or off (the plain source model), the RMSNorm eps (0 mirrors
the llama.cpp in llama-cpp-python 0.3.36, which ignores the file's eps: docs/reference.md section 5), and
``kv_f16``: the attention as llama.cpp computes it with its default F16 KV cache and flash attention off
(docs/reference.md section 16): keys (after RoPE) and values are stored as float16, ggml's F16 mat-muls
take their other operand, the queries (after RoPE) and the softmax probabilities, as float16 too, and
accumulate in float32; here those four are rounded to float16 and everything else stays float64.
Several variants share ONE pass over the weights: they are a leading batch axis of the activations.
Results are cached per (token ids, variant), so a pipeline validating three files computes each once.
With all-zero generators the gated and plain model are the same function and share one result.

Memory bound (the point of streaming; weights are read with plain file I/O, one tensor at a time, never
mapped): one tensor in its stored dtype plus its float64 copy (largest: ``ffn x hidden``, 110 MB for
Qwen2-VL-2B, 205 MB for 7B), the activations ``S x T x max(hidden, ffn)`` float64 (S variants, T tokens
in all), one vocabulary chunk ``vocab_chunk x hidden`` float64 (100 MB at 2B with the default 8192 rows),
and the logits ``S x T x vocab`` float64 that the caller asked for (194 MB per variant for 160 tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from so8t import bf16
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import SO8TCheckpoint

_F64 = torch.float64


@dataclass(frozen=True)
class Variant:
    """One model the pass evaluates: ``gates`` (False = the plain source model), RMSNorm ``eps``
    (None = the checkpoint's ``rms_norm_eps``) and ``kv_f16`` (llama.cpp's F16 KV cache rounding)."""

    gates: bool = True
    eps: float | None = None
    kv_f16: bool = False


@dataclass
class ReferenceOutput:
    """``logits`` ``[T, vocab]`` and final-norm ``hidden`` ``[T, hidden]`` (float64) of the concatenated
    sequences; ``offsets[i]:offsets[i+1]`` are the rows of sequence ``i``."""

    logits: np.ndarray
    hidden: np.ndarray
    offsets: tuple[int, ...]


def _round_f16(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x`` with the variants ``rows`` (a bool per leading index) rounded to float16 (to nearest, as ggml)."""
    if not bool(rows.any()):
        return x
    x = x.clone()
    x[rows] = x[rows].to(torch.float16).to(x.dtype)
    return x


class StreamedReference:
    """Float64 reference logits of an SO8T checkpoint, computed in one streamed pass per request.

    Args:
        so8t_dir: the SO8T checkpoint directory (``so8t convert`` output).
        vocab_chunk: rows of the output matrix projected at a time (bounds memory, see module docstring).

    Example:
        >>> ref = StreamedReference("qwen2vl-so8t")
        >>> outs = ref.run([[151644, 872, 198]], [Variant(eps=0.0), Variant(gates=False, eps=0.0)])
    """

    def __init__(self, so8t_dir: str | Path, vocab_chunk: int = 8192):
        self.checkpoint = SO8TCheckpoint(so8t_dir)
        self.reader = self.checkpoint.reader
        self.config = self.reader.text_config
        self.vocab_chunk = int(vocab_chunk)
        self.identity_gates = all(
            not bool(self.checkpoint.gate_generators(layer, gate).any())
            for layer in range(self.checkpoint.num_layers)
            for gate in qwen2vl.GATE_NAMES
        )
        self._cache: dict[tuple, ReferenceOutput] = {}
        self._observer = None

    def resolve(self, variant: Variant) -> tuple[bool, float, bool]:
        """``(gates applied, eps, kv_f16)`` that ``variant`` computes: identity gates count as no gates."""
        eps = float(self.config["rms_norm_eps"] if variant.eps is None else variant.eps)
        return variant.gates and not self.identity_gates, eps, bool(variant.kv_f16)

    def run(self, sequences: Sequence[Sequence[int]], variants: Sequence[Variant]) -> dict[Variant, ReferenceOutput]:
        """Reference outputs for each variant; the variants not cached yet share one pass."""
        seqs = tuple(tuple(int(i) for i in s) for s in sequences)
        if not seqs or any(not s for s in seqs):
            raise ValueError("the reference needs at least one non-empty token sequence")
        keys = {v: (seqs, self.resolve(v)) for v in variants}
        todo = sorted({k[1] for k in keys.values() if k not in self._cache})
        if todo:
            for resolved, out in zip(todo, self._forward(seqs, todo)):
                self._cache[(seqs, resolved)] = out
        return {v: self._cache[k] for v, k in keys.items()}

    def forget(self, sequences: Sequence[Sequence[int]], variant: Variant) -> None:
        """Drop one cached result (a variant the run will not ask for again)."""
        seqs = tuple(tuple(int(i) for i in s) for s in sequences)
        self._cache.pop((seqs, self.resolve(variant)), None)

    def observe(self, sequences: Sequence[Sequence[int]], observer, variant: Variant = Variant(),
                progress: bool = False) -> None:
        """Run the decoder layers of ``variant`` on ``sequences`` (no logits, no cache) and call
        ``observer(layer, module, x)`` with the float64 input ``x`` ``[1, T, in]`` of every Linear of every
        layer, in order (``module``: e.g. ``"self_attn.q_proj"``; the input of the un-gated Linear, so the
        gates act upstream of it). The importance matrix (so8t/imatrix/collect.py) is built on this."""
        seqs = tuple(tuple(int(i) for i in s) for s in sequences)
        if not seqs or any(not s for s in seqs):
            raise ValueError("the reference needs at least one non-empty token sequence")
        gates, eps, kv_f16 = self.resolve(variant)
        self._observer = observer
        try:
            self._decoder(seqs, torch.tensor([eps], dtype=_F64).view(-1, 1, 1), torch.tensor([gates]),
                          torch.tensor([kv_f16]), progress)
        finally:
            self._observer = None

    # -- the pass -----------------------------------------------------------------------------------

    def _weight(self, name: str) -> torch.Tensor:
        return torch.from_numpy(bf16.to_float64(self.reader.get(name)))

    def _linear(self, x: torch.Tensor, layer: int, module: str, bias: bool) -> torch.Tensor:
        prefix = qwen2vl.text_layer_tensor(layer, module)
        if self._observer is not None:
            self._observer(layer, module, x)
        y = x @ self._weight(prefix + ".weight").T
        return y + self._weight(prefix + ".bias") if bias else y

    def _norm(self, x: torch.Tensor, weight: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def _forward(self, seqs, resolved: list[tuple[bool, float, bool]]) -> list[ReferenceOutput]:
        eps = torch.tensor([e for _, e, _ in resolved], dtype=_F64).view(-1, 1, 1)
        h = self._decoder(seqs, eps, torch.tensor([g for g, _, _ in resolved]),
                          torch.tensor([f for _, _, f in resolved]))
        with torch.inference_mode():
            hidden = self._norm(h, self._weight(qwen2vl.FINAL_NORM), eps)
            logits = self._project(hidden)
        offsets = tuple(int(o) for o in np.cumsum([0, *map(len, seqs)]))
        return [ReferenceOutput(logits[i].numpy(), hidden[i].numpy(), offsets) for i in range(len(resolved))]

    def _decoder(self, seqs, eps, gated, kv_f16, progress: bool = False) -> torch.Tensor:
        """The residual stream ``[S, T, hidden]`` after the last decoder layer (S variants)."""
        from tqdm import tqdm

        ids = [i for s in seqs for i in s]
        embed = torch.cat([torch.from_numpy(bf16.to_float64(self.reader.get_rows(qwen2vl.EMBED_TOKENS, i, i + 1)))
                           for i in ids])
        h = embed.unsqueeze(0).repeat(len(gated), 1, 1)
        cos, sin = self._rope(seqs)
        with torch.inference_mode():
            for layer in tqdm(range(self.checkpoint.num_layers), desc="reference", unit="layer",
                              disable=not progress, leave=False):
                h = self._layer(h, layer, eps, gated, kv_f16, seqs, cos, sin)
        return h

    def _layer(self, h, layer, eps, gated, kv_f16, seqs, cos, sin) -> torch.Tensor:
        a = self._norm(h, self._weight(qwen2vl.text_layer_tensor(layer, "input_layernorm.weight")), eps)
        q = self._linear(a, layer, "self_attn.q_proj", bias=True)
        k = self._linear(a, layer, "self_attn.k_proj", bias=True)
        v = self._linear(a, layer, "self_attn.v_proj", bias=True)
        attn = self._attention(q, k, v, seqs, cos, sin, kv_f16)
        h = h + self._gate(self._linear(attn, layer, "self_attn.o_proj", bias=False), layer, "attention_output", gated)
        m = self._norm(h, self._weight(qwen2vl.text_layer_tensor(layer, "post_attention_layernorm.weight")), eps)
        act = torch.nn.functional.silu(self._linear(m, layer, "mlp.gate_proj", bias=False))
        act = act * self._linear(m, layer, "mlp.up_proj", bias=False)
        return h + self._gate(self._linear(act, layer, "mlp.down_proj", bias=False), layer, "mlp_output", gated)

    def _gate(self, y: torch.Tensor, layer: int, site_name: str, gated: torch.Tensor) -> torch.Tensor:
        """``y @ R_g1 @ R_g2 ...`` per 8-dim block, for the variants with gates (the others unchanged)."""
        if not bool(gated.any()):
            return y
        site = qwen2vl.site_named(site_name)
        blocks = y[gated].reshape(*y[gated].shape[:-1], -1, 8)
        for gate in site.gates:
            blocks = torch.einsum("stbi,bij->stbj", blocks, self.checkpoint.rotation(layer, gate))
        y = y.clone()
        y[gated] = blocks.reshape(y[gated].shape)
        return y

    def _rope(self, seqs) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[T, head_dim]`` (float32 angles, Note [rope angles]), positions restarting per sequence."""
        dim = int(self.config["head_dim"])
        inv_freq = 1.0 / (float(self.config["rope_theta"]) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        pos = torch.cat([torch.arange(len(s), dtype=torch.float32) for s in seqs])
        freqs = pos[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(_F64), emb.sin().to(_F64)

    def _attention(self, q, k, v, seqs, cos, sin, kv_f16) -> torch.Tensor:
        heads, kv_heads, dim = (int(self.config[k]) for k in ("num_attention_heads", "num_key_value_heads", "head_dim"))
        s, t = q.shape[:2]

        def split(x, n):  # [S, T, n*dim] -> [S, n, T, dim], rotated
            x = x.view(s, t, n, dim).transpose(1, 2)
            half = torch.cat((-x[..., dim // 2 :], x[..., : dim // 2]), dim=-1)
            return x * cos + half * sin

        q, k = split(q, heads), split(k, kv_heads)
        v = v.view(s, t, kv_heads, dim).transpose(1, 2)
        q, k, v = (_round_f16(x, kv_f16) for x in (q, k, v))
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        out = torch.empty_like(q)
        start = 0
        for seq in seqs:
            stop = start + len(seq)
            scores = q[:, :, start:stop] @ k[:, :, start:stop].transpose(-1, -2) / math.sqrt(dim)
            causal = torch.ones(len(seq), len(seq), dtype=torch.bool).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            out[:, :, start:stop] = _round_f16(torch.softmax(scores, dim=-1), kv_f16) @ v[:, :, start:stop]
            start = stop
        return out.transpose(1, 2).reshape(s, t, heads * dim)

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden @ E_out.T`` with ``E_out`` read ``vocab_chunk`` rows at a time."""
        name = qwen2vl.EMBED_TOKENS if self.reader.tied else qwen2vl.LM_HEAD
        vocab = int(self.reader.shape(name)[0])
        logits = torch.empty(*hidden.shape[:-1], vocab, dtype=_F64)
        for start in range(0, vocab, self.vocab_chunk):
            stop = min(start + self.vocab_chunk, vocab)
            rows = torch.from_numpy(bf16.to_float64(self.reader.get_rows(name, start, stop)))
            logits[..., start:stop] = hidden @ rows.T
        return logits
