"""``SHA256SUMS`` in the format of GNU coreutils' ``sha256sum`` (what ``sha256sum -c SHA256SUMS`` reads).

One line per file: 64 lower-case hex digits, two spaces (text mode; the bytes are hashed as they are, the
mode only matters on systems that translate line ends), the file name relative to the sums file. Names
with a newline or a backslash would need sha256sum's escaping and are refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from so8t.errors import ExportError
from so8t.io import sha256_file

FILE_NAME = "SHA256SUMS"


def sum_line(name: str, content: Path | bytes) -> str:
    """The line of ``name`` whose bytes are the file ``content`` (read in chunks) or ``content`` itself."""
    if "\n" in name or "\\" in name:
        raise ExportError("a file name with a newline or a backslash cannot go in SHA256SUMS", path=name)
    digest = hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else sha256_file(content)
    return f"{digest}  {name}\n"


def sums_text(entries: list[tuple[str, Path | bytes]]) -> str:
    """The whole SHA256SUMS file for ``(name, content)`` entries, in their order."""
    return "".join(sum_line(name, content) for name, content in entries)
