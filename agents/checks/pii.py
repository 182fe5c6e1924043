"""PII and secret redaction with typed, numbered placeholders that can be restored in a response.

Personal data must not reach model providers or the analytics store, yet the user's answer may
need it back: each value becomes `[TYPE_n]`, numbered per request (the same value keeps the same
placeholder), and `restore` puts the originals back into the model's reply. Numeric types are
checksum-validated (Luhn, mod-97) so ordinary numbers are not redacted.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from agents.checks.normalize import token_stats

__all__ = [
    "PiiAction",
    "PiiMatch",
    "PiiPolicy",
    "PiiType",
    "RedactionMapping",
    "RedactionResult",
    "find_pii",
    "iban_valid",
    "luhn_valid",
    "redact",
    "restore",
]


class PiiType(StrEnum):
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CARD = "CARD"
    IBAN = "IBAN"
    SSN = "SSN"
    IPV4 = "IPV4"
    IPV6 = "IPV6"
    AWS_KEY = "AWS_KEY"
    API_KEY = "API_KEY"
    JWT = "JWT"
    PRIVATE_KEY = "PRIVATE_KEY"


class PiiAction(StrEnum):
    REDACT = "redact"
    BLOCK = "block"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """Action per type; BLOCK also redacts, so a blocked request never carries the value on."""

    actions: Mapping[PiiType, PiiAction] = field(default_factory=lambda: MappingProxyType({}))
    default: PiiAction = PiiAction.REDACT

    def action(self, pii_type: PiiType) -> PiiAction:
        return self.actions.get(pii_type, self.default)


@dataclass(frozen=True, slots=True)
class PiiMatch:
    type: PiiType
    start: int
    end: int
    value: str


# Patterns open with a consuming character class (lookbehinds come after it) so the regex
# engine can skip non-candidate positions quickly; literal prefilters in `find_pii` skip whole
# patterns when their anchor is absent.
_A = re.ASCII
_EMAIL = re.compile(
    r"[\w%+\-](?<![\w.%+\-][\w%+\-])(?:[\w.%+\-]{0,62}[\w%+\-])?+@(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}(?![\w\-])"
)
_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]{0,16384}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"|(?:[ \t]*\r?\n[ \t]*[A-Za-z0-9+/=:,\-]{1,128})*)"
)
_JWT = re.compile(r"eyJ(?<![\w\-]eyJ)[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*", _A)
_AWS = re.compile(
    r"A(?<![A-Z0-9]A)(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA|SCA)[A-Z0-9]{16}(?![A-Z0-9])"
    r"|(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
    _A,
)
_AWS_PREFIXES = (
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AGPA",
    "AIDA",
    "AIPA",
    "ANPA",
    "ANVA",
    "APKA",
    "AROA",
    "ASCA",
)
_API_KEY = re.compile(
    r"[sprgxAh](?<![\w\-][sprgxAh])(?:"
    r"(?<=s)k-(?:proj-|ant-(?:api\d\d-)?|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"
    r"|(?<=[srp])k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|(?<=g)h[pousr]_[A-Za-z0-9]{36,255}"
    r"|(?<=g)ithub_pat_[A-Za-z0-9_]{22,255}"
    r"|(?<=x)ox[abposre]-[A-Za-z0-9\-]{10,}"
    r"|(?<=A)Iza[0-9A-Za-z_\-]{35}"
    r"|(?<=g)lpat-[A-Za-z0-9_\-]{20,}"
    r"|(?<=h)f_[A-Za-z0-9]{30,}"
    r")(?![\w\-])",
    _A,
)
_API_HINTS = (
    "sk-",
    "sk_",
    "rk_",
    "pk_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "AIza",
    "glpat-",
    "hf_",
)
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])", _A)
_CARD = re.compile(r"[0-9](?<![\w\-][0-9])(?:[ \-]?[0-9]){11,18}(?![\w\-]|[.,][0-9])", _A)
_SSN = re.compile(r"[0-9](?<![\w\-][0-9])[0-9]{2}([\- ])[0-9]{2}\1[0-9]{4}(?![\w\-]|[.,][0-9])", _A)
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.[0-9])", _A)
_IPV6 = re.compile(
    r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f]{0,3}:(?:[0-9A-Fa-f]{0,4}:){1,6}"
    r"(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?:%[\w.]+)?(?![\w:])",
    _A,
)
_PHONE = re.compile(
    r"[+(0-9](?<![\w+.\-/][+(0-9])(?:(?<=\+)|(?<=0)0|)\(?[0-9]?[0-9 ().\-/]{5,20}[0-9]"
    r"(?:[ ]?(?:x|ext\.?|#)[ ]?[0-9]{1,6})?(?![\w\-/]|[.,][0-9])",
    _A,
)
# Bytes of a text reduced to "0" (ASCII digit), "A" (ASCII capital) or " ": digit counts and
# an IBAN's opening become substring checks. UTF-8 bytes of other characters are >= 0x80.
_SHAPE = bytes(
    ord("0") if chr(byte).isdigit() and byte < 128 else ord("A") if "A" <= chr(byte) <= "Z" else 32
    for byte in range(256)
)
_NUMERIC = re.compile(r"[0-9](?:[ ().\-/]*+[0-9]){3,}", _A)
_SEPARATORS = " ().-/"
# ASCII reduced to "0" (digit), "s" (separator) or "."; _NUMERIC over text is _NUMERIC_SHAPE here.
_RUN_SHAPE = bytes(
    ord("0") if 48 <= byte <= 57 else ord("s") if chr(byte) in _SEPARATORS else ord(".")
    for byte in range(256)
)
_NUMERIC_SHAPE = re.compile(rb"0(?:s*+0){3,}")
_RUN_LEAD = frozenset(" ().-/+")
_EXT_BEFORE = re.compile(r"(?:x|ext\.?|#) ?$")
_HEX = frozenset("0123456789abcdefABCDEF")
_CARD_SEPARATOR = re.compile(r"[ \-]")
_IBAN_HEAD = re.compile(r"[A-Z]{2}[0-9]{2} ?$")  # digits after "DE89 " belong to an IBAN, valid or not
_NOT_PHONE_SHAPES = re.compile(r"[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3}")  # SSN, IPv4
_PHONE_CONTEXT = re.compile(
    r"(?:contact|kontakt|call|phone|tel|mobile|cell|whatsapp|sms|telefon|téléphone|portable|teléfono|móvil|movil|"
    r"telefono|cellulare|telemóvel|telefone|celular|numero|número|nummer|номер|телефон|電話)\w*\W{0,12}$"
)
_ID_CONTEXT = re.compile(
    r"(?:order|ref|reference|id|invoice|account|acct|ticket|tracking|case|no\.?|nr\.?|#|pedido|bestell\w*|commande|"
    r"ordine|facture|rechnung|factura|fattura|sku|ean|isbn|serial)\W{0,3}$"
)
_PHONE_EXT = re.compile(r"[ ]?(?:x|ext\.?|#)[ ]?\d{1,6}$")
_DATE = re.compile(
    r"^(?:\d{4}[\-./]\d{1,2}[\-./]\d{1,2}|\d{1,2}[\-./]\d{1,2}[\-./]\d{2,4})$"
    r"|^(?:1[89]|20)\d\d ?[\-/] ?(?:1[89]|20)\d\d$"
)
_THOUSANDS = re.compile(r"^\d{1,3}(?:\.\d{3})+$|^\d{1,2}(?: \d{3})+$|^\d+\.\d+$")
_MAX_ROUNDS = 4
_PLACEHOLDER = re.compile(r"\[(" + "|".join(t.value for t in PiiType) + r")_(\d{1,6})\]")
_BLANK = re.compile(r"\[(?:x+|(?:" + "|".join(t.value for t in PiiType) + r")_\d{1,6})\]")
_CONTEXT_CHARS = 40

_MAESTRO_12 = ("50", "56", "57", "58", "6304", "6759", "676", "0604", "6390")


def luhn_valid(digits: str) -> bool:
    """Luhn checksum, used by every payment card number."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 shape (country, check digits, 11-30 alphanumerics) and mod-97 == 1."""
    iban = candidate.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    if not rearranged.isalnum() or not rearranged.isascii():
        return False
    remainder = 0
    for char in rearranged:
        remainder = (remainder * (100 if char.isalpha() else 10) + int(char, 36)) % 97
    return remainder == 1


def _card_ok(candidate: str) -> bool:
    groups = _CARD_SEPARATOR.split(candidate)
    digits = "".join(groups)
    if len(digits) == 12 and not digits.startswith(_MAESTRO_12):
        return False
    # Issuer prefixes start with 1-6 (Maestro 0604 aside); 13-digit cards are old Visa only.
    # This keeps EAN-13 barcodes and other long IDs from passing on the Luhn check alone.
    if (digits[0] not in "123456" and not digits.startswith("0604")) or (
        len(digits) == 13 and digits[0] != "4"
    ):
        return False
    if len(groups) > 1:
        sizes = [len(group) for group in groups]
        # Printed cards group digits in fours (Amex and Diners: 4-6-5 / 4-6-4); other
        # spacing is a list of numbers, not a card.
        fours = all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4
        if not fours and sizes not in ([4, 6, 5], [4, 6, 4]):
            return False
    return 12 <= len(digits) <= 19 and luhn_valid(digits)


def _shrunk(
    text: str,
    pattern: re.Pattern[str],
    pii_type: PiiType,
    valid: Callable[[str], bool],
    shortest: int,
    regions: Sequence[tuple[int, int]] | None = None,
) -> Iterable[PiiMatch]:
    """Greedy candidates that fail their check may still start with a valid value
    ("DE89...3000 0100" is an IBAN and another number): retry shorter prefixes that end on a
    token boundary, then resume right after what was taken (or one character further), so what
    is found does not depend on what follows or on what a neighbour was replaced with."""
    for position, limit in regions if regions is not None else ((0, len(text)),):
        while (match := pattern.search(text, position, limit)) is not None:
            value, start = match.group(), match.start()
            if valid(value):
                yield PiiMatch(pii_type, start, match.end(), value)
                position = match.end()
                continue
            for end in range(len(value) - 1, shortest - 1, -1):
                if not value[end].isalnum() and value[end - 1].isalnum() and valid(value[:end]):
                    yield PiiMatch(pii_type, start, start + end, value[:end])
                    position = start + end
                    break
            else:
                position = start + 1


def _before(text: str, start: int, blanks: Sequence[tuple[int, int]]) -> str:
    """The `_CONTEXT_CHARS` characters before `start`, each blank span counted as one space."""
    pieces: list[str] = []
    size, cursor = 0, start
    index = bisect.bisect_right(blanks, (start, start)) - 1
    while size < _CONTEXT_CHARS:
        floor = max(cursor - (_CONTEXT_CHARS - size), 0)
        if index < 0 or blanks[index][1] <= floor:
            pieces.append(text[floor:cursor])
            break
        begin, end = blanks[index]
        pieces.append(text[end:cursor])
        pieces.append(" ")
        size += cursor - end + 1
        cursor, index = begin, index - 1
    return "".join(reversed(pieces))[-_CONTEXT_CHARS:]


def _phones(text: str, regions: Sequence[tuple[int, int]] | None = None) -> Iterable[PiiMatch]:
    """Phone candidates that pass `_phone_ok`. The words before a bare number decide whether it
    is a phone; masked values, placeholders and phones already taken read as one space there,
    so the decision is the same before and after redaction."""
    blanks = [match.span() for match in _BLANK.finditer(text)] if "[" in text else []
    for match in _finditer(_PHONE, text, regions):
        start, value = match.start(), match.group()
        while value.startswith("(") and value.count("(") > value.count(")"):
            start, value = start + 1, value[1:]
        if _phone_ok(value, _before(text, start, blanks)):
            bisect.insort(blanks, (start, match.end()))
            yield PiiMatch(PiiType.PHONE, start, match.end(), value)


def _phone_ok(candidate: str, before: str = "") -> bool:
    body = (
        _PHONE_EXT.sub("", candidate)
        if candidate[-1:].isdigit() and ("x" in candidate or "#" in candidate)
        else candidate
    )
    digits = sum(map(str.isdigit, body))
    international = body.startswith(("+", "00"))
    if not 7 <= digits <= 15:
        return False
    if _DATE.match(body) or _THOUSANDS.match(body):
        return False
    if body.count("(") != body.count(")") or _NOT_PHONE_SHAPES.fullmatch(body):
        return False
    if body[-2:-1] in "- " and body[-2:-1] and body.count(body[-2]) >= 2:
        return False  # ISBN-10 style "0-695-84830-5": phone numbers do not end in a lone digit
    if body.isdigit():
        if _ID_CONTEXT.search(before.lower()) is not None:
            return False
        # A bare run of digits is an ID as often as a phone: accept national-length numbers
        # (not 10-digit runs starting with 1: Unix timestamps), 9 digits only next to a word
        # that announces a phone number.
        if digits == 9:
            return _PHONE_CONTEXT.search(before.lower()) is not None
        return digits == 11 or (digits == 10 and body[0] != "1")
    if international:
        return digits >= 8
    return digits <= 12 or body.startswith("(")


def _ssn_ok(candidate: str) -> bool:
    area, group, serial = candidate[:3], candidate[4:6], candidate[7:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ipv4_ok(candidate: str) -> bool:
    return all(int(octet) <= 255 and (octet == "0" or octet[0] != "0") for octet in candidate.split("."))


def _emails(text: str) -> Iterable[PiiMatch]:
    """Search only around each '@': the local part is at most 64 characters before it."""
    position = text.find("@")
    resume = 0
    while position != -1:
        start = max(position - 65, resume)
        match = _EMAIL.search(text, start, position + 260)
        if match is not None and match.start() <= position < match.end():
            yield PiiMatch(PiiType.EMAIL, match.start(), match.end(), match.group())
            resume = match.end()
        position = text.find("@", max(position + 1, resume))


def _ipv6_ok(candidate: str) -> bool:
    address = candidate.split("%", 1)[0]
    if address.count(":") < 2 or not any(ch.isdigit() for ch in address):
        return False
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return int(parsed) != 0 and (address.count(":") >= 4 or sum(ch.isalnum() for ch in address) >= 4)


def _finditer(
    pattern: re.Pattern[str], text: str, regions: Sequence[tuple[int, int]] | None
) -> Iterable[re.Match[str]]:
    if regions is None:
        yield from pattern.finditer(text)
    else:
        for start, end in regions:
            yield from pattern.finditer(text, start, end)


def _numeric_runs(text: str) -> list[tuple[int, int, int, int]]:
    """(start, end, digits, dots) of every run of four or more digits joined only by
    separators. Each card, SSN and phone number lies inside a run of seven digits or more, and
    each IPv4 address inside one with three dots, so those patterns search only there."""
    runs: list[tuple[int, int, int, int]] = []
    if text.isascii():  # the same search on a byte shape, where the engine skips to each "0" fast
        for shaped in _NUMERIC_SHAPE.finditer(text.encode("ascii").translate(_RUN_SHAPE)):
            start, end = shaped.span()
            runs.append((start, end, shaped.group().count(b"0"), text.count(".", start, end)))
        return runs
    for match in _NUMERIC.finditer(text):
        run = match.group()
        separators = sum(map(run.count, _SEPARATORS))
        runs.append((match.start(), match.end(), len(run) - separators, run.count(".")))
    return runs


def _regions(
    text: str, runs: Sequence[tuple[int, int]], tail: int, lead: int = 0
) -> list[tuple[int, int]] | None:
    """Search windows around `runs`: `lead` more separator characters before (a phone's `+(`),
    `tail` after (an extension, and what the closing lookahead reads). Windows that touch merge,
    so a search resumes where a full scan would. None (scan everything) when a run follows an
    extension marker, whose digits a full scan would read as the previous number's."""
    size = len(text)
    regions: list[tuple[int, int]] = []
    for start, end in runs:
        floor = max(start - lead, 0)
        while start > floor and text[start - 1] in _RUN_LEAD:
            start -= 1
        if lead and _EXT_BEFORE.search(text, max(start - 6, 0), start) is not None:
            return None
        end = min(end + tail, size)
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
        else:
            regions.append((start, end))
    return regions


def _ipv6_hint(text: str) -> bool:
    """A colon between hex digits (or `::`): prose colons ("Note: ...") never qualify."""
    colons = text.count(":")
    if colons < 2:  # counting one character is far cheaper than looking for "::"
        return False
    if "::" in text:
        return True
    if colons < 5:
        return False
    if colons > 64:
        return True
    position = text.find(":")
    while position != -1:
        if 0 < position < len(text) - 1 and text[position - 1] in _HEX and text[position + 1] in _HEX:
            return True
        position = text.find(":", position + 1)
    return False


def _scan(
    pattern: re.Pattern[str], text: str, pii_type: PiiType, regions: Sequence[tuple[int, int]] | None = None
) -> Iterable[PiiMatch]:
    for match in _finditer(pattern, text, regions):
        if match.lastgroup == "secret":
            yield PiiMatch(pii_type, match.start("secret"), match.end("secret"), match.group("secret"))
        else:
            yield PiiMatch(pii_type, match.start(), match.end(), match.group())


def _mask(text: str, matches: Sequence[PiiMatch]) -> str:
    """Cover taken spans with same-length `[xxx]`: lower-priority patterns then see the same
    boundaries they will see once the spans are placeholders, and cannot reach into them."""
    pieces: list[str] = []
    cursor = 0
    for match in sorted(matches, key=lambda m: m.start):
        pieces.append(text[cursor : match.start])
        pieces.append("[" + "x" * (match.end - match.start - 2) + "]")
        cursor = match.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def find_pii(text: str) -> list[PiiMatch]:
    """All PII spans, non-overlapping, in text order. Types run in priority order (keys and
    tokens, e-mail, IBAN, card, SSN, IP, phone) and each one's spans are masked before the
    next runs, so a candidate's extent never depends on a neighbour that redaction replaces."""
    found: list[PiiMatch] = []
    masked = text

    def take(matches: Iterable[PiiMatch], last: bool = False) -> None:
        nonlocal masked
        taken = [PiiMatch(m.type, m.start, m.end, text[m.start : m.end]) for m in matches]
        if taken:
            found.extend(taken)
            if not last:
                masked = _mask(masked, taken)

    # Keys, tokens and JWTs are long unbroken tokens: look for their prefixes in those only.
    long_words = " ".join(token_stats(text).long_tokens)
    if "-----BEGIN" in text:
        take(_scan(_PEM, masked, PiiType.PRIVATE_KEY))
    if long_words:
        if "eyJ" in long_words:
            take(_scan(_JWT, masked, PiiType.JWT))
        if any(prefix in long_words for prefix in _AWS_PREFIXES) or "aws" in long_words.lower():
            take(_scan(_AWS, masked, PiiType.AWS_KEY))
        if any(hint in long_words for hint in _API_HINTS):
            take(_scan(_API_KEY, masked, PiiType.API_KEY))
    if "@" in text:
        take(_emails(masked))
    shape = text.encode("utf-8", "surrogatepass").translate(_SHAPE)
    digits = shape.count(b"0")
    if digits >= 7 and b"AA00" in shape:  # an IBAN opens with two capitals and two digits
        take(_shrunk(masked, _IBAN, PiiType.IBAN, iban_valid, 15))
    # Masking only ever breaks runs, so runs found in the original text cover every candidate.
    runs = _numeric_runs(text) if digits >= 4 else []
    dense = [(start, end) for start, end, count, _ in runs if count >= 7]
    if dense:
        near = _regions(text, dense, 2)
        if max(count for _, _, count, _ in runs) >= 12:
            take(
                m
                for m in _shrunk(masked, _CARD, PiiType.CARD, _card_ok, 12, near)
                if not _IBAN_HEAD.search(masked, 0, m.start)
            )
        take(m for m in _scan(_SSN, masked, PiiType.SSN, near) if _ssn_ok(m.value))
    if digits >= 1 and _ipv6_hint(text):
        take(m for m in _scan(_IPV6, masked, PiiType.IPV6) if _ipv6_ok(m.value))
    dotted = [(start, end) for start, end, _, dots in runs if dots >= 3]
    if dotted:
        ips = _scan(_IPV4, masked, PiiType.IPV4, _regions(text, dotted, 2))
        take((m for m in ips if _ipv4_ok(m.value)), last=not dense)
    if dense:
        take(_phones(masked, _regions(text, dense, 16, 24)), last=True)
    found.sort(key=lambda m: m.start)
    return found


@dataclass(slots=True)
class RedactionMapping:
    """Per-request placeholder table: `[EMAIL_1]` -> original. Shared by every message and
    passage of one request so the same value always gets the same placeholder."""

    placeholders: dict[str, str] = field(default_factory=dict)
    _by_value: dict[tuple[PiiType, str], str] = field(default_factory=dict, repr=False)
    _next: dict[PiiType, int] = field(default_factory=dict, repr=False)
    _reserved: set[str] = field(default_factory=set, repr=False)

    def reserve_existing(self, text: str) -> None:
        """Placeholder-looking strings already in the input are never reused, so `restore`
        cannot confuse a user's literal `[EMAIL_1]` with a redaction."""
        if "[" in text:
            self._reserved.update(match.group() for match in _PLACEHOLDER.finditer(text))

    def placeholder_for(self, pii_type: PiiType, value: str) -> str:
        key = (pii_type, value)
        existing = self._by_value.get(key)
        if existing is not None:
            return existing
        number = self._next.get(pii_type, 0)
        while True:
            number += 1
            candidate = f"[{pii_type.value}_{number}]"
            if candidate not in self._reserved and candidate not in self.placeholders:
                break
        self._next[pii_type] = number
        self._by_value[key] = candidate
        self.placeholders[candidate] = value
        return candidate

    def as_dict(self) -> dict[str, str]:
        return dict(self.placeholders)

    def __len__(self) -> int:
        return len(self.placeholders)


@dataclass(frozen=True, slots=True)
class RedactionResult:
    text: str
    mapping: RedactionMapping
    counts: Mapping[str, int]
    blocked: tuple[PiiType, ...]


# Characters that cannot end a candidate (safe just before a replaced value) or begin one
# (safe just after it); anything else may have been read as the neighbour's boundary.
_SAFE_BEFORE = frozenset(",;!?\"'“”‘’«»([{<.")
_SAFE_AFTER = frozenset(",;!?\"'“”‘’«»)]}>")


def _glued(text: str, start: int, end: int) -> bool:
    """Whether a replaced value touches a character another candidate may start or end with."""
    before = text[start - 1] if start else " "
    if before in ".," and text[start : start + 1].isdigit():
        return True  # "6789,4111": the digit after the comma kept the number before from matching
    after = text[end] if end < len(text) else " "
    if after == "." and (end + 1 >= len(text) or text[end + 1].isspace()):
        after = " "
    return not (before.isspace() or before in _SAFE_BEFORE) or not (after.isspace() or after in _SAFE_AFTER)


def redact(
    text: str, policy: PiiPolicy | None = None, mapping: RedactionMapping | None = None
) -> RedactionResult:
    """Replace PII per policy; pass the same `mapping` for every text of one request.

    A replaced value glued to other characters changes what its neighbours look like to the
    patterns (`0@0.AA(000000)0`), so the text is rescanned until nothing new is found; that
    makes redaction a fixed point, which the sanitizer's idempotence depends on.
    """
    policy = policy or PiiPolicy()
    mapping = mapping if mapping is not None else RedactionMapping()
    mapping.reserve_existing(text)
    counts: dict[str, int] = {}
    blocked: list[PiiType] = []
    current = text
    for round_number in range(_MAX_ROUNDS):
        matches = find_pii(current)
        if round_number and matches:
            taken = [m.span() for m in _PLACEHOLDER.finditer(current) if m.group() in mapping.placeholders]
            matches = [m for m in matches if all(m.end <= a or m.start >= b for a, b in taken)]
        pieces: list[str] = []
        cursor = 0
        glued = False
        for match in matches:
            action = policy.action(match.type)
            if action is PiiAction.ALLOW:
                continue
            if action is PiiAction.BLOCK and match.type not in blocked:
                blocked.append(match.type)
            glued = glued or _glued(current, match.start, match.end)
            pieces.append(current[cursor : match.start])
            pieces.append(mapping.placeholder_for(match.type, match.value))
            cursor = match.end
            counts[match.type.value] = counts.get(match.type.value, 0) + 1
        if not pieces:
            break
        pieces.append(current[cursor:])
        current = "".join(pieces)
        if not glued:
            break
    return RedactionResult(current, mapping, counts, tuple(blocked))


def restore(text: str, mapping: RedactionMapping | Mapping[str, str]) -> str:
    """Put originals back in one pass, so a restored value is never itself re-substituted."""
    table = mapping.placeholders if isinstance(mapping, RedactionMapping) else mapping
    if not table or "[" not in text:
        return text
    return _PLACEHOLDER.sub(lambda match: table.get(match.group(), match.group()), text)
