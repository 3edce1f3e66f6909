"""A small renderer for the part of Go's text/template that Ollama TEMPLATEs use (test helper only).

Go is not installed where the gate runs, so the Modelfile's TEMPLATE is rendered here, by these rules of
https://pkg.go.dev/text/template: text is copied; ``{{- `` trims the whitespace before the action, ``
-}}`` the whitespace after it; ``{{ if X }}...{{ else }}...{{ end }}`` (X empty/false/0/"" is false);
``{{ range $i, $m := X }}...{{ end }}``; pipelines ``.Field``, ``$var``, ``$var.Field``, ``"string"``,
integers, parentheses, and the functions ``eq``, ``ne``, ``and``, ``or``, ``not``. Anything else raises.
"""

from __future__ import annotations

import re

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+')
FUNCS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "and": lambda *a: next((x for x in a if not x), a[-1]),
    "or": lambda *a: next((x for x in a if x), a[-1]),
    "not": lambda a: not a,
}


def _pieces(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", body) items, trim markers applied to the neighbouring text."""
    out, pos, trim_next = [], 0, False
    for m in ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2).strip()))
        trim_next, pos = bool(m.group(3)), m.end()
    tail = template[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(items: list, i: int = 0, stop=("end",)) -> tuple[list, int, str | None]:
    nodes = []
    while i < len(items):
        kind, body = items[i]
        i += 1
        if kind == "text":
            nodes.append(("text", body))
        elif body in stop or body == "else":
            return nodes, i, body
        elif body.startswith("if "):
            then, i, ended = _parse(items, i)
            other = []
            if ended == "else":
                other, i, _ = _parse(items, i)
            nodes.append(("if", body[3:], then, other))
        elif body.startswith("range "):
            head, expr = body[6:].split(":=", 1)
            names = [n.strip() for n in head.split(",")]
            inner, i, _ = _parse(items, i)
            nodes.append(("range", names, expr.strip(), inner))
        else:
            nodes.append(("value", body))
    return nodes, i, None


def _field(value, path: list[str]):
    for name in path:
        value = value[name]
    return value


def _eval(tokens: list[str], data: dict, scope: dict):
    def term(pos: int):
        tok = tokens[pos]
        if tok == "(":
            value, pos = call(pos + 1)
            return value, pos + 1  # past ")"
        if tok.startswith('"'):
            return bytes(tok[1:-1], "utf-8").decode("unicode_escape"), pos + 1
        if tok.lstrip("-").isdigit():
            return int(tok), pos + 1
        if tok.startswith("$"):
            name, *path = tok.split(".")
            return _field(scope[name], path), pos + 1
        if tok.startswith("."):
            return _field(data, tok[1:].split(".")), pos + 1
        raise ValueError(f"unsupported token {tok!r}")

    def call(pos: int):
        if tokens[pos] in FUNCS:
            name, args, pos = tokens[pos], [], pos + 1
            while pos < len(tokens) and tokens[pos] != ")":
                value, pos = term(pos)
                args.append(value)
            return FUNCS[name](*args), pos
        return term(pos)

    return call(0)[0]


def _run(nodes: list, data: dict, scope: dict, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "value":
            value = _eval(TOKEN.findall(node[1]), data, scope)
            out.append(str(value).lower() if isinstance(value, bool) else str(value))
        elif node[0] == "if":
            _run(node[2] if _eval(TOKEN.findall(node[1]), data, scope) else node[3], data, scope, out)
        else:
            names, expr, inner = node[1], node[2], node[3]
            for index, item in enumerate(_eval(TOKEN.findall(expr), data, scope)):
                bound = dict(zip(names, (index, item) if len(names) == 2 else (item,)))
                _run(inner, data, scope | bound, out)


def render(template: str, data: dict) -> str:
    """``template`` executed on ``data`` (a dict; Go's ``.Field`` is ``data["Field"]``)."""
    nodes, _, _ = _parse(_pieces(template))
    out: list[str] = []
    _run(nodes, data, {}, out)
    return "".join(out)
