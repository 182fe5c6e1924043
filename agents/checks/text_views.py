"""Views of a text for the injection rules: lower-cased as written; with leetspeak, spaced
letters, homoglyphs or reversal undone; payloads decoded from base64, hex, URL or entity
encoding, rescanned to a fixed depth. Attackers obfuscate exactly the phrases the rules look
for, so the rules read every view (agents/checks/injection.py)."""

from __future__ import annotations

import base64
import binascii
import html
import re
import urllib.parse
from collections.abc import Sequence

from agents.checks.normalize import normalize, token_stats

MAX_DECODE_DEPTH = 2
MAX_DECODED_CHARS = 16_384
MAX_CANDIDATES = 8
ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZabcdefghijklm",
)


def lower(text: str) -> str:
    lowered = text.lower()
    return lowered.replace("i\u0307", "i") if "\u0307" in lowered else lowered


# ----------------------------------------------------------------------------- views
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_LEET_HINT = re.compile(r"[013457](?<=[a-z][013457])[013457]*(?=[a-z])")
# Bytes of a text reduced to "a" (ASCII lower-case letter), "1" (leet digit) or " ": counting
# in this shape is a cheap necessary condition for the leetspeak hint.
_LEET_SHAPE = bytes(
    ord("a") if chr(byte) in "abcdefghijklmnopqrstuvwxyz" else ord("1") if chr(byte) in "013457" else 32
    for byte in range(256)
)
_SPACED = re.compile(r"[^\W\d_](?<![^\W_][^\W\d_])(?:[ .\-_*|][^\W\d_]){2,}(?![^\W_])")
_SPACED_SEP = re.compile(r"[ .\-_*|]")
_BLANKS = re.compile(r"  +")
_CONFUSABLES = str.maketrans("аеорсхуіјѕԁɡһкмтвнзαεοριυνκτ", "aeopcxyijsdghkmtbhzaeopiuvkt")
_MIXED_SCRIPT = re.compile(r"[a-z][\u0370-\u03ff\u0400-\u04ff]|[\u0370-\u03ff\u0400-\u04ff][a-z]")
_REVERSED_WORDS = ("snoitcurtsni", "erongi", "tpmorp", "metsys")
_ENCODED_MARKS = ("%", "&#", "\\u", "\\x")
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")
_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{16,}")
_TOKEN_EDGES = "\"'`.,;:!?()[]{}<>"
_HEX_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2}){4,}")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ENTITY = re.compile(r"&#x?[0-9A-Fa-f]{1,6};")
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_URLSAFE = str.maketrans("-_", "+/")


def _printable_text(raw: bytes) -> str | None:
    """Decoded bytes that read as text (not a binary blob or a random word that happens to
    be valid base64)."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(decoded) < 6:
        return None
    good = sum(ch.isprintable() or ch in "\n\r\t" for ch in decoded)
    letters = sum(ch.isalpha() for ch in decoded)
    return decoded if good >= 0.9 * len(decoded) and letters >= 0.4 * len(decoded) else None


def _decoded_payloads(text: str, long_tokens: Sequence[str]) -> list[tuple[str, str]]:
    """Plain text hidden in encoded tokens (base64, hex) or escapes; bounded in count and size."""
    found: list[tuple[str, str]] = []
    for raw_token in long_tokens:
        if len(found) >= MAX_CANDIDATES:
            break
        token = raw_token.strip(_TOKEN_EDGES)[:MAX_DECODED_CHARS]
        decoded: str | None = None
        if _HEX_TOKEN.fullmatch(token) and len(token) % 2 == 0 and not token.isdigit():
            decoded = _printable_text(bytes.fromhex(token))
            if decoded is not None:
                found.append(("hex", decoded))
                continue
        if _B64_TOKEN.fullmatch(token) and not token.isalpha():
            body = token.translate(_URLSAFE).rstrip("=")
            if len(body) % 4 != 1:
                try:
                    decoded = _printable_text(base64.b64decode(body + "=" * (-len(body) % 4)))
                except (binascii.Error, ValueError):
                    decoded = None
                if decoded is not None:
                    found.append(("base64", decoded))
    head = text[:MAX_DECODED_CHARS]
    if "\\x" in head:
        escapes = _HEX_ESCAPES.search(head)
        decoded = _printable_text(bytes.fromhex(escapes.group().replace("\\x", ""))) if escapes else None
        if decoded is not None:
            found.append(("hex", decoded))
    if "%" in head and len(_PERCENT.findall(head)) >= 3:
        found.append(("url_encoding", urllib.parse.unquote(head)))
    if "&#" in head and len(_ENTITY.findall(head)) >= 3:
        found.append(("html_entities", html.unescape(head)))
    if "\\u" in head and len(_UNICODE_ESCAPE.findall(head)) >= 3:
        found.append(("unicode_escapes", _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), head)))
    return found


def views_of(text: str, depth: int = 0, technique: str = "plain") -> list[tuple[str, str]]:
    """(technique, lower-cased text) pairs to scan. Each extra view is built only when a cheap
    check says the text may need it; decoded payloads recurse to a fixed depth."""
    raw_lower = lower(text).replace("\t", " ")
    lowered = raw_lower
    while "  " in lowered:  # same as _BLANKS.sub(" ", ...): each pass halves every run of blanks
        lowered = lowered.replace("  ", " ")
    prefix = "" if technique == "plain" else technique + "+"
    views = [(technique, lowered)]
    stats = token_stats(text)
    if "rot13" in lowered or "rot-13" in lowered or "caesar" in lowered:
        views.append((prefix + "rot13", lowered.translate(ROT13)))
    shape = lowered.encode("utf-8", "surrogatepass").translate(_LEET_SHAPE)
    # A leet hint is a run of leet digits between two letters: it needs "a1" and "1a" in the shape.
    if (
        shape.count(b"1") >= 3
        and shape.count(b"a1") >= 2
        and shape.count(b"1a") >= 2
        and len(_LEET_HINT.findall(lowered)) >= 2
    ):
        views.append((prefix + "leetspeak", lowered.translate(_LEET)))
    singles = stats.singles
    if singles >= 6 and singles * 4 >= stats.count and _SPACED.search(raw_lower):
        collapsed = _SPACED.sub(lambda m: _SPACED_SEP.sub("", m.group()), raw_lower)
        views.append((prefix + "spaced_letters", _BLANKS.sub(" ", collapsed)))
    if not lowered.isascii() and _MIXED_SCRIPT.search(lowered):
        views.append((prefix + "homoglyphs", lowered.translate(_CONFUSABLES)))
    if any(word in lowered for word in _REVERSED_WORDS):
        views.append((prefix + "reversed", lowered[::-1]))
    if depth < MAX_DECODE_DEPTH and (stats.long_tokens or any(m in text for m in _ENCODED_MARKS)):
        for name, decoded in _decoded_payloads(text, stats.long_tokens):
            views.extend(views_of(normalize(decoded), depth + 1, prefix + name))
    return views
