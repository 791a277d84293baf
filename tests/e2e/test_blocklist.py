"""The core blocklist holds even when the operator lets provider data add any header
(`extra_headers: ["*"]` or `["x-*"]`): one test per name (SPEC §4)."""

import pytest

from harness import upstream

# Names added after the adversarial review (issue 9): each one steers the backend (body decoding,
# method, URL, who the client is) or a proxy in front of it.
NEW_CORE_NAMES = [
    "content-encoding", "via", "max-forwards", "x-http-method-override", "x-http-method",
    "x-method-override", "x-original-url", "x-rewrite-url", "x-request-id", "x-client-ip",
    "client-ip", "x-forwarded", "x-middleware-subrequest", "forwarded", "x-real-ip",
    "cf-connecting-ip", "true-client-ip",
]


@pytest.mark.parametrize("name", NEW_CORE_NAMES)
def test_provider_data_cannot_set_a_core_blocked_name_through_a_wildcard(wildcard, name):
    for spelling in [name, name.upper()]:
        r = wildcard.chat("llama-3-8b", provider_data={"vllm_extra_headers": {spelling: "sneaky-value"}})
        assert r.status_code == 400, (spelling, r.text)
        err = r.json()["error"]
        assert err["code"] == "blocked_header"
        assert name in err["message"] and "sneaky-value" not in err["message"]


@pytest.mark.parametrize("name", [n for n in NEW_CORE_NAMES if n.startswith("x-")])
def test_x_wildcard_with_on_invalid_drop_never_forwards_them(lab, name):
    """The lab config: openai takes `extra_headers: ["x-*"]` from provider data, `on_invalid: drop`."""
    up = upstream(lab.chat("gpt-4o", provider_data={"openai_extra_headers": {name: "sneaky-value", "x-fine": "ok"}}))
    assert up["headers"]["x-fine"] == ["ok"]
    assert all(v != ["sneaky-value"] for v in up["headers"].values()), up["headers"]


def test_the_wildcard_still_forwards_ordinary_headers(wildcard):
    up = upstream(wildcard.chat("llama-3-8b", provider_data={"vllm_extra_headers": {"X-MaaS-Tier": "gold", "via-route": "a"}}))
    assert up["headers"]["x-maas-tier"] == ["gold"]
    assert up["headers"]["via-route"] == ["a"]


@pytest.mark.parametrize("name", ["x_forwarded_for", "X_Real_IP", "content_length", "transfer_encoding",
                                  "x_envoy_retry_on", "x_llm_provider", "x_llamastack_provider_data",
                                  "x_http_method_override", "x_api_key", "proxy_authorization"])
def test_underscore_spellings_of_blocked_names_are_blocked_too(wildcard, name):
    """CGI/WSGI-style servers (and many frameworks) read `x_forwarded_for` as `X-Forwarded-For`;
    Envoy's `headers_with_underscores_action` only judges what the client sends, not what a filter
    adds, so the blocklist reads `_` as `-`."""
    r = wildcard.chat("llama-3-8b", provider_data={"vllm_extra_headers": {name: "sneaky-value"}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "blocked_header"
    assert "sneaky-value" not in r.text
