"""Run an exported SO8T model with stock llama.cpp (through llama-cpp-python).

``LlamaRuntime(model.gguf, mmproj=..., sidecar=...)``: ``tokenize``/``detokenize`` (llama.cpp's tokenizer),
``logits(ids)`` at every position, ``hidden_states(ids)`` (final-norm hidden states, the safety head's
input), ``generate``/``stream`` (greedy, optionally behind the guard; tokens/s from llama.cpp's perf
counters), ``safety`` and ``multimodal_chat`` (images through the mmproj). Private wrappers are reached
through ``so8t.llama.api``. KV cache F16 as llama.cpp does; ``f32_kv=True`` removes its ~5e-5 logit noise.

Note [eps]: the llama.cpp in llama-cpp-python 0.3.36 ignores ``qwen2vl.attention.layer_norm_rms_epsilon``
and runs RMSNorm with eps = 0 (docs/reference.md section 5); logits differ from PyTorch by ~1e-3 on tiny
random models for that reason alone.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so8t.errors import RuntimeLoadError
from so8t.llama import api as llama_api


@dataclass
class Generation:
    text: str
    tokens: list[int]
    prompt_tokens: int
    prompt_tokens_per_s: float
    gen_tokens_per_s: float
    stopped_at_eos: bool
    guarded: bool = False  # the guard stopped it before the first token (nothing was generated)


def default_sidecar(model_path: str | Path) -> Path | None:
    """``X.so8t.gguf`` next to ``X.gguf`` if it exists (the exporter's naming); None for a sidecar itself.
    The one home of this rule (the validator and ``so8t run`` use it)."""
    path = Path(model_path)
    if path.suffix != ".gguf" or path.name.endswith(".so8t.gguf"):
        return None
    candidate = path.with_name(path.name[: -len(".gguf")] + ".so8t.gguf")
    return candidate if candidate.is_file() else None


class LlamaRuntime:
    """An exported text GGUF loaded in llama.cpp (see the module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        mmproj: str | Path | None = None,
        sidecar: str | Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        f32_kv: bool = False,
        verbose: bool = False,
    ):
        self.model_path = Path(model_path)
        self.mmproj = Path(mmproj) if mmproj else None
        self.sidecar_path = Path(sidecar) if sidecar else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        self.f32_kv = f32_kv
        self.verbose = verbose
        for path in filter(None, (self.model_path, self.mmproj, self.sidecar_path)):
            if not path.is_file():
                raise RuntimeLoadError("file not found", path=path)
        self.llm = self._load()
        self._sidecar = None

    def _load(self, chat_handler=None):
        kwargs = {"n_ctx": self.n_ctx, "n_threads": self.n_threads, "n_gpu_layers": 0}
        if self.f32_kv:
            kwargs.update(type_k=0, type_v=0)  # GGML_TYPE_F32 keys and values
        kwargs["pooling_type"] = llama_api.pooling_none()  # hidden states per token, when they are on
        if chat_handler is not None:
            kwargs["chat_handler"] = chat_handler
        try:
            return llama_api.load(self.model_path, verbose=self.verbose, **kwargs)
        except (ValueError, RuntimeError) as err:
            raise RuntimeLoadError(
                f"llama.cpp could not load the model: {err}", path=self.model_path
            ) from err

    def close(self) -> None:
        self.llm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- tokens --------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self.llm.n_vocab()

    @property
    def n_embd(self) -> int:
        return self.llm.n_embd()

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """llama.cpp's tokens for ``text``; ``special`` parses ``<|im_start|>`` etc. as control tokens.
        No BOS is added (the file says ``add_bos_token = false``).

        Note [NFC]: Qwen2's tokenizer normalises text to Unicode NFC before splitting; llama.cpp's BPE
        tokenizer does not, so decomposed input (``カ`` + U+3099) would tokenize differently from
        transformers. The text is NFC-normalised here first, which makes the two agree."""
        text = unicodedata.normalize("NFC", text)
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    # -- forward passes ------------------------------------------------------------------------

    def _decode_all(self, llm, ids: list[int], row) -> np.ndarray:
        """Decode ``ids`` from position 0 with every position as an output; stack ``row(llm, i)``."""
        if not ids:
            raise ValueError("no tokens")
        if len(ids) > self.n_ctx:
            raise RuntimeLoadError(
                f"{len(ids)} tokens exceed the context of {self.n_ctx}", path=self.model_path
            )
        llama_api.restart(llm)
        rows = []
        for start in range(0, len(ids), llm.n_batch):
            chunk = ids[start : start + llm.n_batch]
            llama_api.decode(llm, chunk, n_past=start, all_outputs=True)
            rows += [row(llm, i) for i in range(len(chunk))]
        return np.stack(rows)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits ``[len(ids), n_vocab]`` (float32) at every position."""
        n = self.n_vocab
        return self._decode_all(self.llm, ids, lambda llm, i: llama_api.logits_row(llm, i, n))

    def hidden_states(self, ids: list[int]) -> np.ndarray:
        """Final-norm hidden states ``[len(ids), n_embd]``: the generation's own context with hidden-state
        output turned on for the call (no pooling). One load of the file: a second context in embedding
        mode would map the weights a second time (at full size in F32, 6 GB more resident)."""
        n = self.n_embd
        llama_api.set_embeddings(self.llm, True)
        try:
            return self._decode_all(self.llm, ids, lambda llm, i: llama_api.embedding_row(llm, i, n))
        finally:
            llama_api.set_embeddings(self.llm, False)

    def generate(self, prompt: str | list[int], max_tokens: int = 32, stop_at_eos: bool = True,
                 guard: Callable[[np.ndarray], bool] | None = None) -> Generation:
        """Greedy generation; tokens/s from llama.cpp's perf counters; ``guard``: see :class:`TokenStream`."""
        stream = self.stream(prompt, max_tokens, stop_at_eos, guard)
        out = list(stream)
        perf = llama_api.perf(self.llm)
        return Generation(
            text=self.detokenize(out),
            tokens=out,
            prompt_tokens=stream.prompt_tokens,
            prompt_tokens_per_s=0.0 if stream.guarded else _rate(perf.prompt_tokens, perf.prompt_ms),
            gen_tokens_per_s=0.0 if stream.guarded else _rate(perf.gen_tokens, perf.gen_ms),
            stopped_at_eos=stream.stopped_at_eos,
            guarded=stream.guarded,
        )

    def stream(self, prompt: str | list[int], max_tokens: int = 32, stop_at_eos: bool = True,
               guard: Callable[[np.ndarray], bool] | None = None) -> TokenStream:
        """The greedy tokens one at a time (:class:`TokenStream`), for streaming answers."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        return TokenStream(self, ids, max_tokens, stop_at_eos, guard)

    @staticmethod
    def _prefill(llm, ids: list[int], pos: int) -> int:
        """Decode ``ids`` from position ``pos`` in batches, only the last token as an output; the new
        position."""
        for start in range(0, len(ids), llm.n_batch):
            chunk = ids[start : start + llm.n_batch]
            llama_api.decode(llm, chunk, n_past=pos, all_outputs=False)
            pos += len(chunk)
        return pos

    # -- SO8T safety head ----------------------------------------------------------------------

    def safety_head(self):
        """The sidecar's safety head (``verdict(hidden)``), or None without a sidecar or a head in it."""
        if self.sidecar_path is None:
            return None
        if self._sidecar is None:
            from so8t.gguf.sidecar_reader import read_sidecar

            self._sidecar = read_sidecar(self.sidecar_path)
        return self._sidecar.safety_head()

    def safety(self, prompt: str | list[int]):
        """The sidecar's safety verdict on the last position's final-norm hidden state, or None when
        no sidecar was given (or it has no safety head). A prefill of its own with every position as an
        output: for inspection; ``generate(guard=...)`` decides within the generation's own prefill."""
        head = self.safety_head()
        if head is None:
            return None
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        return head.verdict(self.hidden_states(ids)[-1].astype(np.float64))

    # -- images --------------------------------------------------------------------------------

    def describe_image(self, image: str | Path, question: str, max_tokens: int = 32) -> str:
        """Answer ``question`` about ``image`` through llama.cpp's multimodal path (needs ``mmproj``)."""
        if self.mmproj is None:
            raise RuntimeLoadError("an image needs the mmproj file (--mmproj)", path=self.model_path)
        image = Path(image)
        if not image.is_file():
            raise RuntimeLoadError("image not found", path=image)
        parts = [{"type": "image_url", "image_url": {"url": image.resolve().as_uri()}}, {"type": "text", "text": question}]
        return self.multimodal_chat([{"role": "user", "content": parts}], max_tokens)

    def multimodal_chat(self, messages: list[dict], max_tokens: int = 32) -> str:
        """Greedy answer to OpenAI-style ``messages`` with image parts, through llama.cpp's Qwen2-VL chat
        handler and the mmproj (a context of its own, loaded for the call)."""
        if self.mmproj is None:
            raise RuntimeLoadError("an image needs the mmproj file (--mmproj)", path=self.model_path)
        from llama_cpp.llama_chat_format import Qwen25VLChatHandler

        handler = Qwen25VLChatHandler(clip_model_path=str(self.mmproj), verbose=self.verbose)
        llm = self._load(chat_handler=handler)
        try:
            response = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0, top_k=1)
        finally:
            llm.close()
        return response["choices"][0]["message"]["content"] or ""


class TokenStream:
    """Greedy tokens of one prompt, yielded as llama.cpp chooses them (perf counters reset at the start).

    ``guard``: called with the final-norm hidden state of the prompt's last token, from the same context and
    the same prefill as the generation, before the first token is chosen; when it returns False nothing is
    generated and ``guarded`` is True. The prompt is decoded up to its last token without extra outputs,
    then that token with hidden-state output on (llama.cpp outputs every token of a batch while it is on),
    then output is turned off again for the generation. After the iteration: ``tokens``, ``guarded``,
    ``stopped_at_eos``."""

    def __init__(self, runtime: LlamaRuntime, ids: list[int], max_tokens: int, stop_at_eos: bool, guard):
        self.runtime, self.ids, self.max_tokens, self.stop_at_eos, self.guard = runtime, ids, max_tokens, stop_at_eos, guard
        self.tokens: list[int] = []
        self.guarded = self.stopped_at_eos = False

    @property
    def prompt_tokens(self) -> int:
        return len(self.ids)

    def __iter__(self):
        rt, ids = self.runtime, self.ids
        llm = rt.llm
        llama_api.restart(llm)
        llama_api.perf_reset(llm)
        pos, pending = 0, ids
        if self.guard is not None:
            pos = rt._prefill(llm, ids[:-1], 0)
            llama_api.set_embeddings(llm, True)
            try:
                llama_api.decode(llm, ids[-1:], n_past=pos, all_outputs=True)
                hidden = llama_api.embedding_row(llm, -1, rt.n_embd)
            finally:
                llama_api.set_embeddings(llm, False)
            pos, pending = pos + 1, []
            if not self.guard(hidden):
                self.guarded = True
                return
        for _ in range(self.max_tokens):
            pos = rt._prefill(llm, pending, pos)
            token = int(np.argmax(llama_api.logits_row(llm, -1, rt.n_vocab)))
            if self.stop_at_eos and llama_api.ends_generation(llm, token):
                self.stopped_at_eos = True
                return
            self.tokens.append(token)
            yield token
            pending = [token]
            if pos + 1 > rt.n_ctx:
                return


def _rate(n: int, ms: float) -> float:
    return float(n) / (ms / 1000.0) if ms > 0 else 0.0
