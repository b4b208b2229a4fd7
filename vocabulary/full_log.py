"""A task's full log as it travels from an executor to the control plane (PUT .../log), read and
written by both sides.

The log goes gzip-compressed (`Content-Encoding: gzip`) when the claim's answer lists gzip in
`log_encodings`: a control plane of an earlier version would store the compressed bytes as the
text, so an executor compresses only for one that said it takes them. Ingestion logs compress
about sixfold, which is what crosses a customer's uplink at the end of a large run, and what the
control plane writes to its database.
"""
from __future__ import annotations

import gzip
import zlib

GZIP = "gzip"
IDENTITY = "identity"
# The most an executor sends, head and tail kept (the control plane cuts a plain log to it too).
CAP_BYTES = 8 << 20
TRUNCATION_MARKER = b"\n[... log truncated for upload ...]\n"
# Level 1: an 8 MiB ingestion log in ~50 ms of the executor's CPU, to 16% of its size; level 6
# takes four times as long for 12%.
GZIP_LEVEL = 1


class NotALog(ValueError):
    """A body declared gzip that is not one whole gzip stream, or that expands past CAP_BYTES."""


def head_and_tail(data: bytes, cap: int = CAP_BYTES) -> bytes:
    """DATA, or its head and tail with a marker between, CAP bytes in all."""
    if len(data) <= cap:
        return data
    half = (cap - len(TRUNCATION_MARKER)) // 2
    return data[:half] + TRUNCATION_MARKER + data[len(data) - half:]


def compress(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def checked_gzip(data: bytes, cap: int = CAP_BYTES) -> int:
    """The uncompressed size of DATA, one whole gzip stream of at most CAP bytes uncompressed;
    NotALog otherwise. Decompressed in bounded steps: a small body that expands without end (a
    gzip bomb) costs CAP bytes of memory at most, never what it claims."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        size = len(inflater.decompress(data, cap + 1))
    except zlib.error as exc:
        raise NotALog(f"the body is not gzip: {exc}") from None
    if size > cap or inflater.unconsumed_tail:
        raise NotALog(f"the log expands past {cap} bytes; send its head and tail (at most {cap} bytes)")
    if not inflater.eof or inflater.unused_data:
        raise NotALog("the body is not one whole gzip stream")
    return size


def text(encoding: str, data: bytes) -> str:
    """A stored log as text (bytes that are not UTF-8 replaced)."""
    raw = zlib.decompress(data, wbits=31) if encoding == GZIP else data
    return raw.decode("utf-8", "replace")
