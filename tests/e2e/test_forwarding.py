"""What reaches the backend: provider data mapped per provider, client headers filtered."""

import json

import pytest

from harness import upstream


def test_forward_headers_with_prefix_and_plain_name(gateway):
    up = upstream(gateway.chat("llama-3-8b", provider_data={"vllm_api_token": "sk-vllm", "tenant_id": 42}))
    assert up["headers"]["authorization"] == ["Bearer sk-vllm"]
    assert up["headers"]["x-tenant-id"] == ["42"]
    assert "x-llamastack-provider-data" not in up["headers"], "provider data is stripped"


def test_ogx_header_alias_is_accepted_and_stripped(gateway):
    r = gateway.chat("llama-3-8b", headers={"X-OGX-Provider-Data": json.dumps({"vllm_api_token": "sk-ogx"})})
    up = upstream(r)
    assert up["headers"]["authorization"] == ["Bearer sk-ogx"]
    assert "x-ogx-provider-data" not in up["headers"]


def test_unlisted_keys_and_other_providers_data_never_leave(gateway):
    data = {
        "vllm_api_token": "sk-vllm",
        "openai_api_key": "sk-openai-secret",
        "anthropic_api_key": "sk-ant-secret",
        "openai_extra_headers": {"x-openai-only": "o"},
        "extra_headers": {"x-generic": "g"},
        "unlisted": "u",
        "vllm_extra_headers": {"X-MaaS-Subscription": "free-tier", "x-not-allowed": "n"},
    }
    up = upstream(gateway.chat("llama-3-8b", provider_data=data))
    values = [v for vs in up["headers"].values() for v in vs]
    for secret in ["sk-openai-secret", "sk-ant-secret", "o", "g", "u", "n"]:
        assert secret not in values, secret
    assert up["headers"]["x-maas-subscription"] == ["free-tier"]
    assert up["headers"]["authorization"] == ["Bearer sk-vllm"]

    up = upstream(gateway.chat("gpt-4o", provider_data=data))
    assert up["headers"]["authorization"] == ["Bearer sk-openai-secret"]
    assert "x-maas-subscription" not in up["headers"]
    assert "sk-vllm" not in json.dumps(up)


def test_generic_extra_headers_only_when_opted_in(lab):
    data = {"extra_headers": {"x-generic": "g"}, "openai_extra_headers": {"x-ns": "n"}}
    up = upstream(lab.chat("gpt-4o", provider_data=data))
    assert up["headers"]["x-generic"] == ["g"]
    assert up["headers"]["x-ns"] == ["n"]
    up = upstream(lab.chat("llama-3-8b", provider_data={"extra_headers": {"x-maas-a": "g"}}))
    assert "x-maas-a" not in up["headers"], "vllm did not opt in to the generic map"


def test_client_auth_is_stripped_by_default(gateway):
    auth = {"authorization": "Bearer gateway-key", "api-key": "a", "x-api-key": "b", "x-goog-api-key": "c",
            "ocp-apim-subscription-key": "d", "proxy-authorization": "Basic e"}
    up = upstream(gateway.chat("llama-3-8b", headers=auth))
    for name in auth:
        assert name not in up["headers"], name


def test_bring_your_own_key_and_authorization_precedence(lab):
    client = {"authorization": "Bearer client-key", "x-api-key": "client-x"}
    # client_auth: forward keeps the client's credentials...
    up = upstream(lab.chat("gpt-4o", headers=client))
    assert up["headers"]["authorization"] == ["Bearer client-key"]
    assert up["headers"]["x-api-key"] == ["client-x"]
    # ...forward_headers beats them...
    up = upstream(lab.chat("gpt-4o", headers=client, provider_data={"openai_api_key": "pd-key"}))
    assert up["headers"]["authorization"] == ["Bearer pd-key"]
    # ...and set_headers beats both.
    up = upstream(lab.chat("claude-3", headers=client, provider_data={"anthropic_api_key": "pd-key"}))
    assert up["headers"]["authorization"] == ["Bearer gateway-static"]


def test_mode_all_drops_only_drop_patterns_and_always_removed_headers(lab):
    # The lab's vllm provider sets mode "all" explicitly (the default is the allowlist).
    headers = {"x-stainless-lang": "python", "X-Stainless-OS": "Linux", "x-custom": "keep", "openai-beta": "assistants=v2",
               "cookie": "session=secret", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    up = upstream(lab.chat("llama-3-8b", headers=headers))
    assert "x-stainless-lang" not in up["headers"] and "x-stainless-os" not in up["headers"]
    assert "cookie" not in up["headers"]
    assert up["headers"]["x-custom"] == ["keep"]
    assert up["headers"]["openai-beta"] == ["assistants=v2"]
    assert "traceparent" in up["headers"]


def test_allowlist_mode_keeps_only_essentials_and_forward_patterns(gateway):
    headers = {"anthropic-beta": "tools-2024", "x-custom": "kept", "openai-organization": "gone", "other-vendor": "gone",
               "accept": "application/json", "user-agent": "sdk/1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    up = upstream(gateway.chat("claude-3-5-sonnet", headers=headers))
    assert up["headers"]["anthropic-beta"] == ["tools-2024"]
    assert up["headers"]["x-custom"] == ["kept"], "forward: x-*"
    assert up["headers"]["accept"] == ["application/json"]
    assert up["headers"]["user-agent"] == ["sdk/1"]
    assert "traceparent" in up["headers"]
    assert "openai-organization" not in up["headers"] and "other-vendor" not in up["headers"]
    assert up["headers"]["anthropic-version"] == ["2023-06-01"], "default_headers"
    assert "x-request-id" in up["headers"] and "content-type" in up["headers"]


def test_set_headers_and_remove_headers(lab):
    up = upstream(lab.chat("llama-3-8b", headers={"x-gateway": "client", "x-debug": "1", "x-drop-me": "1", "x-kept": "1"},
                           provider_data={"vllm_extra_headers": {"x-debug": "from-pd", "x-gateway": "pd"}}))
    assert up["headers"]["x-gateway"] == ["lab"]
    assert "x-debug" not in up["headers"], "remove_headers applies to client and provider data"
    assert "x-drop-me" not in up["headers"]
    assert up["headers"]["x-kept"] == ["1"]


def test_on_invalid_drop_forwards_the_rest(lab):
    data = {"vllm_api_token": "ok", "vllm_extra_headers": {"X-Forwarded-For": "6.6.6.6", "x-maas-a": "bad\r\nx-evil: 1", "x-maas-b": "fine"}}
    up = upstream(lab.chat("llama-3-8b", provider_data=data))
    assert up["headers"]["authorization"] == ["Bearer ok"]
    assert up["headers"]["x-maas-b"] == ["fine"]
    assert "x-maas-a" not in up["headers"] and "x-evil" not in up["headers"]
    assert "6.6.6.6" not in json.dumps(up["headers"])


def test_concurrent_requests_never_see_each_others_tokens(gateway):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    models = {"vllm": "llama-3-8b", "openai": "gpt-4o", "anthropic": "claude-3-5-sonnet"}
    keys = {"vllm": ("vllm_api_token", "authorization", "Bearer "), "openai": ("openai_api_key", "authorization", "Bearer "),
            "anthropic": ("anthropic_api_key", "x-api-key", "")}

    def one(i):
        provider = list(models)[i % 3]
        key, header, prefix = keys[provider]
        token = f"tok-{i:05d}-{provider}"
        data = {key: token}
        with httpx.Client(base_url=gateway.base, trust_env=False, timeout=30) as c:
            r = c.post("/v1/chat/completions", json={"model": models[provider], "messages": [], "n": i},
                       headers={"x-llamastack-provider-data": json.dumps(data)})
        up = upstream(r)
        tokens = [v for vs in up["headers"].values() for v in vs if "tok-" in v]
        return provider, up["name"], up["headers"].get(header), prefix + token, tokens

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(600)))
    for provider, backend, got, expected, tokens in results:
        assert backend == provider
        assert got == [expected]
        assert tokens == [expected], f"{provider} saw {tokens}"


IDENTITY = {"Forwarded": "for=6.6.6.6;proto=https", "X-Real-IP": "6.6.6.6", "True-Client-IP": "6.6.6.6",
            "CF-Connecting-IP": "6.6.6.6", "x-client-ip": "6.6.6.6", "CLIENT-IP": "6.6.6.6"}


@pytest.mark.parametrize("model", ["llama-3-8b", "gpt-4o", "claude-3-5-sonnet"])
def test_client_identity_headers_never_reach_the_backend(gateway, model):
    """A backend that trusts `x-real-ip` & co. (rate limits, audit logs, allowlists) must not get
    the client's own claim. Every mode: vllm and openai keep all client headers, anthropic is an
    allowlist."""
    up = upstream(gateway.chat(model, headers=IDENTITY))
    for name in IDENTITY:
        assert name.lower() not in up["headers"], name
    assert "6.6.6.6" not in str(up["headers"])


def test_client_identity_headers_are_removed_without_a_provider(gateway):
    up = upstream(gateway.client.get("/v1/models", headers=IDENTITY))
    for name in IDENTITY:
        assert name.lower() not in up["headers"], name


# What the backend should do instead of what the request line says, and an identity claim the
# `x-forwarded-` prefix misses. Provider data may never set these (core blocklist); the client's own
# copies used to pass the default allowlist `x-*` to every backend.
OVERRIDES = {"X-HTTP-Method-Override": "DELETE", "x-http-method": "DELETE", "X-Method-Override": "DELETE",
             "X-Original-URL": "/admin", "x-rewrite-url": "/admin", "x-middleware-subrequest": "middleware",
             "X-Forwarded": "for=6.6.6.6"}


@pytest.mark.parametrize("model", ["llama-3-8b", "gpt-4o", "claude-3-5-sonnet"])
def test_client_method_and_url_overrides_never_reach_the_backend(gateway, lab, model):
    for gw in (gateway, lab):  # allowlist (shipped) and mode "all" (lab vllm)
        up = upstream(gw.chat(model, headers=OVERRIDES))
        assert not {n.lower() for n in OVERRIDES} & set(up["headers"]), (model, up["headers"])
    up = upstream(gateway.client.get("/v1/models", headers=OVERRIDES))
    assert not {n.lower() for n in OVERRIDES} & set(up["headers"])


@pytest.mark.parametrize("model", ["llama-3-8b", "gpt-4o", "claude-3-5-sonnet"])
def test_client_headers_on_blocked_headers_never_reach_the_backend(gateway, lab, model):
    """The shipped `blocked_headers: ["x-internal-*"]` refused `x-internal-user` from provider data
    (400) while the same name sent as a plain client header passed the default `x-*` allowlist to
    every backend."""
    sent = {"X-Internal-Debug": "1", "x-internal-user": "admin"}
    for gw in (gateway, lab):  # allowlist (shipped) and mode "all" (lab vllm)
        up = upstream(gw.chat(model, headers=sent))
        assert not [n for n in up["headers"] if n.startswith("x-internal-")], (model, up["headers"])
    up = upstream(gateway.client.get("/v1/models", headers=sent))
    assert not [n for n in up["headers"] if n.startswith("x-internal-")]
    r = gateway.chat("llama-3-8b", provider_data={"vllm_extra_headers": {"x-internal-user": "admin"}})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "blocked_header")


@pytest.mark.parametrize("number", ["123456789012345678901234567890", "1.0e2", "-0", "1E400", "0.10", "7"])
def test_provider_data_numbers_are_forwarded_as_written(gateway, number):
    """Not rounded through a float, not reformatted: the header carries the client's JSON text."""
    raw = '{"tenant_id": %s, "vllm_extra_headers": {"x-maas-n": %s}}' % (number, number)
    up = upstream(gateway.chat("llama-3-8b", provider_data=raw))
    assert up["headers"]["x-tenant-id"] == [number]
    assert up["headers"]["x-maas-n"] == [number]
