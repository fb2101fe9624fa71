"""The one scanner over JSON text: the stretches that lie outside strings.

The JSON guards (booleans in arrays, duplicate keys) and the big-array reader (brackets) all need
to know what stands outside strings, where a quote, bracket or "t" is structure and not text.
Every caller runs after orjson or simdjson has accepted the body, so the strings are well formed.

Two ways to walk, the same answer: a small body is one regex pass over its strings (~2 us for the
notebook's Linear); on a big one `bytes.find` jumps from quote to quote at memchr speed, so the
numbers and base64 between quotes are never walked in Python (8 ms for 60 MB of lists, where a
regex stepping through every byte would take ~0.6 s).
"""

import re
from collections.abc import Iterator

SMALL_BYTES = 16384
"""Bodies below this size are walked with the regex."""
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"([ \t\r\n]*:)?')
"""A JSON string, and the colon after it when it is an object key."""
_COLON = re.compile(rb"[ \t\r\n]*:")


def outside_strings(body: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each stretch outside strings, in order: before the first string, between
    each string and the next, after the last one. The stretch after a string starts at the byte
    after its closing quote. Stops after an unterminated string."""
    start, size = 0, len(body)
    if size < SMALL_BYTES:
        for match in _STRING.finditer(body):
            yield start, match.start()
            start = match.start(1) if match.group(1) else match.end()
        yield start, size
        return
    find = body.find
    while (quote := find(b'"', start)) != -1:
        yield start, quote
        end = find(b'"', quote + 1)
        while end != -1 and _escaped(body, end):
            end = find(b'"', end + 1)
        if end == -1:
            return
        start = end + 1
    yield start, size


def count_keys(body: bytes) -> int:
    """Strings followed by a colon: object keys. On a small body the regex's own colon group counts
    them in one C pass (~2 us for the notebook's Linear); on a big one, the stretches after each string."""
    if len(body) < SMALL_BYTES:
        return sum(1 for colon in _STRING.findall(body) if colon)
    stretches = outside_strings(body)
    next(stretches)  # the one before the first string follows no string
    return sum(1 for start, end in stretches if _COLON.match(body, start, end))


def _escaped(body: bytes, at: int) -> bool:
    """Whether the byte at `at` follows an odd run of backslashes (read in growing windows, so a
    long run costs a few slices, not a Python step per backslash)."""
    span = 8
    while True:
        window = body[max(0, at - span) : at]
        run = len(window) - len(window.rstrip(b"\\"))
        if run < len(window) or span >= at:
            return run % 2 == 1
        span *= 4
