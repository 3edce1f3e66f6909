"""File-level checks: the text GGUF exists, gguf-py parses it, its tensor data lies inside the file;
the mmproj parses.

gguf-py raises ValueError, IndexError, struct or Unicode errors on damaged bytes (a truncated file
typically fails a reshape); each becomes a FAIL naming the file, and ``ctx.reader`` stays None so no
later check touches the bytes. Layout: tensor data offsets aligned, every tensor inside the file, no
two overlapping, nothing after the last tensor but its alignment padding (an appended or spliced file
is not what the exporter wrote).
"""

from __future__ import annotations

import itertools

from so8t.validation.context import CheckFailed, Context, check, expect, passed, skipped


@check("file.exists", "file")
def file_exists(ctx: Context):
    path = ctx.gguf_path
    expect(path.exists(), f"{path}: no such file")
    expect(path.is_file(), f"{path}: not a regular file")
    size = path.stat().st_size
    expect(size > 24, f"{path}: {size} bytes, too short for a GGUF header", measured=size)
    return passed(f"{size} bytes", measured=size)


@check("file.readable", "file", requires=("file.exists",))
def file_readable(ctx: Context):
    from so8t.gguf.reader import open_gguf

    with open(ctx.gguf_path, "rb") as handle:
        magic = handle.read(4)
    expect(magic == b"GGUF", f"{ctx.gguf_path}: not a GGUF file (magic {magic!r})", measured=repr(magic))
    try:
        reader = open_gguf(ctx.gguf_path)
    except Exception as err:  # gguf-py raises ValueError, IndexError, struct/Unicode errors on bad bytes
        raise CheckFailed(f"{ctx.gguf_path}: gguf-py cannot parse the file "
                          f"(truncated or corrupt): {type(err).__name__}: {err}") from err
    version = int(reader.fields["GGUF.version"].parts[0][0])
    expect(version == 3, f"GGUF version {version}, llama.cpp writes and we expect 3", measured=version, bound=3)
    ctx.reader = reader
    return passed(f"GGUF v{version}, {len(reader.fields) - 3} keys, {len(reader.tensors)} tensors",
                  measured=len(reader.tensors))


@check("file.layout", "file", requires=("file.readable",))
def file_layout(ctx: Context):
    """Tensor data: aligned offsets, inside the file, no overlap, nothing after the last tensor."""
    reader, size = ctx.reader, ctx.gguf_path.stat().st_size
    align = int(reader.alignment)
    spans = []
    for t in reader.tensors:
        start = int(t.data_offset)
        expect((start - int(reader.data_offset)) % align == 0, f"tensor {t.name} data offset not {align}-aligned")
        expect(start + int(t.n_bytes) <= size, f"tensor {t.name} data runs past the end of the file "
               f"({start + int(t.n_bytes)} > {size} bytes): truncated", measured=size, bound=start + int(t.n_bytes))
        spans.append((start, start + int(t.n_bytes), t.name))
    spans.sort()
    for (_s0, e0, n0), (s1, _e1, n1) in itertools.pairwise(spans):
        expect(e0 <= s1, f"tensors {n0} and {n1} overlap")
    end = spans[-1][1] if spans else int(reader.data_offset)
    padded = end + (-end) % align
    expect(size in (end, padded), f"{size - padded} unexpected bytes after the last tensor "
           f"(file {size} bytes, tensor data ends at {padded})", measured=size, bound=padded)
    return passed(f"{len(spans)} tensors in bounds, aligned to {align}, no trailing bytes", measured=size, bound=padded)


@check("file.mmproj_readable", "file")
def mmproj_readable(ctx: Context):
    if ctx.mmproj_path is None:
        return skipped("no mmproj given or found next to the GGUF (mmproj-*.gguf)")
    from so8t.gguf.reader import open_gguf

    try:
        ctx.mmproj_reader = open_gguf(ctx.mmproj_path)
    except Exception as err:  # gguf-py raises several types on corrupt bytes
        raise CheckFailed(f"{ctx.mmproj_path}: gguf-py cannot parse the mmproj: {type(err).__name__}: {err}") from err
    return passed(f"{len(ctx.mmproj_reader.tensors)} tensors", measured=len(ctx.mmproj_reader.tensors))
