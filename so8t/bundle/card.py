"""The model card ``README.md`` of an export directory.

Sections: the source (config.json's ``so8t.source``), the gates (``so8t`` section: map, init, sites in
their order), the training record (``so8t.training``, written by ``so8t train``), the guard's eval metrics
(``so8t.training.eval_metrics``, present when the checkpoint was trained with eval data), the files, and the
commands that run them.

The files table has one row per file: ``| `name` | type | size in bytes | verdict | mean KL |``. Verdicts
and KL come from the validation reports (schema so8t/validation/report.schema.json):

* text file: the report's ``overall``; KL is ``parity.logits`` ``details.ours.mean_kl``: the mean KL of
  llama.cpp's next-token distribution against the float64 PyTorch reference (``-`` when parity gave none);
* sidecar: the worst status of its text file's sidecar checks (``COMPANION_CHECKS``), KL ``n/a``;
* mmproj: the worst status of the mmproj checks over all reports, KL ``n/a``.

Without reports every verdict and KL reads ``not validated``.
"""

from __future__ import annotations

from so8t.validation.report import PARITY_CHECK

NOT_VALIDATED = "not validated"
#: name prefixes of the checks that judge a companion file inside a text file's report
COMPANION_CHECKS = {
    "sidecar": ("file.sidecar_readable", "metadata.sidecar_consistency", "group."),
    "mmproj": ("file.mmproj_readable", "metadata.mmproj", "tensors.mmproj", "runtime.mmproj_image"),
}
_WORST_FIRST = ("FAIL", "ERROR", "SKIP")


def mean_kl(report: dict) -> float | None:
    """``parity.logits`` ``details.ours.mean_kl`` of a report (None when parity gave none)."""
    parity = next((c for c in report.get("checks", []) if c.get("name") == PARITY_CHECK), None)
    return (((parity or {}).get("details") or {}).get("ours") or {}).get("mean_kl")


def companion_verdict(kind: str, reports: list[dict]) -> str:
    """The worst status of ``kind``'s checks (``COMPANION_CHECKS``) in ``reports``; ``not validated`` when
    none ran."""
    statuses = {c["status"] for r in reports for c in r.get("checks", [])
                if c.get("name", "").startswith(COMPANION_CHECKS[kind])}
    if not statuses:
        return NOT_VALIDATED
    return next((s for s in _WORST_FIRST if s in statuses), "PASS")


def file_rows(files, sizes: dict, reports: dict[str, dict]) -> list[tuple[str, str, int, str, str]]:
    """``(name, type, size, verdict, mean KL)`` per file (module docstring); ``reports``: type -> report."""
    rows = []
    for f in files:
        verdict = kl = NOT_VALIDATED
        kind = f"text {f.quant}" if f.kind == "text" else f"mmproj {f.quant}" if f.kind == "mmproj" else \
            f"SO8T sidecar of {f.quant}"
        if f.kind == "text" and f.part:
            kind += f", part {f.part[0] + 1} of {f.part[1]}"
        if reports and f.kind == "text" and f.quant in reports:
            verdict, value = reports[f.quant]["overall"], mean_kl(reports[f.quant])
            kl = "-" if value is None else f"{value:.4e}"
        elif reports and f.kind == "sidecar":
            verdict, kl = companion_verdict("sidecar", [reports[f.quant]] if f.quant in reports else []), "n/a"
        elif reports and f.kind == "mmproj":
            verdict, kl = companion_verdict("mmproj", list(reports.values())), "n/a"
        rows.append((f.path.name, kind, sizes[f.path], verdict, kl))
    return rows


def _source(name: str, so8t_dir, cfg: dict) -> list[str]:
    source = cfg.get("source") or {}
    return ["## Source", "", (f"- source checkpoint: `{source.get('name', '?')}` (sha256 of its weight files' "
            f"hashes: `{source.get('sha256', '?')}`)"), f"- SO8T checkpoint: `{so8t_dir.name}`",
            f"- exported as `{name}`", ""]


def _gates(cfg: dict) -> list[str]:
    sites = cfg.get("gate_sites") or {}
    order = "; ".join(f"{site}: `x @ " + " @ ".join(f"R_{g}" for g in gates) + "`" for site, gates in sites.items())
    head = cfg.get("safety_head")
    return ["## Gates", "", (f"- SO(8) gates, rotation dim {cfg.get('rotation_dim')}, map `{cfg.get('map')}`, "
            f"initialised `{cfg.get('rotation_init')}` (seed {cfg.get('seed')}), {cfg.get('num_layers')} layers, "
            f"hidden size {cfg.get('hidden_size')}"),
            f"- sites (on the residual writes, folded into the text GGUF's weights): {order}",
            "- safety head: " + (", ".join(cfg.get("safety_classes", [])) if head else "none"), ""]


def _training(cfg: dict) -> list[str]:
    t = cfg.get("training")
    if not t:
        return ["## Training", "", "Not trained: the gates are as `so8t convert` initialised them"
                + (" and the safety head is untrained." if cfg.get("safety_head") else "."), ""]
    data = t.get("train_data") or {}
    ev = t.get("eval_data")
    lines = ["## Training", "", (f"- `so8t train`: {t.get('steps')} steps, batch {t.get('batch_size')}, lr "
             f"{t.get('lr')}, seed {t.get('seed')}, loss weights {t.get('loss_weights')}"),
             f"- train data: `{data.get('name')}` ({data.get('examples')} examples, sha256 `{data.get('sha256')}`)",
             "- eval data: " + (f"`{ev['name']}` ({ev['examples']} examples, sha256 `{ev['sha256']}`)" if ev else
                                "none"),
             f"- safety head trained: {'yes' if t.get('safety_head_trained') else 'no'}", ""]
    return lines


def _metrics(cfg: dict) -> list[str]:
    metrics = (cfg.get("training") or {}).get("eval_metrics")
    if not metrics:
        return ["## Guard eval metrics", "", ("None: the checkpoint was not trained with eval data "
                "(`so8t train --eval-data`)."), ""]
    from so8t.training.metrics import format_metrics

    return ["## Guard eval metrics", "", "```", format_metrics(metrics), "```", ""]


def _commands(name: str, text: str | None, mmproj: str | None) -> list[str]:
    mm = f" --mmproj {mmproj}" if mmproj else ""
    lines = ["## Run", "", "From this directory:", "", "```bash"]
    if text and mmproj:
        lines.append(f'llama-mtmd-cli -m {text}{mm} --image IMAGE.jpg -p "Describe this image."')
    elif text:
        lines.append(f"# no mmproj in this export: llama-mtmd-cli needs one; text only:\nllama-cli -m {text}")
    lines += [f"llama-server -m {text}{mm} --port 8080",
              f"so8t serve --model {text}{mm} --port 8080   # behind the SO8T guard (the sidecar beside it)",
              f'so8t run --model {text} --prompt "Hello!"', f"ollama create {name} -f Modelfile && ollama run {name}",
              "sha256sum -c SHA256SUMS", "```", ""]
    return lines


def card_text(name: str, so8t_dir, config: dict, rows, text: str | None, mmproj: str | None,
              report_names: list[str]) -> str:
    """The README.md (module docstring). ``rows``: :func:`file_rows`; ``text``/``mmproj``: the file names
    the commands use; ``report_names``: the reports the verdicts come from (empty: not validated)."""
    from so8t.bundle.write import MARK

    cfg = config.get("so8t") or {}
    lines = [f"<!-- {MARK}; so8t export and so8t pipeline rewrite this file -->", f"# {name}", "",
             (f"`{name}` is an SO8T model: Qwen2-VL whose decoder layers pass every residual write through "
             "learnable SO(8) rotations, exported for llama.cpp with the gates folded into the weights (the "
             "text GGUF runs on stock llama.cpp as `qwen2vl`)."), ""]
    lines += _source(name, so8t_dir, cfg) + _gates(cfg) + _training(cfg) + _metrics(cfg)
    lines += ["## Files", "", "| file | type | size (bytes) | verdict | mean KL vs PyTorch |", "| --- | --- | ---: | --- | ---: |"]
    lines += [f"| `{n}` | {kind} | {size} | {verdict} | {kl} |" for n, kind, size, verdict, kl in rows]
    lines.append("")
    if report_names:
        lines.append("Verdicts and KL from the validation reports " + ", ".join(f"`{r}`" for r in report_names)
                     + " (`so8t validate`: KL of llama.cpp's next-token distribution against the float64 PyTorch "
                     "reference, mean over the probe prompts' positions).")
    else:
        lines.append("Not validated: check a file with `so8t validate --gguf-model FILE --so8t-model SO8T_DIR`.")
    lines.append("")
    return "\n".join(lines + _commands(name, text, mmproj))
