"""The llama.cpp side of so8t: everything that loads an exported GGUF into llama.cpp and talks to it.

- ``api`` (+ ``images``): the one home of llama-cpp-python's private and low-level API (ctypes bindings,
  private wrappers, libmtmd), checked against the installed package at first use;
- ``build``: the installed build's features and the one load-time decision that depends on them (extra
  buffer types off on AMX builds, Note [AMX]);
- ``runtime``: ``LlamaRuntime``, a loaded text GGUF (tokens, logits, hidden states, greedy generation and
  streaming, the guard's hook, images through the mmproj);
- ``chat``: Qwen2-VL's chat format;
- ``runner``: one prompt behind the safety head's guard (``so8t.run``, ``so8t run``);
- ``serve``: the OpenAI-compatible server behind the same guard (``so8t serve``).

Nothing here is imported by ``import so8t``: each module loads llama.cpp (or FastAPI) only when used.
"""
