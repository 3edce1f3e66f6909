"""The SO8T model: transformers' Qwen2-VL with trainable SO(8) gates on every residual write.

Gates sit on the output of ``self_attn.o_proj`` (``y = o @ R_rot @ R_safe @ R_cmd``) and of
``mlp.down_proj`` (``y = d @ R_mlp``), before the residual add (docs/reference.md section 1; row vectors; the
sites are named in :mod:`so8t.adapters.qwen2vl`). They are applied by forward hooks, so the wrapped
transformers model keeps its own module names and weights; the gate generators are the parameters of
``SO8TModel.gates`` (trainable), the transformers weights too unless frozen by the caller.

:func:`load_plain_qwen2vl` builds the plain reference model (no gates) from a checkpoint directory or
from a stream of canonical ``(name, tensor)`` pairs such as :func:`so8t.fold.iter_folded_tensors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from so8t import group
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import SO8TCheckpoint
from so8t.errors import CheckpointError
from so8t.gates import NonCommutativeGate, SO8TRotationGate
from so8t.group import RotationMap
from so8t.safety import SafetyHead

#: gate name (file/adapter spelling) -> attribute path inside :class:`LayerGates`.
GATE_MODULES: dict[str, str] = {
    "attn_rot": "attn_rot",
    "attn_safe": "attn_pair.safe",
    "attn_cmd": "attn_pair.cmd",
    "mlp_rot": "mlp_rot",
}


@dataclass
class SO8TOutput:
    """``logits`` ``[batch, seq, vocab]``; ``hidden_states`` final-norm ``[batch, seq, hidden]``;
    ``safety_logits`` ``[batch, 3]`` (ALLOW, ESCALATE, REFUSE) or None without a safety head."""

    logits: torch.Tensor
    hidden_states: torch.Tensor
    safety_logits: torch.Tensor | None = None


class LayerGates(nn.Module):
    """The gates of one decoder layer: ``attn_rot``, the pair ``attn_pair`` (safe then cmd), ``mlp_rot``."""

    def __init__(self, hidden_size: int, map: RotationMap | str = RotationMap.EXP):
        super().__init__()
        self.attn_rot = SO8TRotationGate(hidden_size, map=map)
        self.attn_pair = NonCommutativeGate(hidden_size, map=map)
        self.mlp_rot = SO8TRotationGate(hidden_size, map=map)
        self.site_rotations: dict[str, torch.Tensor] | None = None  # set by SO8TModel.cached_rotations

    def gate(self, name: str) -> SO8TRotationGate:
        return self.get_submodule(GATE_MODULES[name])

    def apply_site(self, site: qwen2vl.FoldSite, y: torch.Tensor) -> torch.Tensor:
        """Apply a site's gates in order: ``y @ R_gates[0] @ R_gates[1] ...``."""
        if self.site_rotations is not None:  # one block product with the composed rotation
            return group.apply_blocks(y, self.site_rotations[site.name])
        for name in site.gates:
            y = self.gate(name)(y)
        return y


def _site_hook(gates: LayerGates, site: qwen2vl.FoldSite):
    def hook(module, args, output):
        return gates.apply_site(site, output)

    return hook


def _build_empty(config) -> nn.Module:
    from transformers import Qwen2VLForConditionalGeneration
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return Qwen2VLForConditionalGeneration(config)


def _load_tensors(model: nn.Module, tensors: Iterable[tuple[str, torch.Tensor]], source) -> None:
    """Copy canonical-named tensors into ``model`` (cast once, by ``copy_``, to the parameters' ``dtype``);
    every weight must be given."""
    params = dict(model.named_parameters(remove_duplicate=False))
    tied = bool(model.config.tie_word_embeddings)
    seen: set[str] = set()
    with torch.no_grad():
        for name, tensor in tensors:
            target = qwen2vl.to_memory_name(name)
            if tied and target == "lm_head.weight":
                continue  # tied: the output projection is the embedding matrix
            if target not in params:
                raise CheckpointError(f"unexpected tensor {name} for Qwen2-VL", path=source)
            param = params[target]
            if tuple(param.shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"tensor {name} has shape {tuple(tensor.shape)}, the config implies {tuple(param.shape)}",
                    path=source,
                )
            param.copy_(tensor)  # casts as it copies: no whole-tensor temporary (1.1 GB: a 0.5B's embedding in f64)
            seen.add(target)
    missing = [n for n in params if n not in seen and not (tied and n == "lm_head.weight")]
    if missing:
        raise CheckpointError(f"{len(missing)} weights missing, e.g. {missing[0]}", path=source)


def load_plain_qwen2vl(
    source: str | Path | Iterable[tuple[str, torch.Tensor]],
    *,
    config: dict | None = None,
    dtype: torch.dtype = torch.float32,
    rms_norm_eps: float | None = None,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A plain ``Qwen2VLForConditionalGeneration`` in eval mode.

    Args:
        source: a checkpoint directory (plain or SO8T: its gates are ignored), or ``(canonical_name,
            tensor)`` pairs (e.g. :func:`so8t.fold.iter_folded_tensors`), which need ``config``.
        config: the config.json dict when ``source`` is a tensor stream.
        dtype: parameter dtype; tensors are cast once (float64 folds go straight to it).
        rms_norm_eps: override of the text RMSNorm epsilon (0.0 mirrors llama.cpp, docs/reference.md section 5).
    """
    if isinstance(source, (str, Path)):
        from so8t.checkpoint import CheckpointReader

        reader = CheckpointReader(source)
        config, tensors, where = reader.config, reader.items(), Path(source)
    else:
        if config is None:
            raise ValueError("load_plain_qwen2vl needs config= when given a tensor stream")
        tensors, where = source, None
    model = _build_empty(qwen2vl.config_from_dict(config, rms_norm_eps, attn_implementation))
    model.to(dtype)
    _load_tensors(model, tensors, where)
    model.tie_weights()
    return model.eval()


def forward_qwen2vl(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
) -> SO8TOutput:
    """Run a ``Qwen2VLForConditionalGeneration`` once (no cache): logits and final-norm hidden states."""
    types = qwen2vl.mm_token_type_ids(input_ids, model.config) if image_grid_thw is not None else None
    model.model.rope_deltas = None  # no state from an earlier call
    out = model.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=pixel_values,
        image_grid_thw=image_grid_thw,
        mm_token_type_ids=types,
        use_cache=False,
    )
    hidden = out.last_hidden_state
    return SO8TOutput(logits=model.lm_head(hidden), hidden_states=hidden)


class SO8TModel(nn.Module):
    """Qwen2-VL + SO(8) gates (+ optional safety head). Build with :meth:`from_dir`.

    Attributes:
        qwen: the wrapped ``Qwen2VLForConditionalGeneration`` (gates hooked onto its gate-site Linears).
        gates: ``nn.ModuleList`` of :class:`LayerGates`, one per decoder layer (trainable generators).
        safety_head: :class:`~so8t.safety.SafetyHead` or None.
    """

    def __init__(
        self, qwen: nn.Module, map: RotationMap | str = RotationMap.EXP, safety_head: SafetyHead | None = None
    ):
        super().__init__()
        self.qwen = qwen
        hidden = int(qwen.config.text_config.hidden_size)
        layers = qwen2vl.decoder_layers(qwen)
        self.gates = nn.ModuleList(LayerGates(hidden, map) for _ in layers)
        self.safety_head = safety_head
        self._hooks = [
            qwen2vl.site_module(qwen, i, site).register_forward_hook(_site_hook(self.gates[i], site))
            for i in range(len(layers))
            for site in qwen2vl.FOLD_SITES
        ]

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        rms_norm_eps: float | None = None,
        attn_implementation: str = "sdpa",
    ) -> SO8TModel:
        """Load an SO8T checkpoint directory. Gates and safety head are float32 parameters."""
        checkpoint = SO8TCheckpoint(path)
        qwen = load_plain_qwen2vl(
            checkpoint.path, dtype=dtype, rms_norm_eps=rms_norm_eps, attn_implementation=attn_implementation
        )
        head_state = checkpoint.safety_head_state()
        head = SafetyHead.from_file_state(head_state) if head_state else None
        model = cls(qwen, map=checkpoint.rotation_map, safety_head=head)
        with torch.no_grad():
            for layer, gates in enumerate(model.gates):
                for name in qwen2vl.GATE_NAMES:
                    gates.gate(name).generators.copy_(checkpoint.gate_generators(layer, name))
        return model.eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
    ) -> SO8TOutput:
        out = forward_qwen2vl(self.qwen, input_ids, attention_mask, pixel_values, image_grid_thw)
        if self.safety_head is not None:
            out.safety_logits = self.safety_head.classify(out.hidden_states, attention_mask)
        return out

    @contextlib.contextmanager
    def cached_rotations(self) -> Iterator[None]:
        """Within the block, every gate's rotation comes from ONE batched map call over all layers and gates
        (Note [batched expm] in so8t.checkpoint.so8t_dir) and each site applies its composed rotation
        ``R_gates[0] @ R_gates[1] ...`` in one block product: the same function of the generators (rounding
        aside; zero generators still give exactly the identity), differentiable, and for training ~L*4*20
        small kernels fewer per forward. Leaving the block drops the cache."""
        names = qwen2vl.GATE_NAMES
        stacked = torch.stack([layer.gate(n).generators for layer in self.gates for n in names])
        rotations = group.rotation(stacked, self.gates[0].attn_rot.map)
        try:
            for i, layer in enumerate(self.gates):
                mine = dict(zip(names, rotations[i * len(names) : (i + 1) * len(names)]))
                layer.site_rotations = {}
                for site in qwen2vl.FOLD_SITES:
                    r = mine[site.gates[0]]
                    for name in site.gates[1:]:
                        r = group.compose(r, mine[name])
                    layer.site_rotations[site.name] = r
            yield
        finally:
            for layer in self.gates:
                layer.site_rotations = None

    def gates_file_state(self) -> dict[str, torch.Tensor]:
        """Gate generators (and safety head) in the ``so8t_gates.safetensors`` naming, float32."""
        from so8t.checkpoint.so8t_dir import gate_key

        state = {
            gate_key(layer, name): gates.gate(name).generators.detach().to(torch.float32).contiguous()
            for layer, gates in enumerate(self.gates)
            for name in qwen2vl.GATE_NAMES
        }
        if self.safety_head is not None:
            state.update(self.safety_head.file_state())
        return state
