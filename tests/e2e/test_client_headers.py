"""The client's own headers through the shipped configuration and the lab: default-deny client
headers (LiteLLM's rule), each vendor's headers only to that vendor, `client_headers.rename` and
`default_headers` (SPEC §2)."""

import json

import pytest

from harness import run_envoy_expecting_failure, upstream

MODELS = {"vllm": "llama-3-8b", "openai": "gpt-4o", "anthropic": "claude-3-5-sonnet"}

# What the OpenAI and Anthropic SDKs send, plus a custom x- header and an unknown vendor's.
SDK_HEADERS = {
    "OpenAI-Organization": "org-1", "OpenAI-Project": "proj-1", "OpenAI-Beta": "assistants=v2",
    "Anthropic-Version": "2024-10-22", "Anthropic-Beta": "tools-2024", "anthropic-dangerous-direct-browser-access": "true",
    "X-Stainless-Lang": "python", "x-stainless-retry-count": "0", "X-Custom-Trace": "t-1", "Mistral-Thing": "m",
}


@pytest.mark.parametrize("provider", list(MODELS))
def test_each_shipped_provider_gets_its_own_vendor_headers_and_nothing_elses(gateway, provider):
    up = upstream(gateway.chat(MODELS[provider], headers=SDK_HEADERS))
    assert up["name"] == provider
    got = up["headers"]
    assert got["x-custom-trace"] == ["t-1"], "x-* is forwarded by default"
    assert not [n for n in got if n.startswith("x-stainless-")]
    assert "mistral-thing" not in got, "default-deny: unlisted vendors' headers never leave"
    openai = {n: got.get(n) for n in ("openai-organization", "openai-project", "openai-beta")}
    anthropic = {n: got.get(n) for n in ("anthropic-beta", "anthropic-dangerous-direct-browser-access")}
    if provider == "openai":
        assert openai == {"openai-organization": ["org-1"], "openai-project": ["proj-1"], "openai-beta": ["assistants=v2"]}
    else:
        assert openai == dict.fromkeys(openai), f"OpenAI's headers reached {provider}"
    if provider == "anthropic":
        assert anthropic == {"anthropic-beta": ["tools-2024"], "anthropic-dangerous-direct-browser-access": ["true"]}
        assert got["anthropic-version"] == ["2024-10-22"], "the SDK's version is kept (default_headers, not set_headers)"
    else:
        assert anthropic == dict.fromkeys(anthropic), f"Anthropic's headers reached {provider}"
        assert "anthropic-version" not in got


def test_anthropic_version_defaults_only_when_the_client_sends_none(gateway):
    up = upstream(gateway.chat("claude-3-haiku"))
    assert up["headers"]["anthropic-version"] == ["2023-06-01"]
    up = upstream(gateway.chat("claude-3-haiku", headers={"anthropic-version": "2099-01-01"}))
    assert up["headers"]["anthropic-version"] == ["2099-01-01"]


def test_client_credentials_are_decided_by_client_auth_alone(gateway, lab):
    creds = {"authorization": "Bearer gateway-key", "x-api-key": "gateway-x", "x-goog-api-key": "g", "api-key": "a"}
    for model in MODELS.values():  # shipped: strip, although x-* is forwarded
        up = upstream(gateway.chat(model, headers=creds))
        assert not set(creds) & set(up["headers"]), model
    up = upstream(lab.chat("gpt-4o", headers=creds))  # lab openai: client_auth forward, default allowlist
    assert {n: up["headers"].get(n) for n in creds} == {n: [v] for n, v in creds.items()}


RENAME_CONFIG = {
    "providers": [
        {"name": "vllm", "models": ["llama-*"],
         "forward_headers": {"tenant": "x-tenant-id"},
         "client_headers": {"rename": {"X-Customer-Id": "x-maas-customer", "x-team": "x-tenant-id"}},
         "default_headers": {"x-maas-customer": "anonymous"}},
        {"name": "openai", "models": ["gpt-*"]},
    ]
}


@pytest.fixture(scope="module")
def renaming(backends):
    from harness import Gateway

    gw = Gateway(backends, RENAME_CONFIG)
    yield gw
    gw.stop()


def test_rename_reaches_only_its_provider_under_the_new_name(renaming):
    up = upstream(renaming.chat("llama-3-8b", headers={"x-customer-id": "cust-42"}))
    assert up["headers"]["x-maas-customer"] == ["cust-42"]
    assert "x-customer-id" not in up["headers"]
    up = upstream(renaming.chat("gpt-4o", headers={"x-customer-id": "cust-42"}))
    assert up["headers"]["x-customer-id"] == ["cust-42"], "another provider's rename does not apply"
    assert "x-maas-customer" not in up["headers"]
    # The debug log names the rule, never the value.
    log = renaming.wait_for_log('+"x-maas-customer"(client_headers.rename from "x-customer-id")')
    assert "cust-42" not in log


def test_provider_data_wins_over_a_rename_and_default_headers_fill_the_gap(renaming):
    up = upstream(renaming.chat("llama-3-8b", headers={"x-team": "from-client"}, provider_data={"tenant": "from-pd"}))
    assert up["headers"]["x-tenant-id"] == ["from-pd"]
    assert "x-team" not in up["headers"]
    up = upstream(renaming.chat("llama-3-8b", headers={"x-team": "from-client"}))
    assert up["headers"]["x-tenant-id"] == ["from-client"]
    assert up["headers"]["x-maas-customer"] == ["anonymous"], "default_headers: nothing else supplied it"


def test_rename_and_default_header_problems_are_reported_with_the_rest(backends):
    bad = {
        "bogus": 1,
        "providers": [{"name": "a", "models": [""],
                       "client_headers": {"rename": {"x-a": "x-forwarded-for", "cookie": "x-c"}},
                       "default_headers": {"host": "evil", "x-ok": "line\nbreak"}}],
    }
    log = run_envoy_expecting_failure(backends, json.dumps(bad))
    line = next(l for l in log.splitlines() if "refusing to start" in l)
    assert "6 configuration problems" in line, line
    for needle in ['bogus: unknown field', 'empty model pattern', 'rename."x-a": target "x-forwarded-for"',
                   'rename."cookie"', 'default_headers."host"', 'default_headers."x-ok": value has CR']:
        assert needle in line, needle
    assert "evil" not in line and "break" not in line
