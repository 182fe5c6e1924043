"""Unicode normalisation of prompt text: NFKC, and no control, zero-width, bidi or tag characters.

Invisible and look-alike characters are how instructions get smuggled past pattern checks and
into the model, so every later check runs on normalised text. The function is idempotent, which
the sanitizer relies on to be idempotent itself.
"""

from __future__ import annotations

import itertools
import operator
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "NormalizeReport",
    "TokenStats",
    "decode_tag_text",
    "normalize",
    "normalize_report",
    "plain_ascii",
    "token_stats",
    "tokens",
]

# C0/C1 controls except \t \n \r.
_CONTROL = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# Zero-width and other invisible formatting characters (soft hyphen, joiners, word joiner,
# invisible operators, BOM, variation selectors, interlinear annotation, musical formatting).
_ZERO_WIDTH = (
    "\u00ad\u034f\u180e\u200b-\u200d\u2060-\u2064\ufeff\ufe00-\ufe0f\ufff9-\ufffb"
    "\U0001d173-\U0001d17a\U000e0100-\U000e01ef"
)
# Bidirectional marks, embeddings, overrides and isolates.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u206f"
# Unicode tag characters: invisible, but some models read them as ASCII.
_TAGS = "\U000e0000-\U000e007f"
# Lone surrogates cannot be encoded as UTF-8 and only appear in broken or hostile input.
_SURROGATES = "\ud800-\udfff"

_ANY = re.compile(f"[{_CONTROL}{_ZERO_WIDTH}{_BIDI}{_TAGS}{_SURROGATES}\u2028\u2029]")
_CONTROL_RE = re.compile(f"[{_CONTROL}{_SURROGATES}]")
_ZERO_WIDTH_RE = re.compile(f"[{_ZERO_WIDTH}]")
_BIDI_RE = re.compile(f"[{_BIDI}]")
_BIDI_OVERRIDE_RE = re.compile("[\u202d\u202e]")
_TAGS_RE = re.compile(f"[{_TAGS}]")
_TAG_RUN_RE = re.compile("[\U000e0020-\U000e007e]{2,}")
_LINE_SEPARATORS = str.maketrans({"\u2028": "\n", "\u2029": "\n"})
_LAYOUT = str.maketrans("", "", "\t\n\r")
_MAX_PASSES = 4


@dataclass(frozen=True, slots=True)
class NormalizeReport:
    """What normalisation removed: the counts feed the obfuscation signal, `hidden_text` is
    the ASCII carried by Unicode tag characters (scanned separately, then discarded)."""

    text: str
    removed_controls: int = 0
    removed_zero_width: int = 0
    removed_bidi: int = 0
    bidi_overrides: int = 0
    removed_tags: int = 0
    nfkc_changed: bool = False
    hidden_text: str = ""

    @property
    def changed(self) -> bool:
        return bool(
            self.removed_controls
            or self.removed_zero_width
            or self.removed_bidi
            or self.removed_tags
            or self.nfkc_changed
        )


def decode_tag_text(text: str) -> str:
    """ASCII hidden in runs of Unicode tag characters (emoji flag sequences are too short or
    end in CANCEL TAG, and are skipped)."""
    if _TAGS_RE.search(text) is None:
        return ""
    parts: list[str] = []
    for match in _TAG_RUN_RE.finditer(text):
        end = match.end()
        if end < len(text) and text[end] == "\U000e007f" and match.end() - match.start() <= 8:
            continue  # subdivision flag such as the flag of Scotland
        parts.append("".join(chr(ord(ch) - 0xE0000) for ch in match.group()))
    return "\n".join(parts)


def _strip(text: str) -> str:
    return _ANY.sub("", text.translate(_LINE_SEPARATORS))


# Printable ASCII plus tab and newlines, as bytes to delete: what is left is not plain.
_PLAIN_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\r"


@lru_cache(maxsize=32)
def plain_ascii(text: str) -> bool:
    """Printable ASCII plus tab and newlines is already normal (NFKC is the identity on ASCII);
    cached because the abuse and normalisation checks of one request ask about the same text."""
    return text.isascii() and not text.encode("ascii").translate(None, _PLAIN_BYTES)


def normalize(text: str) -> str:
    """NFKC with invisible characters removed; `normalize(normalize(x)) == normalize(x)`."""
    if plain_ascii(text) or (_ANY.search(text) is None and unicodedata.is_normalized("NFKC", text)):
        return text
    current = text
    for _ in range(_MAX_PASSES):
        stripped = _strip(current)
        composed = unicodedata.normalize("NFKC", stripped)
        if composed == current:
            return composed
        current = composed
    # NFKC output never contains the stripped characters, so this point is not reached in
    # practice; one more strip keeps the guarantee without looping forever.
    return _strip(current)


def normalize_report(text: str) -> NormalizeReport:
    """`normalize` plus counts of what was removed, for the obfuscation signal."""
    if plain_ascii(text) or (_ANY.search(text) is None and unicodedata.is_normalized("NFKC", text)):
        return NormalizeReport(text=text)
    result = normalize(text)
    without_invisible = _strip(text)
    return NormalizeReport(
        text=result,
        removed_controls=len(_CONTROL_RE.findall(text)),
        removed_zero_width=len(_ZERO_WIDTH_RE.findall(text)),
        removed_bidi=len(_BIDI_RE.findall(text)),
        bidi_overrides=len(_BIDI_OVERRIDE_RE.findall(text)),
        removed_tags=len(_TAGS_RE.findall(text)),
        nfkc_changed=unicodedata.normalize("NFKC", without_invisible) != without_invisible,
        hidden_text=decode_tag_text(text),
    )


@lru_cache(maxsize=32)
def tokens(text: str) -> tuple[str, ...]:
    """Whitespace tokens of a text; cached because the abuse, PII and injection checks of one
    request all split the same strings."""
    return tuple(text.split())


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Token-length facts several checks need: computed once per text instead of once per check."""

    count: int
    longest: int
    singles: int
    long_tokens: tuple[str, ...]  # tokens of LONG_TOKEN characters or more: keys, encoded payloads


LONG_TOKEN = 16


# ASCII bytes reduced to " " (what str.split() splits at) or "x" (anything else).
_WORD_SHAPE = bytes(32 if chr(byte) in " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f" else 120 for byte in range(128)) + (
    b"x" * 128
)
_LONG_SHAPE = b"x" * LONG_TOKEN


@lru_cache(maxsize=32)
def token_stats(text: str) -> TokenStats:
    if not text.isascii():
        words = tokens(text)
        lengths = list(map(len, words))
        longer = tuple(itertools.compress(words, map(operator.ge, lengths, itertools.repeat(LONG_TOKEN))))
        return TokenStats(len(words), max(lengths, default=0), lengths.count(1), longer)
    # ASCII: the same facts from a byte "shape" of the text, without splitting it into words.
    # A token starts at every " x" of the blank-prefixed shape, a longer one at every " xx".
    shape = text.encode("ascii").translate(_WORD_SHAPE)
    padded = b" " + shape
    count = padded.count(b" x")
    singles = count - padded.count(b" xx")
    long_tokens: list[str] = []
    position = shape.find(_LONG_SHAPE)
    while position != -1:
        start = shape.rfind(b" ", 0, position) + 1
        end = shape.find(b" ", position)
        end = len(shape) if end == -1 else end
        long_tokens.append(text[start:end])
        position = shape.find(_LONG_SHAPE, end)
    if long_tokens:
        longest = max(map(len, long_tokens))
    else:  # every token is shorter than LONG_TOKEN: binary search the longest run of "x"
        low, high = 0, LONG_TOKEN - 1
        while low < high:
            middle = (low + high + 1) // 2
            if b"x" * middle in shape:
                low = middle
            else:
                high = middle - 1
        longest = low
    return TokenStats(count, longest, singles, tuple(long_tokens))
