"""PII redaction: every type positive and negative, checksums, placeholders, restore, policy."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from agents.checks import pii
from agents.checks.pii import (
    PiiAction,
    PiiPolicy,
    PiiType,
    RedactionMapping,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
    restore,
)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n-----END RSA PRIVATE KEY-----"
)


def types_in(text: str) -> list[PiiType]:
    return [match.type for match in find_pii(text)]


@pytest.mark.parametrize(
    ("value", "pii_type"),
    [
        ("jane.doe@example.com", PiiType.EMAIL),
        ("a.b+tag@mail.example.co.uk", PiiType.EMAIL),
        ("+1-321-299-3518", PiiType.PHONE),
        ("(020) 7946 0958", PiiType.PHONE),
        ("+44(0)121 4960260", PiiType.PHONE),
        ("+49 30 901820", PiiType.PHONE),
        ("+33 (0)1 23 45 67 89", PiiType.PHONE),
        ("090-2601-8159", PiiType.PHONE),
        ("826-801-8159x08301", PiiType.PHONE),
        ("0285601815", PiiType.PHONE),
        ("4111 1111 1111 1111", PiiType.CARD),
        ("4111111111111111", PiiType.CARD),
        ("3782-822463-10005", PiiType.CARD),
        ("DE89 3704 0044 0532 0130 00", PiiType.IBAN),
        ("GB82WEST12345698765432", PiiType.IBAN),
        ("123-45-6789", PiiType.SSN),
        ("192.168.1.20", PiiType.IPV4),
        ("2001:db8:85a3::8a2e:370:7334", PiiType.IPV6),
        ("fe80::1ff:fe23:4567:890a", PiiType.IPV6),
        ("AKIAIOSFODNN7EXAMPLE", PiiType.AWS_KEY),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz012345", PiiType.API_KEY),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789AB", PiiType.API_KEY),
        ("xoxb-1234567890-abcdefghij", PiiType.API_KEY),
        (JWT, PiiType.JWT),
        (PEM, PiiType.PRIVATE_KEY),
    ],
)
def test_each_type_is_found(value: str, pii_type: PiiType) -> None:
    text = f"Here it is: {value} thanks"
    matches = find_pii(text)
    assert [m.type for m in matches] == [pii_type]
    assert matches[0].value == value


def test_aws_secret_is_redacted_without_its_label() -> None:
    text = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    [match] = find_pii(text)
    assert match.type is PiiType.AWS_KEY and match.value == "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn-invalid
        "iban DE89 3704 0044 0532 0130 01",  # mod-97-invalid
        "ssn 000-12-3456",  # area 000 never issued
        "ssn 666-12-3456",
        "ssn 912-12-3456",
        "ip 256.10.10.10",  # not an IPv4 address
        "time 12:30:45 and 10:15",
        "Python 3.11.7 and v2.4.1",
        "dated 2024-03-18 or 18.03.2024, between 1990-2000",
        "5.889.000 visitors, pi is 3.14159265, price $1,234.56",
        "ISBN 0-695-84830-5",
        "Unix time 1700000000",
        "Reference ID 450920522",
        "Order 6694543561 shipped",
        "user@localhost is not an address",
        "sk-short and ghp_short",
    ],
)
def test_look_alikes_are_not_redacted(text: str) -> None:
    assert find_pii(text) == []


def test_invalid_ssn_is_not_typed_as_ssn() -> None:
    assert PiiType.SSN not in types_in("ssn 123-00-4567 and 123-45-0000")


def test_nine_digit_number_needs_phone_context() -> None:
    assert find_pii("ID 967511029") == []
    assert types_in("Telefone: 967511029") == [PiiType.PHONE]


def test_phone_in_parentheses_keeps_the_parentheses() -> None:
    result = redact("Call me (0556662419) tomorrow")
    assert result.text == "Call me ([PHONE_1]) tomorrow"


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("41a1")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_valid("DE89 3704 0044 0532 0130 01")
    assert not iban_valid("XX00")


def test_placeholders_are_typed_numbered_and_stable() -> None:
    text = "a@x.io, b@x.io, a@x.io, 10.0.0.1, +49 30 901820"
    result = redact(text)
    assert result.text == "[EMAIL_1], [EMAIL_2], [EMAIL_1], [IPV4_1], [PHONE_1]"
    assert result.counts == {"EMAIL": 3, "IPV4": 1, "PHONE": 1}
    assert result.mapping.as_dict() == {
        "[EMAIL_1]": "a@x.io",
        "[EMAIL_2]": "b@x.io",
        "[IPV4_1]": "10.0.0.1",
        "[PHONE_1]": "+49 30 901820",
    }


def test_mapping_is_shared_across_texts_of_a_request() -> None:
    mapping = RedactionMapping()
    first = redact("mail a@x.io", mapping=mapping)
    second = redact("again a@x.io and c@x.io", mapping=mapping)
    assert first.text == "mail [EMAIL_1]"
    assert second.text == "again [EMAIL_1] and [EMAIL_2]"
    assert len(mapping) == 2


def test_existing_placeholder_text_is_not_reused() -> None:
    text = "literal [EMAIL_1] and real a@x.io"
    result = redact(text)
    assert result.text == "literal [EMAIL_1] and real [EMAIL_2]"
    assert restore(result.text, result.mapping) == text


def test_restore_puts_originals_back_in_a_response() -> None:
    result = redact("Write to jane@example.com about card 4111 1111 1111 1111")
    answer = "I wrote to [EMAIL_1]; the card [CARD_1] is on file. [EMAIL_9] is unknown."
    assert restore(answer, result.mapping) == (
        "I wrote to jane@example.com; the card 4111 1111 1111 1111 is on file. [EMAIL_9] is unknown."
    )
    assert restore(answer, result.mapping.as_dict()) == restore(answer, result.mapping)


def test_restore_does_not_resubstitute_restored_values() -> None:
    mapping = {"[EMAIL_1]": "[PHONE_1]", "[PHONE_1]": "+1 555 0100"}
    assert restore("[EMAIL_1]", mapping) == "[PHONE_1]"


def test_policy_allow_keeps_and_block_reports() -> None:
    policy = PiiPolicy(MappingProxyType({PiiType.IPV4: PiiAction.ALLOW, PiiType.CARD: PiiAction.BLOCK}))
    result = redact("host 10.0.0.1 card 4111111111111111", policy)
    assert result.text == "host 10.0.0.1 card [CARD_1]"
    assert result.blocked == (PiiType.CARD,)
    assert result.counts == {"CARD": 1}


def test_overlaps_resolve_to_the_more_specific_type() -> None:
    # the email's local part is digits; it must not also become a phone number
    assert types_in("reach 5551234567@example.com now") == [PiiType.EMAIL]


@pytest.mark.parametrize(
    "text",
    [
        "123-45-6789,4111 1111 1111 1111fe80::1",  # "6789,4" hid the SSN until the phone went
        "call 4111 1111 1111 111101234",  # the phone before read as context only once redacted
        "call jane@example.com 123456789",
    ],
)
def test_redaction_is_a_fixed_point_next_to_other_values(text: str) -> None:
    once = redact(text)
    assert redact(once.text, mapping=once.mapping).text == once.text


@pytest.mark.parametrize(
    "text",
    [
        "Ring +49 (0) 30 901820 x12 or (020) 7946 0958 ext. 3, SSN 123-45-6789, card 4111 1111 1111 1111.",
        "ids 1 2 3 4 x 5 (030) 1234567 and 10.0.0.1 / 192.168.0.1.",
        "fax 0301234567 # 12 345 6789",
    ],
)
def test_windowed_number_search_matches_a_full_scan(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    windowed = find_pii(text)
    monkeypatch.setattr(pii, "_regions", lambda *args, **kwargs: None)
    assert find_pii(text) == windowed
