"""``so8t.profile``: per-phase CPU and wall seconds of an export, collected over every thread."""

from __future__ import annotations

import threading
import time

from so8t import profile


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_phase_outside_a_collection_records_nothing():
    with profile.phase("read"):
        _spin(0.01)
    with profile.collect() as phases:
        pass
    assert all(p.calls == 0 for p in phases.phases.values())


def test_phases_on_other_threads_add_up():
    def work():
        with profile.phase("quantize"):
            _spin(0.05)
        with profile.phase("write"):
            time.sleep(0.05)  # waits: wall time, almost no CPU

    with profile.collect() as phases:
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    quantize, write = phases.phases["quantize"], phases.phases["write"]
    assert quantize.calls == write.calls == 2
    assert quantize.cpu_s >= 0.1 and quantize.wall_s >= quantize.cpu_s * 0.99
    assert write.wall_s >= 0.1 and write.cpu_s < write.wall_s / 2
    assert sum(p.cpu_s for p in phases.phases.values()) <= phases.cpu_s + 0.01  # the process CPU holds them


def test_an_export_reports_every_phase(embedded_random_dir, tmp_path):
    """Every phase is timed, whatever the model (``embedded_random_dir``: suites/fixtures/conversions.py)."""
    from so8t.checkpoint.config import read_config
    from so8t.gguf.export import SO8TToGGUFConverter

    report = SO8TToGGUFConverter(embedded_random_dir, progress=False).export(
        tmp_path, ["F16", "Q8_0"], model_name="m"
    )
    phases = report.phases.phases
    assert list(phases) == list(profile.PHASES)
    assert all(phases[name].calls > 0 for name in profile.PHASES), report.phases.summary()
    # two gate sites per layer (o_proj, down_proj), no biases there: one fold each
    assert phases["fold"].calls == 2 * read_config(embedded_random_dir).text.num_hidden_layers
    figures = report.phases.as_dict()
    assert figures["other_cpu_s"] >= -0.01 and figures["total_wall_s"] > 0


def test_cli_export_profile_prints_the_table(embedded_random_dir, tmp_path, capsys):
    """The table's layout, whatever the model (``embedded_random_dir``: suites/fixtures/conversions.py)."""
    from so8t.cli import main

    rc = main(
        [
            "export",
            "--input-model",
            str(embedded_random_dir),
            "--output-dir",
            str(tmp_path),
            "--quantization",
            "Q8_0",
            "--no-mmproj",
            "--quiet",
            "--profile",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    rows = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(profile.PHASES) <= rows and {"other", "total"} <= rows, out
