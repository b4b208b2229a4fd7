"""Masks secret values wherever the executor keeps or ships what a task produced: the task log,
its tail, the full log and the structured ingestion report.

Each value is masked in its plain form and in the encodings it commonly reappears in:
JSON-escaped (a recipe echoed as JSON; a PEM key becomes one line with `\\n` in it; with
non-ASCII characters escaped or kept),
URL-encoded (a password inside a connection URI: quote_plus, and quote with and without '/'
kept), repr-escaped (as text and as bytes), JSON with '/' escaped too, in Latin-1 as the relay
keeps it, and the parts of its base64 that do not depend on what surrounds it (base64_middles:
an HTTP Basic credential). A multi-line value (a PEM
private key, a service account file, a `user` and `password` pair) is also masked line by
line: each of its lines of MIN_LINE_LENGTH characters or more (surrounding whitespace stripped)
is a form of its own, because sources quote single lines of a key in errors ("bad key:
MIIEvQ..."), re-wrap it, or print part of it, and print a pair's password alone. 8 is where
DataHub's masker starts too (MIN_FRAGMENT_LENGTH). Shorter lines are not masked on their own: a
4-character last line of base64 would shred unrelated output and identify nothing. PEM armour
lines ("-----BEGIN PRIVATE KEY-----") are not masked on their own either: they are the same in
every key of the kind and say nothing about this one (they are masked as part of the whole key).
Values shorter than MIN_SECRET_LENGTH are not masked at all: masking "a" or "1" would shred every
line and reveal the value by its absence.

Also masked, as forms of their own: a password in a URL as SQLAlchemy 1.x renders it (only ':',
'@' and '/' escaped: DataHub's SQL sources log that URL at debug level); a value with surrounding
whitespace (saved with the newline its file or paste ended in) without it; and a value cut
short. Pydantic quotes a refused value over 50 characters cut to its first 24 and last 23
('abc...xyz'), so the first and the last CUT_ANCHOR characters of a value longer than twice that
(plain and repr-escaped, on one line) are looked for on their own, and each occurrence is masked
together with as much more of the value as follows (or precedes) it: a truncated line's head of
it too. Not for shorter values, which pydantic quotes whole (four more short searches a secret
cost the relay a fifth of its speed), nor for a multi-line value, whose lines are forms already.

Every byte covered by any occurrence of any form is masked, and overlapping occurrences become
one MASK: two forms that overlap (a form of one secret inside another's) leave nothing of either.

Output arrives as pipe reads cut at arbitrary bytes, so the log is masked as a stream
(MaskingStream). A read is emitted up to where a form could still be beginning: the start of
its last line (a form without a newline can only begin there), or the longest form's length
before its end when that line is longer, or earlier where a multi-line form's first lines end
the read. Only the rest waits for the next read, so the longest form bounds what is held back
whatever the task writes (a 1 GiB line without a newline holds back at most that many bytes).

The search is the relay's main cost, so it runs in two passes. A quick filter answers "could a
form be in here?": every form long enough contains an 8-byte block of the text at a multiple of
a stride, so the text's blocks at that stride are looked up in one set of every 8-byte piece of
those forms (a cost that does not grow with their number: a key's 25 lines cost what one does);
shorter forms are looked for with bytes.find, a family's common substring when that is cheaper.
Only text the filter does not clear is searched form by form. Masking works on bytes: a form's
UTF-8 bytes match where its text would, and a secret cut inside a multi-byte character is still
whole in the bytes.
"""
from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "********"
MIN_SECRET_LENGTH = 3
MIN_LINE_LENGTH = 8
# Pydantic shows a quoted value over 50 characters as its first 24 and last 23; so many of them
# identify the value, and fit the quick filter's blocks at a stride of 16 bytes (_plan_filter).
CUT_ANCHOR = 23
PEM_ARMOUR = "-----"
# How SQLAlchemy 1.x (_rfc_1738_quote) and the dialects built on it put a password into a URL.
_RFC_1738 = str.maketrans({":": "%3A", "@": "%40", "/": "%2F"})

_MASK = MASK.encode()
_BLOCKS = struct.Struct("=Q")  # an 8-byte block as an integer, in native byte order, as memoryview.cast("Q") reads the text
# The filter's cost model, in nanoseconds per byte of text, measured on the development machine
# (only ratios matter): looking up one 8-byte block of text in the set, and bytes.find for one
# form of LEN bytes (it skips further for longer forms).
_BLOCK_LOOKUP_NS = 70.0
# Forms shorter than this fit no stride of the block set: the filter finds them one by one.
_SHORT_FORM = 8 * 8 + 7
# The shortest common substring worth looking for instead of a family's forms.
_MIN_ANCHOR = 5
# How many first bytes of an anchor index it, to find anchors that hold another (_minimal).
_PREFIX = 4


def _find_ns_per_byte(length: int) -> float:
    return 0.08 + 3.8 / (length + 1)


def encodings(text: str, *, in_urls: bool = True) -> set[str]:
    """TEXT as a task may print it: plain, JSON-escaped, repr-escaped and (IN_URLS) URL-encoded."""
    as_json = {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    # JSON with '/' escaped too, as PHP's json_encode and several Java libraries write it (an AWS
    # secret key has '/' in it); a bytes object's repr (b'...': non-ASCII as \x escapes); and a
    # non-ASCII value printed in Latin-1, as the relay keeps it (bytes that are not UTF-8 become
    # U+FFFD before masking, task_log.py).
    found = {text, repr(text)[1:-1], repr(text.encode("utf-8", "surrogatepass"))[2:-1], *as_json,
             *(form.replace("/", "\\/") for form in as_json if "/" in form)}
    if not text.isascii():
        try:
            found.add(text.encode("latin-1").decode("utf-8", "replace"))
        except UnicodeEncodeError:
            pass
    # Escaped twice: repr() of an exception whose message holds repr(value) (logged with %r), a
    # JSON document inside a JSON string. A value that one layer leaves as it is, twice does too.
    once = {form for form in _escaped_once(text) if form != text}
    found |= once | {twice for form in once for twice in _escaped_once(form)}
    # quote() with its default safe "/" too: the usual hand-made URI keeps a password's '/'.
    if not in_urls:
        return found
    return found | {quote(text, safe=""), quote(text), quote_plus(text), text.translate(_RFC_1738)}


def _escaped_once(text: str) -> set[str]:
    """TEXT inside one layer of quotes: JSON's two forms, repr's, and repr's inside single quotes
    when TEXT also holds a double quote (which is when repr escapes its ')."""
    return {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1],
            text.replace("\\", "\\\\").replace("'", "\\'")}


def base64_middles(text: str) -> set[str]:
    """What base64 of anything holding TEXT holds, whatever surrounds it (an HTTP Basic
    credential, "user:password"; a value in a Kubernetes secret): base64 writes 3 bytes as 4
    characters, so TEXT's bytes begin at one of three offsets in its groups, and at each the
    groups that hold TEXT's bytes alone come out the same. The standard alphabet only (HTTP Basic's,
    Kubernetes'): each form is one more search of all output, ~0.3 ns a byte. None under
    MIN_LINE_LENGTH characters. The one or two bytes at either edge, written into groups shared
    with what surrounds them, stay."""
    data = text.encode("utf-8", "surrogatepass")
    found = set()
    for skip in range(3):
        whole = (len(data) - skip) // 3 * 3
        middle = data[skip:skip + whole]
        if len(middle) * 4 // 3 >= MIN_LINE_LENGTH:
            found.add(base64.b64encode(middle).decode())
    return found


def cut_texts(value: str) -> set[str]:
    """The texts of VALUE whose head and tail are looked for on their own (a value cut short):
    as printed and as repr() quotes it (pydantic's cut), each on one line. None for a multi-line
    value (a key): its lines are forms of their own, and the head of its repr is its armour."""
    if "\n" in value.strip():
        return set()
    texts = {value, value.strip(), repr(value)[1:-1], repr(value.strip())[1:-1]}
    return {t for t in texts if "\n" not in t and len(t) > 2 * CUT_ANCHOR}


def families(value: str, *, in_base64: bool = True) -> list[set[str]]:
    """The forms of one secret value that are masked (see the module's docstring): the value's
    encodings, its base64 (IN_BASE64), and for a multi-line value each identifying line's."""
    if value is None or len(value) < MIN_SECRET_LENGTH:
        return []
    found = [encodings(value)]
    if value.strip() != value and len(value.strip()) >= MIN_SECRET_LENGTH:
        found.append(encodings(value.strip()))
    if in_base64:  # each a family of its own: they share no text with the others, nor with one another
        found += [{middle} for middle in base64_middles(value.strip() or value)]
    if "\n" in value:
        lines = {line.strip() for line in value.splitlines()}
        found += [encodings(line, in_urls=False) for line in lines
                  if len(line) >= MIN_LINE_LENGTH and not line.startswith(PEM_ARMOUR)]
    return found


def _minimal(anchors: set[bytes]) -> set[bytes]:
    """The anchors that contain no other: one that does (the whole key contains its lines) is not
    needed. Shortest first, each looked for among the shorter ones kept by their first
    _PREFIX bytes at each of its offsets: compared pairwise, a 64 KiB key's thousand lines
    took a second to build its masker."""
    kept: list[bytes] = []
    tiny: list[bytes] = []  # kept, under _PREFIX bytes (secrets of a few characters): looked for one by one
    by_prefix: dict[bytes, list[bytes]] = {}
    for anchor in sorted(anchors, key=len):
        if any(small in anchor for small in tiny) or _holds_one_of(anchor, by_prefix):
            continue
        kept.append(anchor)
        if len(anchor) < _PREFIX:
            tiny.append(anchor)
        else:
            by_prefix.setdefault(anchor[:_PREFIX], []).append(anchor)
    return set(kept)


def _holds_one_of(anchor: bytes, by_prefix: dict[bytes, list[bytes]]) -> bool:
    for offset in range(len(anchor) - _PREFIX + 1):
        found = by_prefix.get(anchor[offset:offset + _PREFIX])
        if found and any(anchor.startswith(other, offset) for other in found):
            return True
    return False


class Masker:
    def __init__(self, secrets: Iterable[str], *, tokens: Iterable[str] = ()) -> None:
        """SECRETS in every form; TOKENS (the executor's own bearer tokens, which a client sends as
        they are and never inside base64) in every form but base64, whose searches would cost the
        relay of every task, secrets or none, ~0.3 ns a byte each."""
        forms: set[bytes] = set()
        anchors: set[bytes] = set()
        # (anchor, text, head): an occurrence of ANCHOR, the head (or tail) of TEXT, is masked
        # with as much more of TEXT as follows (precedes) it.
        cuts: set[tuple[bytes, bytes, bool]] = set()
        for value, in_base64 in [*((v, True) for v in secrets), *((t, False) for t in tokens)]:
            own: set[bytes] = set()
            found = families(value, in_base64=in_base64)
            for family in found:
                family = {f.encode("utf-8", "surrogatepass") for f in family}
                forms |= family
                own |= _anchors_of(family)
            for text in cut_texts(value) if found else ():
                text = text.encode("utf-8", "surrogatepass")
                cuts |= {(text[:CUT_ANCHOR], text, True), (text[-CUT_ANCHOR:], text, False)}
                own |= {text[:CUT_ANCHOR], text[-CUT_ANCHOR:]}
            anchors |= _minimal(own)
        self._forms = sorted(forms, key=len, reverse=True)
        self._cuts = sorted(cuts)
        # Forms with a newline can begin several lines before the end of a read; the others only
        # on its last line.
        self._multiline = [(f, f[: f.index(b"\n") + 1]) for f in self._forms if b"\n" in f]
        self._line_hold = max([len(f) for f in self._forms if b"\n" not in f] +
                              [len(first) for _, first in self._multiline] + [0])
        self._longest = len(self._forms[0]) if self._forms else 0
        self._stride, self._blocks, self._short = _plan_filter(anchors)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def mask(self, text: str) -> str:
        if not self._forms:
            return text
        data = text.encode("utf-8", "surrogatepass")
        return self._mask(data, len(data), 0)[0].decode("utf-8", "surrogatepass")

    def mask_json(self, value: Any) -> Any:
        """A parsed JSON document with every secret form masked, the same structure: strings
        are masked, a number whose text holds a form becomes MASK, a key is masked like a string
        (two keys that become equal stay apart with a "#2" suffix)."""
        if not self._forms:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, (int, float)):
            text = json.dumps(value)
            return MASK if self.mask(text) != text else value
        if isinstance(value, list):
            return [self.mask_json(v) for v in value]
        if isinstance(value, dict):
            masked: dict[str, Any] = {}
            for key, item in value.items():
                name = self.mask(key)
                if name in masked:
                    n = 2
                    while f"{name}#{n}" in masked:
                        n += 1
                    name = f"{name}#{n}"
                masked[name] = self.mask_json(item)
            return masked
        return value

    def stream(self) -> MaskingStream:
        return MaskingStream(self)

    def mask_window(self, data: bytes, *, cut_at_start: bool, open_at_end: bool) -> bytes:
        """DATA, a window of output never masked (a flood past the log file's cap: only the
        window is kept, so only the window is masked, when it is read), masked, without what
        could be part of a form lying partly outside it. After a cut start that is everything
        before its first newline (a form without one cannot reach across it) and the last lines of
        a form with newlines that may have begun before it, or the longest form's length
        of a line longer than the window; before an open end (the task still writes), what a
        stream would hold back (_open_from)."""
        start, end = 0, len(data)
        if cut_at_start:
            newline = data.find(b"\n")
            start = newline + 1 if newline != -1 else min(end, self._longest)
            start += self._rest_of_multiline_at(data, start)
        if open_at_end:
            end = self._open_from(data)
        end = max(start, end)
        if not self._forms:
            return data[start:end]
        # Forms are searched in the whole window: one that begins before START (inside the
        # window, after the cut) or ends after END is still whole there, and is masked where
        # it reaches into what is kept.
        pieces, at = [], start
        for run_start, run_end in self._covered(data, 0):
            if run_end <= start:
                continue
            if run_start >= end:
                break
            pieces += [data[at:max(run_start, at)], _MASK]
            at = min(run_end, end)
        pieces.append(data[at:end])
        return b"".join(pieces)

    def _rest_of_multiline_at(self, data: bytes, at: int) -> int:
        """How many bytes from AT on are the last lines of a multi-line form that began before
        AT (lines too short to be forms of their own are masked nowhere else): the longest."""
        longest = 0
        for form, _ in self._multiline:
            newline = form.find(b"\n")
            while newline != -1:
                rest = form[newline + 1:]
                if len(rest) > longest and data.startswith(rest, at):
                    longest = len(rest)
                newline = form.find(b"\n", newline + 1)
        return longest

    # the search ------------------------------------------------------------------------------
    def _may_contain(self, data: bytes) -> bool:
        for form in self._short:
            if form in data:
                return True
        if not self._blocks or len(data) < 8:
            return False
        # Every 8-byte block of DATA at a multiple of 8 lies in its first len // 8 * 8 bytes.
        blocks = memoryview(data)[: len(data) & ~7].cast("Q")
        return not self._blocks.isdisjoint(blocks[:: self._stride])

    def _covered(self, data: bytes, ahead: int) -> list[list[int]]:
        """The runs [start, end) of DATA covered by a form, merged, in order; the first AHEAD
        bytes are covered already (the rest of a form an earlier read began)."""
        spans = [(0, ahead)] if ahead else []
        if self._may_contain(data):
            for form in self._forms:
                at = data.find(form)
                while at != -1:
                    spans.append((at, at + len(form)))
                    at = data.find(form, at + 1)
            for anchor, text, head in self._cuts:
                at = data.find(anchor)
                while at != -1:
                    spans.append(_cut_span(data, at, anchor, text, head))
                    at = data.find(anchor, at + 1)
        if not spans:
            return []
        spans.sort()
        runs = [list(spans[0])]
        for start, end in spans[1:]:
            if start < runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([start, end])
        return runs

    def _mask(self, data: bytes, cut: int, ahead: int) -> tuple[bytes | memoryview, int]:
        """DATA[:CUT] masked, and how many bytes from CUT on are covered by a form already
        masked in it. Forms are searched in all of DATA, so one that straddles CUT is masked
        on both sides. A run at 0 that continues an earlier mask (AHEAD) adds no second MASK."""
        runs = self._covered(data, ahead)
        if not runs:
            return (data if cut == len(data) else memoryview(data)[:cut]), 0
        pieces = []
        at = 0
        carried = 0
        for start, end in runs:
            if start >= cut:
                break
            pieces.append(data[at:start])
            if not (start == 0 and ahead):
                pieces.append(_MASK)
            at = min(end, cut)
            if end > cut:
                carried = end - cut
        pieces.append(data[at:cut])
        if cut == 0 and ahead:
            carried = max(carried, runs[0][1])
        return b"".join(pieces), carried

    def _settled(self, held: bytes, data: bytes) -> bool:
        """Whether no form begins in HELD, now that DATA follows it: one that did would end
        within the longest form's length of DATA, or still be open where that much ends."""
        seam = held + data[: self._longest]
        return self._open_from(seam) >= len(held) and all(start >= len(held) for start, _ in self._covered(seam, 0))

    def _open_from(self, data: bytes) -> int:
        """Where a form may have begun in DATA without ending in it: everything before is final."""
        n = len(data)
        if not self._forms:
            return n
        # A form without a newline (or the first line of one with) begins on the last line.
        cut = max(data.rfind(b"\n") + 1, n - self._line_hold + 1, 0)
        for form, first in self._multiline:
            at = data.find(first, max(0, n - len(form) + 1), cut + len(first) - 1)
            while at != -1:
                if form.startswith(data[at:]):
                    cut = at
                    break
                at = data.find(first, at + 1, cut + len(first) - 1)
        return cut


class MaskingStream:
    """Masks output that arrives in pieces cut anywhere: feed() returns what is final, masked;
    finish() the rest. What it holds back is at most the longest form. Both return a list of
    pieces, bytes or (so that a flood's reads are not copied) memoryviews of what was fed."""

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._held = b""
        self._ahead = 0  # bytes at the start of _held inside a form whose MASK is already out

    def feed(self, data: bytes) -> list[bytes | memoryview]:
        if not self._masker:
            return [data]
        pieces = []
        if self._held and not self._ahead and self._masker._settled(self._held, data):
            pieces.append(self._held)  # nothing begins in it after all: out as it is, DATA not copied
            self._held = b""
        data = self._held + data if self._held else data
        cut = self._masker._open_from(data)
        out, self._ahead = self._masker._mask(data, cut, self._ahead)
        self._held = data[cut:]
        pieces.append(out)
        return pieces

    def finish(self) -> list[bytes | memoryview]:
        data, self._held = self._held, b""
        out, self._ahead = self._masker._mask(data, len(data), self._ahead) if data else (b"", 0)
        return [out]

    def release(self) -> list[bytes | memoryview]:
        """The rest, unmasked, for a consumer that masks it later with what follows it (the task
        log's window past the file's cap): finishing would mask a multi-line form's first lines
        one by one, leaving no whole form for that later masking to find. The bytes of a form
        whose MASK is out already are left out."""
        data, self._held = self._held[self._ahead:], b""
        self._ahead = 0
        return [data]

    @property
    def held(self) -> int:
        return len(self._held)


def _cut_span(data: bytes, at: int, anchor: bytes, text: bytes, head: bool) -> tuple[int, int]:
    """The span of DATA that is TEXT cut short, around ANCHOR (TEXT's head, or tail) found at AT:
    from it, as far as DATA goes on as TEXT does (back from its end, as far as DATA went on).
    Never longer than TEXT, so the stream holds back enough for it (a form of its own)."""
    if head:
        if data.startswith(text, at):  # not cut: the whole text (a flood of it takes this way)
            return at, at + len(text)
        end = min(len(data), at + len(text))
        same = len(anchor)
        while at + same < end and data[at + same] == text[same]:
            same += 1
        cut = at + same
        while cut > at and cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut -= 1  # not inside a character: the one the text and DATA part at stays whole, in clear
        return at, cut
    end = at + len(anchor)
    start = max(0, end - len(text))
    if data.startswith(text, start) and end - start == len(text):
        return start, end
    same = len(anchor)
    while end - same > start and data[end - same - 1] == text[-same - 1]:
        same += 1
    cut = end - same
    while cut < end and data[cut] & 0xC0 == 0x80:
        cut += 1  # likewise at the front
    return cut, end


def _anchors_of(family: set[bytes]) -> set[bytes]:
    """What the filter looks for to find any form of FAMILY (one text's encodings): their
    longest common substring when it is _MIN_ANCHOR bytes or more and cheaper to find than the
    forms one by one, else each form. Only for short families: longer forms go to the block
    set, where their number costs nothing."""
    shortest = min(family, key=len)
    if len(family) == 1 or len(shortest) > _SHORT_FORM or b"\n" in shortest:
        return family
    best, low, high = b"", _MIN_ANCHOR, len(shortest)
    while low <= high:  # a common substring of length L means one of every length below L
        size = (low + high) // 2
        common = next((shortest[i:i + size] for i in range(len(shortest) - size + 1)
                       if all(shortest[i:i + size] in f for f in family)), None)
        if common is None:
            high = size - 1
        else:
            best, low = common, size + 1
    if not best or _find_ns_per_byte(len(best)) > sum(_find_ns_per_byte(len(f)) for f in family):
        return family
    return {best}


def _plan_filter(anchors: set[bytes]) -> tuple[int, frozenset[int], list[bytes]]:
    """The filter's stride (in 8-byte blocks), the set of every 8-byte piece of the forms it
    covers, and the forms left to bytes.find. Wherever a form of length L >= 8*K + 7 occurs, it
    contains a whole 8-byte block of the text that starts at a multiple of 8*K; the stride is
    the K that costs least by the model above, or none (0) when finds alone are cheaper."""
    best = (sum(_find_ns_per_byte(len(a)) for a in anchors), 0)
    for k in range(1, 9):
        short = [a for a in anchors if len(a) < 8 * k + 7]
        if len(short) == len(anchors):
            continue
        best = min(best, (_BLOCK_LOOKUP_NS / (8 * k) + sum(_find_ns_per_byte(len(a)) for a in short), k))
    k = best[1]
    if not k:
        return 1, frozenset(), sorted(anchors, key=len)
    # Every 8-byte piece at every offset, as the text's blocks are read (native order): the
    # pieces at offsets o, o + 8, o + 16, ... in one C-level unpacking per o.
    blocks = frozenset(block for a in anchors if len(a) >= 8 * k + 7 for o in range(8)
                       for (block,) in _BLOCKS.iter_unpack(a[o:o + (len(a) - o) // 8 * 8]))
    return k, blocks, sorted((a for a in anchors if len(a) < 8 * k + 7), key=len)
