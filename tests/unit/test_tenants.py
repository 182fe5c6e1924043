"""Tenant access: key hashing, `accepts`, expiry, the one identity decision for both paths
(sluice.edge.identity), the tenants file reload, and the `sluice tenant` commands."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from sluice.cli import add_key_to_config, main, revoke_key_in_config
from sluice.edge.identity import Unauthorized, refusal, tenant_for_key, tenant_resolver
from sluice.settings import Settings
from sluice.tenants import (
    API_KEY_PREFIX,
    DEFAULT_TENANT,
    UNCONFIGURED_TENANT,
    AccessRules,
    ApiKey,
    TenantConfig,
    TenantDirectory,
    TenantPolicy,
    hash_key,
    key_id,
    new_api_key,
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
    # Once a tenant has keys, an unconfigured tenant (demo included) is refused ...
    assert settings.tenant("demo") is UNCONFIGURED_TENANT and not settings.tenant("demo").accepts(None)
    # ... unless it is configured explicitly.
    explicit = Settings(tenants={"acme": {"access": {"api_key_sha256": [hash_key(KEY)]}}, "demo": {}})
    assert explicit.tenant("demo").accepts(None)


# --- the gateway's resolver ----------------------------------------------------------------------


def test_resolver_maps_keys_to_their_tenant_and_refuses_keyless_requests() -> None:
    resolve = tenant_resolver({"acme": keyed(KEY), "globex": keyed(OTHER), "plain": TenantConfig()})
    assert resolve(KEY) == "acme"
    assert resolve(OTHER) == "globex"
    for wrong in ("sk-wrong", hash_key(KEY), "", None):
        with pytest.raises(Unauthorized) as refused:
            resolve(wrong)
        assert "sk-" not in refused.value.message and hash_key(KEY) not in refused.value.message


def test_resolver_serves_keyless_requests_only_to_an_explicitly_configured_demo() -> None:
    assert tenant_resolver({"acme": keyed(KEY), "demo": TenantConfig()})(None) == "demo"
    with pytest.raises(Unauthorized):
        tenant_resolver({"acme": keyed(KEY), "demo": keyed(OTHER)})(None)


def test_resolver_refuses_a_key_shared_by_two_tenants() -> None:
    resolve = tenant_resolver({"acme": keyed(KEY), "globex": keyed(KEY)})
    with pytest.raises(Unauthorized, match="several tenants"):
        resolve(KEY)


def test_expired_keys_and_disabled_tenants_are_refused_on_both_paths() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = ApiKey(sha256=hash_key(KEY), expires_at=now - timedelta(seconds=1))
    fresh = ApiKey(sha256=hash_key(OTHER), expires_at=now + timedelta(days=1))
    acme = TenantConfig(access=AccessRules(keys=(old, fresh)))
    policy = TenantPolicy.compile({"acme": acme, "off": keyed("sk-off", disabled=True)})
    with pytest.raises(Unauthorized, match="expired"):
        tenant_for_key(policy, KEY, now=now)
    assert tenant_for_key(policy, OTHER, now=now) == "acme"
    with pytest.raises(Unauthorized, match="disabled"):
        tenant_for_key(policy, "sk-off", now=now)
    assert refusal(acme, "acme", KEY, now) is not None
    assert refusal(acme, "acme", OTHER, now) is None
    assert refusal(acme, "acme", OTHER, now + timedelta(days=2)) is not None
    assert refusal(policy.config("off"), "off", "sk-off", now) == "tenant 'off' is disabled"
    assert "not configured" in str(refusal(policy.config("demo"), "demo", None, now))
    assert refusal(TenantPolicy.compile({}).config("demo"), "demo", None, now) is None


def test_the_tenants_file_is_reloaded_once_per_change(tmp_path: Path) -> None:
    config = tmp_path / "sluice.toml"
    first = add_key_to_config(config, "acme")
    clock = [0.0]
    directory = TenantDirectory({}, config, poll_s=1.0, clock=lambda: clock[0])
    assert not directory.policy().any_keys  # the file as it was at start-up is the settings' business
    second = add_key_to_config(config, "acme")
    assert directory.policy().version == 0  # not polled before poll_s has passed
    clock[0] = 1.0
    policy = directory.policy()
    assert policy.version == 1 and tenant_for_key(policy, second) == "acme" == tenant_for_key(policy, first)
    clock[0] = 5.0
    assert directory.policy() is policy and directory.reloads == 1  # unchanged file: no recompile
    assert revoke_key_in_config(config, "acme", first) == 1
    clock[0] = 6.0
    with pytest.raises(Unauthorized):
        tenant_for_key(directory.policy(), first)
    config.write_text("tenants = [")  # a broken edit keeps the last good policy
    clock[0] = 7.0
    assert tenant_for_key(directory.policy(), second) == "acme" and directory.failed_reloads == 1


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
    stored = document["tenants"]["acme"]["access"]["keys"]
    assert [entry["sha256"] for entry in stored] == [hash_key(first), hash_key(second)]
    assert all(entry["created_at"].tzinfo is not None and "expires_at" not in entry for entry in stored)
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
    assert not settings.tenant("demo").accepts(None)
    assert settings.tenants_file == tmp_path / "sluice.toml"  # watched: add/revoke need no restart


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


def test_cli_revoke_key_and_list_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("SLUICE_")]:
        monkeypatch.delenv(name)
    assert run_cli(["tenant", "add-key", "acme", "--label", "ci", "--expires-in-days", "30"]) == 0
    first = capsys.readouterr().out.strip()
    assert run_cli(["tenant", "add-key", "acme"]) == 0
    second = capsys.readouterr().out.strip()
    assert run_cli(["tenant", "list-keys"]) == 0
    listing = capsys.readouterr().out
    assert key_id(hash_key(first)) in listing and key_id(hash_key(second)) in listing
    assert "ci" in listing and "never" in listing and listing.count("active") == 2
    assert first not in listing and hash_key(first) not in listing

    assert run_cli(["tenant", "revoke-key", "acme", key_id(hash_key(first))]) == 0
    capsys.readouterr()
    assert run_cli(["tenant", "revoke-key", "acme", first]) == 1  # already gone
    assert "no such key" in capsys.readouterr().err
    assert run_cli(["tenant", "revoke-key", "acme", second]) == 0  # by the key itself
    capsys.readouterr()
    settings = Settings()
    assert not settings.tenant("acme").accepts(first) and not settings.tenant("acme").accepts(second)
    assert settings.tenant("acme").access.disabled  # no keys left must not mean "no key needed"
    assert run_cli(["tenant", "list-keys", "acme"]) == 0
    assert "no API keys configured" in capsys.readouterr().out
    third = add_key_to_config(tmp_path / "sluice.toml", "acme")
    assert Settings().tenant("acme").accepts(third)


def test_revoke_refuses_an_ambiguous_id(tmp_path: Path) -> None:
    config = tmp_path / "sluice.toml"
    add_key_to_config(config, "acme")
    with pytest.raises(ValueError, match="the key itself or its id"):
        revoke_key_in_config(config, "acme", "")
    with pytest.raises(ValueError, match="not configured"):
        revoke_key_in_config(config, "globex", "0" * 12)
