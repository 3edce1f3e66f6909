"""Completion signal for ``so8t pipeline --notify``: a desktop notification where one is available,
otherwise the terminal bell (the original design played a sound when the work was done)."""

from __future__ import annotations

import shutil
import subprocess
import sys


def notify(title: str, message: str) -> str:
    """Signal completion; return how it was signalled (``"notify-send"`` or ``"bell"``)."""
    sender = shutil.which("notify-send")
    if sender:
        try:
            subprocess.run([sender, title, message], check=True, timeout=5, capture_output=True)
            return "notify-send"
        except (subprocess.SubprocessError, OSError):
            pass  # no notification daemon (headless session): fall back to the bell
    sys.stderr.write("\a")
    sys.stderr.flush()
    return "bell"
