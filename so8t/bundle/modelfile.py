"""The Ollama ``Modelfile`` of an export: FROM lines, the chat template as a Go template, stop tokens.

Ollama's Modelfile (the Modelfile reference, modelfile.mdx, of ollama/ollama): ``FROM <path>`` relative to the Modelfile, one
line per GGUF file; ``TEMPLATE`` with the text in triple double quotes, in Go's text/template syntax; ``PARAMETER stop "<s>"``, one line
per stop sequence; ``#`` comments. Read in Ollama's source (server/create.go, parser/parser.go; snapshot of
2026-08): several FROM lines add their files to one model; a GGUF whose ``general.type`` is ``mmproj`` (ours,
so8t/gguf/vision.py) becomes the model's projector, and ``qwen2vl`` models run on llama-server with it;
the parts of a split GGUF (``-0000i-of-0000n.gguf``, keys ``split.*``) are joined by ``split.no``.

Translation of the chat template (Note [ChatML only]): the checkpoint's Jinja template (Hugging Face's
``chat_template``) is rendered on probe conversations with jinja2's sandbox, as transformers renders it.
When every probe renders as ChatML (``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`` per message, the generation
prompt ``<|im_start|>assistant\\n``, a default system turn ``D`` when the first message is not a system
one), the Go template below renders the same text for text messages. Any other template is not translated:
the Modelfile says so in a comment and carries no TEMPLATE (Ollama then picks its own).

Stop tokens: the generation config's ``eos_token_id`` and the tokenizer's ``eos_token`` (their strings
from tokenizer.json's added tokens), then the turn opener ``<|im_start|>``. Sampling: the generation
config's ``temperature``, ``top_p``, ``top_k`` (``do_sample: false`` is temperature 0) and
``repetition_penalty`` (Ollama's ``repeat_penalty``).
"""

from __future__ import annotations

import json
from pathlib import Path

from so8t.checkpoint.chat_template import read_chat_template

START, END = "<|im_start|>", "<|im_end|>"
_PROBES = (
    [{"role": "user", "content": "probe-user-1"}],
    [{"role": "system", "content": "probe-system"}, {"role": "user", "content": "probe-user-1"},
     {"role": "assistant", "content": "probe-assistant"}, {"role": "user", "content": "probe-user-2"}],
)


def _render(template: str, messages: list[dict]) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def _chatml(messages: list[dict], default_system: str | None) -> str:
    if default_system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}, *messages]
    return "".join(f"{START}{m['role']}\n{m['content']}{END}\n" for m in messages) + f"{START}assistant\n"


def chatml_default_system(template: str) -> tuple[bool, str | None]:
    """``(is ChatML, default system prompt or None)`` of a Jinja chat template (Note [ChatML only])."""
    try:
        first = _render(template, _PROBES[0])
    except Exception:  # noqa: BLE001 - a template that needs more than messages is simply not ChatML
        return False, None
    head = f"{START}system\n"
    default = first[len(head): first.find(END)] if first.startswith(head) else None
    try:
        return all(_render(template, p) == _chatml(p, default) for p in _PROBES), default
    except Exception:  # noqa: BLE001
        return False, None


def go_template(default_system: str | None) -> str:
    """Ollama's TEMPLATE for ChatML, with ``default_system`` before a conversation whose first message is
    not a system one (as the Jinja template does); Ollama passes every message in ``.Messages``."""
    opener = ""
    if default_system is not None:
        opener = ('{{- if and (eq $i 0) (ne $m.Role "system") }}' + f"{START}system\n{default_system}{END}\n"
                  + "{{ end }}")
    return ("{{- range $i, $m := .Messages }}" + opener + START + "{{ $m.Role }}\n{{ $m.Content }}" + END
            + "\n{{ end }}" + START + "assistant\n")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def stop_tokens(model_dir: Path) -> list[str]:
    """The stop strings of the module docstring, in order, without repeats."""
    added = {t["id"]: t["content"] for t in _json(model_dir / "tokenizer.json").get("added_tokens", [])}
    eos = _json(model_dir / "generation_config.json").get("eos_token_id")
    found = [added[i] for i in (eos if isinstance(eos, list) else [eos]) if i in added]
    tok_eos = _json(model_dir / "tokenizer_config.json").get("eos_token")
    tok_eos = tok_eos.get("content") if isinstance(tok_eos, dict) else tok_eos
    found += [t for t in (tok_eos, START if START in added.values() else None) if t]
    return list(dict.fromkeys(found))


def sampling(model_dir: Path) -> list[tuple[str, object]]:
    """Ollama PARAMETERs from generation_config.json (module docstring)."""
    gen = _json(model_dir / "generation_config.json")
    params: list[tuple[str, object]] = []
    if gen.get("do_sample") is False:
        params.append(("temperature", 0))
    else:
        params += [(k, gen[k]) for k in ("temperature", "top_p", "top_k") if k in gen]
    if "repetition_penalty" in gen:
        params.append(("repeat_penalty", gen["repetition_penalty"]))
    return params


def modelfile_text(model_dir: Path, text_files: list[str], mmproj: str | None, others: list[str]) -> str:
    """The Modelfile: ``text_files`` (one text GGUF, its parts in order) and ``mmproj`` as FROM lines
    (names relative to the Modelfile), ``others`` (the other text types) named in a comment."""
    lines = ["# Ollama Modelfile written by so8t (so8t.bundle): ollama create NAME -f Modelfile", ""]
    lines += [f"FROM ./{name}" for name in text_files]
    if mmproj:
        lines += ["# the vision tower: Ollama takes a GGUF of general.type 'mmproj' as the model's projector",
                  f"FROM ./{mmproj}"]
    else:
        lines.append("# no mmproj in this export (exported with --no-mmproj): text only")
    if others:
        lines.append("# other types in this directory (replace the text FROM line): " + ", ".join(others))
    lines.append("# the SO8T sidecar (*.so8t.gguf, the safety head) is not used by Ollama: the guard runs under "
                 "'so8t run' and 'so8t serve' only")
    template = read_chat_template(model_dir)
    is_chatml, default = chatml_default_system(template) if template else (False, None)
    if is_chatml and "{{" not in (default or "") and "}}" not in (default or ""):
        lines += ["", f'TEMPLATE """{go_template(default)}"""']
    else:
        lines += ["", "# no TEMPLATE: the checkpoint's chat template is " + ("not ChatML" if template else "missing")
                  + ", so8t translates ChatML only; Ollama uses its own detection"]
    lines += [""] + [f'PARAMETER stop "{s}"' for s in stop_tokens(model_dir)]
    lines += [f"PARAMETER {k} {v}" for k, v in sampling(model_dir)]
    return "\n".join(lines) + "\n"
