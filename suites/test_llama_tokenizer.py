"""llama.cpp tokenizes exactly as the Hugging Face tokenizer of the source checkpoint does, on generated
text mixing ASCII, Japanese, emoji, whitespace runs and the Qwen2-VL special tokens; and detokenizes
back to the text."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from so8t.testing.tokenizer import SPECIAL_TOKENS

pytestmark = pytest.mark.llama

SPECIAL = list(SPECIAL_TOKENS)  # the inputs only; the expected ids come from the HF tokenizer

ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=24)
japanese = st.text(
    st.one_of(
        st.characters(min_codepoint=0x3041, max_codepoint=0x30FA),  # hiragana, katakana
        st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),  # common kanji
        st.sampled_from("、。「」ー・！？"),
    ),
    min_size=1,
    max_size=12,
)
emoji = st.one_of(
    st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), min_size=1, max_size=4),
    st.sampled_from(["👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "1️⃣"]),  # modifiers, ZWJ, flags, variation selectors
)
whitespace = st.lists(st.sampled_from([" ", "\n", "\t", "\r\n", "\u3000"]), min_size=1, max_size=6).map(
    "".join
)
special = st.sampled_from(SPECIAL)
mixed_text = st.lists(
    st.one_of(ascii_text, japanese, emoji, whitespace, special), min_size=1, max_size=10
).map("".join)


@pytest.fixture(scope="module")
def llama_rt(gguf_text):
    from so8t.llama.runtime import LlamaRuntime

    with LlamaRuntime(gguf_text["Q8_0"].path, n_ctx=64, n_threads=1) as rt:
        yield rt


def test_reference_pair(llama_rt, hf_tokenizer):
    """docs/reference.md section 2: with the real Qwen2 ranks "Hello world" is [9707, 1879]."""
    assert hf_tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert llama_rt.tokenize("Hello world") == [9707, 1879]


@given(text=mixed_text)
@example(text="<|im_start|>user\nこんにちは、世界！ 🙂<|im_end|>\n<|im_start|>assistant\n")
@example(text="   leading and trailing   \n\n\n")
@example(text="x<|image_pad|><|image_pad|>y")
@example(
    text="\u30ab\u3099 e\u0301"
)  # decomposed: transformers normalises to NFC (see LlamaRuntime.tokenize)
def test_tokenization_matches_hf(llama_rt, hf_tokenizer, text):
    assert llama_rt.tokenize(text) == hf_tokenizer.encode(text, add_special_tokens=False)


@given(text=mixed_text)
def test_detokenize_round_trip(llama_rt, text):
    assert llama_rt.detokenize(llama_rt.tokenize(text)) == unicodedata.normalize("NFC", text)


def test_raw_llama_cpp_does_not_normalise(llama_rt, hf_tokenizer):
    """Why ``LlamaRuntime.tokenize`` applies NFC: llama.cpp alone splits a decomposed character that the
    Qwen2 tokenizer (normaliser NFC) merges. If this starts failing, llama.cpp normalises by itself."""
    text = "\u30ab\u3099"
    raw = list(llama_rt.llm.tokenize(text.encode(), add_bos=False, special=True))
    assert raw != hf_tokenizer.encode(text, add_special_tokens=False)


@given(text=st.lists(st.one_of(ascii_text, japanese), min_size=1, max_size=4).map("".join))
def test_special_text_not_parsed_when_disabled(llama_rt, hf_tokenizer, text):
    """With special=False a control token's text is ordinary text (never its control id)."""
    ids = llama_rt.tokenize(text + "<|im_end|>", special=False)
    assert 151645 not in ids
