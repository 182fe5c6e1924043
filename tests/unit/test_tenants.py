"""Tenant access: key hashing, `accepts`, the gateway's key -> tenant resolver, and the
`sluice tenant` commands that write key hashes into sluice.toml."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import ErrorCode
from sluice.cli import add_key_to_config, main
from sluice.edge.gateway import GatewayError
from sluice.settings import Settings
from sluice.tenants import (
    API_KEY_PREFIX,
    DEFAULT_TENANT,
    AccessRules,
    TenantConfig,
    hash_key,
    new_api_key,
    tenant_resolver,
)

KEY = "sk-sluice-unit-test-key-1"
OTHER = "sk-sluice-unit-test-key-2"


def keyed(*keys: str, **access: object) -> TenantConfig:
    return TenantConfig(access=AccessRules(api_key_sha256=tuple(hash_key(k) for k in keys), **access))


# --- hashing and keys ----------------------------------------------------------------------------


def test_hash_key_is_the_hex_sha256() -> None:
    assert hash_key(KEY) == hashlib.sha256(KEY.encode()).hexdigest()
    assert len(hash_key(KEY)) == 64 and hash_key(KEY) != hash_key(OTHER)


def test_new_api_keys_are_random_and_prefixed() -> None:
    keys = {new_api_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(key.startswith(API_KEY_PREFIX) and len(key) >= len(API_KEY_PREFIX) + 40 for key in keys)


def test_access_rules_accept_only_hex_digests_and_normalise_case() -> None:
    upper = hash_key(KEY).upper()
    assert AccessRules(api_key_sha256=(upper,)).api_key_sha256 == (hash_key(KEY),)
    for bad in (KEY, "abc", "g" * 64):
        with pytest.raises(ValidationError):
            AccessRules(api_key_sha256=(bad,))
    with pytest.raises(ValidationError):
        AccessRules(max_prompt_bytes=0)


def test_defaults_need_no_key() -> None:
    assert DEFAULT_TENANT.access == AccessRules()
    assert DEFAULT_TENANT.accepts(None) and DEFAULT_TENANT.accepts("anything")
    assert Settings().tenant("demo").accepts(None)


def test_accepts_only_a_configured_key() -> None:
    tenant = keyed(KEY, OTHER)
    assert tenant.accepts(KEY) and tenant.accepts(OTHER)
    assert not tenant.accepts(None)
    assert not tenant.accepts("")
    assert not tenant.accepts(KEY + "x")
    assert not tenant.accepts(hash_key(KEY))  # the hash itself is not a key


def test_tenant_access_loads_from_settings_data() -> None:
    settings = Settings(tenants={"acme": {"access": {"api_key_sha256": [hash_key(KEY)]}}})
    assert settings.tenant("acme").accepts(KEY)
    assert not settings.tenant("acme").accepts(None)
    assert settings.tenant("demo").accepts(None)


# --- the gateway's resolver ----------------------------------------------------------------------


def test_resolver_maps_keys_to_their_tenant() -> None:
    resolve = tenant_resolver({"acme": keyed(KEY), "globex": keyed(OTHER), "plain": TenantConfig()})
    assert resolve(KEY) == "acme"
    assert resolve(OTHER) == "globex"
    assert resolve(None) == "demo"
    for wrong in ("sk-wrong", hash_key(KEY), ""):
        with pytest.raises(GatewayError) as refused:
            resolve(wrong)
        assert refused.value.code is ErrorCode.UNAUTHORIZED
        assert "sk-" not in refused.value.message and hash_key(KEY) not in refused.value.message


def test_resolver_refuses_a_key_shared_by_two_tenants() -> None:
    resolve = tenant_resolver({"acme": keyed(KEY), "globex": keyed(KEY)})
    with pytest.raises(GatewayError) as refused:
        resolve(KEY)
    assert refused.value.code is ErrorCode.UNAUTHORIZED


def test_resolver_without_any_keys_configured_sends_everyone_to_demo() -> None:
    resolve = tenant_resolver({"plain": TenantConfig()})
    assert resolve(None) == resolve("whatever the SDK sends") == "demo"
    assert tenant_resolver({}, default_tenant="other")(None) == "other"


# --- sluice tenant add-key / list ----------------------------------------------------------------

EXISTING = """\
http_port = 9000
topic_prefix = "x."

[tenants.acme.output]
domain = "billing"
brand_names = ["Acme"]

[tenants.globex.input]
restore_pii = true
"""


def test_add_key_writes_only_the_hash_and_keeps_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "sluice.toml"
    config.write_text(EXISTING)
    first = add_key_to_config(config, "acme")
    second = add_key_to_config(config, "acme")
    text = config.read_text()
    assert first not in text and second not in text
    document = tomllib.loads(text)
    assert document["http_port"] == 9000 and document["topic_prefix"] == "x."
    assert document["tenants"]["acme"]["output"] == {"domain": "billing", "brand_names": ["Acme"]}
    assert document["tenants"]["globex"] == {"input": {"restore_pii": True}}
    assert document["tenants"]["acme"]["access"]["api_key_sha256"] == [hash_key(first), hash_key(second)]
    tenant = TenantConfig.model_validate(document["tenants"]["acme"])
    assert tenant.accepts(first) and tenant.accepts(second) and not tenant.accepts(None)
    assert not list(tmp_path.glob(".*.tmp"))


def test_add_key_creates_the_file_and_settings_load_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key = add_key_to_config(tmp_path / "sluice.toml", "newco")
    settings = Settings()
    assert settings.tenant("newco").accepts(key)
    assert not settings.tenant("newco").accepts(None)
    assert settings.tenant("demo").accepts(None)


def test_add_key_refuses_a_bad_tenant_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tenant id"):
        add_key_to_config(tmp_path / "sluice.toml", "Not A Tenant")
    assert not (tmp_path / "sluice.toml").exists()


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return int(exit_.value.code or 0)


def test_cli_add_key_prints_the_key_once_and_list_never_shows_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("SLUICE_")]:
        monkeypatch.delenv(name)
    (tmp_path / "sluice.toml").write_text(EXISTING)
    assert run_cli(["tenant", "add-key", "acme"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith(API_KEY_PREFIX) and out.count(key) == 1 and key not in err
    assert "only this once" in err
    assert key not in (tmp_path / "sluice.toml").read_text()

    assert run_cli(["tenant", "add-key", "acme", "--config", str(tmp_path / "other.toml")]) == 0
    other_key = capsys.readouterr().out.strip()

    assert run_cli(["tenant", "list"]) == 0
    listing = capsys.readouterr().out
    assert "acme" in listing and "keys=1" in listing and "globex" in listing and "keys=0" in listing
    assert hash_key(key) not in listing and key not in listing

    assert run_cli(["tenant", "list", "--config", str(tmp_path / "other.toml")]) == 0
    listing = capsys.readouterr().out
    assert "acme" in listing and "globex" not in listing and hash_key(other_key) not in listing


def test_cli_list_with_nothing_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLUICE_TENANTS", json.dumps({}))
    assert run_cli(["tenant", "list"]) == 0
    assert "no tenants configured" in capsys.readouterr().out
