"""The one home of llama-cpp-python's private and low-level API in so8t.

so8t uses llama-cpp-python (``llama-cpp-python>=0.3.36,<0.4``, pinned in pyproject.toml) through its public
``Llama`` class and chat handlers and, where those cannot do the job, through private attributes of its
wrappers and the raw ctypes bindings of llama.cpp, libmtmd and ggml. Every use of the second kind is in
this module and in ``so8t/llama/images.py`` (libmtmd's image path);
:data:`PRIVATE_SYMBOLS` and :data:`GGML_SYMBOLS` say per symbol what it is and why so8t needs it. The first
:func:`api` / :func:`ggml` call checks the installed package has them all and raises a one-line
:class:`~so8t.errors.LlamaApiError` naming a missing one (not an ``AttributeError`` mid-export); the
instance attributes ``Llama._ctx`` / ``Llama._batch`` are checked at first use (:func:`_private`). The
private parts have no compatibility promise, hence the pin's upper bound: adopt a new minor release by
running the suites, then widening the range.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so8t.errors import LlamaApiError

PINNED = "llama-cpp-python>=0.3.36,<0.4"

#: Dotted paths inside the ``llama_cpp`` package -> what the symbol is and why so8t uses it.
PRIVATE_SYMBOLS: dict[str, str] = {
    # -- private Python wrappers ------------------------------------------------------------------
    "_internals.LlamaContext.kv_cache_clear": "empties the KV cache; Llama.reset() only rewinds the token "
    "count, and every all-position decode must restart from position 0 on an empty cache",
    "_internals.LlamaContext.decode": "llama_decode of a batch, raising on a non-zero code; the public "
    "Llama.eval keeps only the outputs that logits_all reserved at load time",
    "_internals.LlamaBatch.set_batch": "fills the batch (tokens, positions, output flags); logits_all=True "
    "marks every position as an output, which logits() and hidden_states() need",
    "_utils.suppress_stdout_stderr": "silences fd 1/2 while llama.cpp prints load notes past sys.stdout",
    "_ggml.libggml": "ctypes handle of the ggml llama-cpp-python loaded: so8t's quantizers are its own",
    "_logger.llama_log_callback": "llama-cpp-python's log callback, put back after capturing the quantizer",
    # -- raw ctypes bindings of llama.h ---------------------------------------------------------------
    "llama_get_logits_ith": "pointer to the logits of output i of the last decode",
    "llama_get_embeddings_ith": "pointer to the final-norm hidden state of output i (safety head input)",
    "llama_set_embeddings": "turns hidden-state output on for the guard's one decode of the prompt's last "
    "token, or for hidden_states()' decode of every position, and off again (a context with embeddings on "
    "outputs every token of a batch)",
    "llama_perf_context": "llama.cpp's own prompt / generation token counts and timings",
    "llama_perf_context_reset": "zeroes those counters before a timed generation",
    "llama_model_get_vocab": "the vocabulary handle that the two calls below take",
    "llama_vocab_eos": "the end-of-sequence token id",
    "llama_vocab_is_eog": "whether a token ends generation (EOS, EOT, ...)",
    "llama_model_quantize": "llama.cpp's whole-file quantizer (the per-tensor type mix of a file type)",
    "llama_model_quantize_default_params": "its parameter struct with llama.cpp's defaults",
    "llama_model_imatrix_data": "an importance vector in llama_model_quantize_params.imatrix (the oracle)",
    "llama_log_set": "installs a log callback (to capture the quantizer's fallback notes)",
    "llama_log_callback": "the ctypes callback type llama_log_set takes",
    "LLAMA_POOLING_TYPE_NONE": "embedding mode without pooling: one hidden state per position",
    "LLAMA_FLASH_ATTN_TYPE_DISABLED": "flash attention off for the image encoder (exact comparisons)",
    "llama_print_system_info": "the build's compile-time features (so8t.llama.build: AMX, REPACK, ...)",
    "llama.llama_cpp.llama_model_default_params": "Llama() builds its model params from it and has no "
    "use_extra_bufts argument; load() wraps it to turn extra buffers off on AMX builds (so8t.llama.build)",
    # -- raw ctypes bindings of libmtmd (llama.cpp's multimodal library) ------------------------------
    "mtmd_cpp.mtmd_encode_chunk": "runs the vision encoder on an image chunk: how to read image embeddings",
}

#: ggml functions called through :func:`ggml` -> (restype, argtypes, why).
_I, _P, _I64, _SZ, _B = ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t, ctypes.c_bool
_FLOAT_P = ctypes.POINTER(ctypes.c_float)
GGML_SYMBOLS: dict[str, tuple[object, list, str]] = {
    # (enum ggml_type, const float * src, void * dst, start element, nrows, n_per_row, imatrix or NULL)
    "ggml_quantize_chunk": (_SZ, [_I, _P, _P, _I64, _I64, _I64, _P], "the quantizer llama_model_quantize "
                            + "runs per tensor, called on rows in the export's one pass"),
    "ggml_quantize_requires_imatrix": (_B, [_I], "ggml aborts the process on such a type; so8t refuses first"),
    "ggml_row_size": (_SZ, [_I, _I64], "bytes per row, cross-checked against gguf-py"),
    "ggml_validate_row_data": (_B, [_I, _P, _SZ], "rejects non-finite block scales"),
    "ggml_get_type_traits": (None, [_I], "a type's block size, bytes and to_float kernel: the validator "
                             + "dequantizes with the values llama.cpp computes with"),
}


class GgmlTypeTraits(ctypes.Structure):
    """``struct ggml_type_traits`` of ggml.h, the fields up to ``to_float`` in declaration order."""

    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)),
    ]


def _resolve(root, dotted: str):
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def check_module(module) -> None:
    """Raise ``LlamaApiError`` for the first symbol of :data:`PRIVATE_SYMBOLS` that ``module`` lacks."""
    import importlib

    version = getattr(module, "__version__", "?")
    for dotted, why in PRIVATE_SYMBOLS.items():
        head = dotted.split(".", 1)[0]
        try:
            if "." in dotted and not hasattr(module, head):  # a submodule llama_cpp does not import itself
                importlib.import_module(f"{module.__name__}.{head}")
            _resolve(module, dotted)
        except (AttributeError, ImportError, OSError):
            raise LlamaApiError(
                f"llama-cpp-python {version} lacks llama_cpp.{dotted} ({why.split(';')[0]})",
                hint=f"so8t needs {PINNED}",
            ) from None


@functools.lru_cache(maxsize=1)
def api():
    """The ``llama_cpp`` module, checked once against :data:`PRIVATE_SYMBOLS`."""
    try:
        import llama_cpp
    except ImportError as err:
        raise LlamaApiError(f"llama-cpp-python is not installed: {err}", hint=f"install {PINNED}") from err
    check_module(llama_cpp)
    return llama_cpp


def check_ggml(lib) -> None:
    """Raise ``LlamaApiError`` for the first function of :data:`GGML_SYMBOLS` that ``lib`` lacks."""
    for name, (_restype, _argtypes, why) in GGML_SYMBOLS.items():
        if not hasattr(lib, name):
            raise LlamaApiError(f"the ggml of llama-cpp-python lacks {name} ({why})", hint=f"so8t needs {PINNED}")


@functools.lru_cache(maxsize=1)
def ggml() -> ctypes.CDLL:
    """ggml as llama-cpp-python loaded it, with the prototypes of :data:`GGML_SYMBOLS` declared."""
    lib = api()._ggml.libggml
    check_ggml(lib)
    for name, (restype, argtypes, _why) in GGML_SYMBOLS.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    lib.ggml_get_type_traits.restype = ctypes.POINTER(GgmlTypeTraits)
    return lib


def ggml_type_traits(ggml_type: int) -> GgmlTypeTraits:
    """ggml's traits of one tensor type (block size, block bytes, ``to_float`` kernel)."""
    return ggml().ggml_get_type_traits(int(ggml_type)).contents


def _private(llm, name: str):
    """``llm.<name>`` (a private attribute of a loaded ``Llama``), or a one-line ``LlamaApiError``."""
    try:
        return getattr(llm, name)
    except AttributeError:
        raise LlamaApiError(f"llama_cpp.Llama has no {name} attribute (its private context/batch wrapper)",
                            hint=f"so8t needs {PINNED}") from None


# -- loading and decoding ---------------------------------------------------------------------------


def pooling_none() -> int:
    return api().LLAMA_POOLING_TYPE_NONE


_LOAD_LOCK = threading.Lock()


def load(model_path: str | Path, verbose: bool = False, **kwargs):
    """``llama_cpp.Llama(model_path, **kwargs)`` with llama.cpp's load notes silenced unless ``verbose``.

    The one place so8t opens llama.cpp: every load follows ``so8t.llama.build.current_decision()`` on
    llama.cpp's extra buffer types (off on AMX builds, which crash; Note [AMX] there). ``Llama()`` takes no
    ``use_extra_bufts`` argument, so for such a load the default-params function it calls is wrapped for the
    duration of the call (under a lock: the wrap is module-global)."""
    from so8t.llama.build import current_decision

    llama_cpp = api()
    with _LOAD_LOCK, llama_cpp._utils.suppress_stdout_stderr(disable=verbose):
        if current_decision().allowed:
            return llama_cpp.Llama(str(model_path), verbose=verbose, **kwargs)
        bindings = llama_cpp.llama.llama_cpp
        defaults = bindings.llama_model_default_params

        def without_extra_bufts():
            params = defaults()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = without_extra_bufts
        try:
            return llama_cpp.Llama(str(model_path), verbose=verbose, **kwargs)
        finally:
            bindings.llama_model_default_params = defaults


def restart(llm) -> None:
    """Forget every token: the next decode starts at position 0 on an empty KV cache."""
    llm.reset()
    _private(llm, "_ctx").kv_cache_clear()


def decode(llm, tokens: list[int], n_past: int, all_outputs: bool) -> None:
    """Decode ``tokens`` at positions ``n_past...``; ``all_outputs`` keeps an output row per position
    (otherwise only the last)."""
    batch = _private(llm, "_batch")
    batch.set_batch(tokens, n_past=n_past, logits_all=all_outputs)
    _private(llm, "_ctx").decode(batch)


def logits_row(llm, i: int, n_vocab: int) -> np.ndarray:
    """A copy of the logits of output ``i`` (``-1``: the last) of the last decode, float32."""
    ptr = api().llama_get_logits_ith(_private(llm, "_ctx").ctx, i)
    return np.ctypeslib.as_array(ptr, (n_vocab,)).copy()


def set_embeddings(llm, on: bool) -> None:
    """Whether the next decodes also output final-norm hidden states (every token of a batch while on)."""
    api().llama_set_embeddings(_private(llm, "_ctx").ctx, bool(on))


def embedding_row(llm, i: int, n_embd: int) -> np.ndarray:
    """A copy of the final-norm hidden state of output ``i`` (embedding mode), float32."""
    ptr = api().llama_get_embeddings_ith(_private(llm, "_ctx").ctx, i)
    return np.ctypeslib.as_array(ptr, (n_embd,)).copy()


@dataclass(frozen=True)
class PerfCounts:
    """llama.cpp's own counters since the last :func:`perf_reset`."""

    prompt_tokens: int
    prompt_ms: float
    gen_tokens: int
    gen_ms: float


def perf_reset(llm) -> None:
    api().llama_perf_context_reset(_private(llm, "_ctx").ctx)


def perf(llm) -> PerfCounts:
    data = api().llama_perf_context(_private(llm, "_ctx").ctx)
    return PerfCounts(int(data.n_p_eval), float(data.t_p_eval_ms), int(data.n_eval), float(data.t_eval_ms))


def ends_generation(llm, token: int) -> bool:
    """True for the EOS token and every other end-of-generation token of the model's vocabulary."""
    llama_cpp = api()
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    return token == llama_cpp.llama_vocab_eos(vocab) or bool(llama_cpp.llama_vocab_is_eog(vocab, token))


# -- quantization -----------------------------------------------------------------------------------


@contextlib.contextmanager
def captured_log(pieces: list[str]):
    """Collect what llama.cpp logs meanwhile into ``pieces`` (its load notes, the quantizer's fallbacks)."""
    llama_cpp = api()

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):  # pragma: no cover - called from C
        pieces.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))


def quantize_file(src: Path, dst: Path, file_type: int, n_threads: int = 0, max_buf_size: int | None = None,
                  capture_log=True, imatrix: dict[str, np.ndarray] | None = None) -> tuple[int, str]:
    """``llama_model_quantize(src, dst)`` to ``file_type`` (a ``LlamaFileType`` value): returns llama.cpp's
    return code and, with ``capture_log``, what it logged meanwhile. ``max_buf_size`` None keeps llama.cpp's
    default buffer. ``imatrix`` (GGUF name -> float32 importance, what llama-quantize passes) fills
    ``params.imatrix``: ``llama_model_imatrix_data`` entries closed by a NULL name (llama-quant.cpp)."""
    llama_cpp = api()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = int(file_type), n_threads
    params.max_buf_size = params.max_buf_size if max_buf_size is None else max_buf_size
    keep = [(name.encode(), np.ascontiguousarray(v, dtype=np.float32)) for name, v in (imatrix or {}).items()]
    if imatrix is not None:  # keep: the names and vectors the entries point into, alive during the call
        entries = (llama_cpp.llama_model_imatrix_data * (len(keep) + 1))()  # the last: NULL name
        for entry, (name, data) in zip(entries, keep):
            entry.name, entry.size, entry.data = name, data.size, data.ctypes.data_as(_FLOAT_P)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    pieces: list[str] = []
    with captured_log(pieces) if capture_log else contextlib.nullcontext():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    return int(rc), "".join(pieces)


from so8t.llama.images import image_embeddings  # noqa: F401  (uses api() and load() above)
