"""Fallback chains through real Envoy (SPEC §8): the shipped chain llama-ha (vllm, then openai with
model gpt-4o-mini) behind an aggregate cluster with the filter's upstream role. Every attempt must
carry only what its own provider's rules produce; the mocks record what each attempt received."""

import json

import httpx
import pytest

from harness import Gateway, error_code, shipped_plugin_config

CHAIN_MODEL = "llama-3-70b"
PROVIDER_DATA = {
    "vllm_api_token": "sk-vllm-secret",
    "openai_api_key": "sk-openai-secret",
    "vllm_extra_headers": {"X-MaaS-Subscription": "free-tier"},
}


def headers_of(received):
    out = {}
    for name, value in received["headers"]:
        out.setdefault(name, []).append(value)
    return out


# The session's mock backends and shipped gateway (conftest.py); each test starts with empty
# request records.
@pytest.fixture
def chain_backends(backends):
    for s in backends.servers.values():
        s.received.clear()
    return backends


@pytest.fixture
def gw(gateway, chain_backends):
    return gateway


def received(backends, name):
    return list(backends.servers[name].received)


def test_primary_503_falls_back_and_each_attempt_carries_only_its_own_providers_headers(gw, chain_backends):
    r = gw.chat(CHAIN_MODEL, provider_data=PROVIDER_DATA,
                headers={"x-mock-fail": "vllm=503", "authorization": "Bearer gateway-client", "x-custom": "both"})
    assert r.status_code == 200, r.text
    assert r.json()["upstream"]["name"] == "openai"
    [first] = received(chain_backends, "vllm")
    [second] = received(chain_backends, "openai")
    h1, h2 = headers_of(first), headers_of(second)
    assert h1["authorization"] == ["Bearer sk-vllm-secret"]
    assert h1["x-maas-subscription"] == ["free-tier"]
    assert h1["x-gateway"] == ["llm-header-forward"]
    assert h1["x-llm-provider"] == ["vllm"]
    assert h2["authorization"] == ["Bearer sk-openai-secret"]
    assert h2["x-llm-provider"] == ["openai"]
    for leaked in ["x-maas-subscription", "x-gateway", "x-llamastack-provider-data"]:
        assert leaked not in h2, f"{leaked} from vllm's attempt reached openai"
    assert "sk-vllm-secret" not in json.dumps(second) and "gateway-client" not in json.dumps(second)
    assert "sk-openai-secret" not in json.dumps(first)
    assert h1["x-custom"] == ["both"] and h2["x-custom"] == ["both"]
    assert json.loads(first["body"])["model"] == CHAIN_MODEL
    assert json.loads(second["body"])["model"] == "gpt-4o-mini"
    assert h2["x-llm-model"] == ["gpt-4o-mini"]


def test_a_header_sent_twice_is_restored_with_both_values_only_for_the_provider_that_takes_it(gw, chain_backends):
    # openai forwards the client's openai-* headers, vllm does not: the downstream role holds both
    # values back, vllm's attempt goes without them and openai's restores both (set, then add).
    body = json.dumps({"model": CHAIN_MODEL, "messages": [{"role": "user", "content": "hi"}]})
    r = gw.client.post("/v1/chat/completions", content=body, headers=[
        ("content-type", "application/json"), ("openai-beta", "one"), ("openai-beta", "two"),
        ("x-mock-fail", "vllm=503")])
    assert r.status_code == 200, r.text
    [first], [second] = received(chain_backends, "vllm"), received(chain_backends, "openai")
    assert "openai-beta" not in headers_of(first)
    assert headers_of(second)["openai-beta"] == ["one", "two"]


def falls_back_with_the_model_replaced(gw, chain_backends, body):
    """Sends `body` for the chain with vllm failing: openai's attempt gets exactly `body` with the
    model replaced, and a content-length that matches."""
    r = gw.chat(body=body, headers={"x-mock-fail": "vllm=503"})
    assert r.status_code == 200, r.text
    [second] = received(chain_backends, "openai")
    sent = second["body"].encode()
    assert sent == body.replace(b'"llama-3-70b"', b'"gpt-4o-mini"')
    assert headers_of(second)["content-length"] == [str(len(sent))]


def test_model_override_keeps_every_other_byte_and_fixes_content_length(gw, chain_backends):
    body = ('{"messages":[{"role":"user","content":"caf\\u00e9 \\"model\\": \\"x\\" \u00e9\u4e2d"}],'
            '\n "mod\\u0065l" :\t"llama-3-70b" , "n":1, "stream":false}').encode()
    falls_back_with_the_model_replaced(gw, chain_backends, body)
    assert received(chain_backends, "vllm")[0]["body"].encode() == body


@pytest.mark.parametrize("size", [70_000, 1_500_000])
def test_model_override_after_a_large_body_crosses_envoys_buffer_slices(gw, chain_backends, size):
    # The model comes last, after many of Envoy's 16 KiB slices (and, at 1.5 MB, many of the wasm
    # glue's 64 KiB reads): the rewrite must find it across them and keep every byte before it.
    filler = "".join(chr(0x61 + i % 26) for i in range(size))
    body = json.dumps({"messages": [{"role": "user", "content": filler}], "n": 1}).encode()
    falls_back_with_the_model_replaced(gw, chain_backends, body[:-1] + b', "model": "llama-3-70b"}')


def test_model_override_when_the_body_ends_with_trailers(gw, chain_backends):
    """An HTTP/2 body that ends with trailers never has a data frame with end_stream: the wasm glue
    used to splice the model only then, so openai's attempt got vllm's model name."""
    from h2c import Client, request_headers

    body = json.dumps({"model": CHAIN_MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    port = int(gw.base.rsplit(":", 1)[1])
    c = Client(port)
    try:
        sid = c.open(request_headers(port, extra=[("content-type", "application/json"), ("x-mock-fail", "vllm=503")]))
        c.data(sid, body)
        c.trailers(sid, [("x-body-checksum", "abc123")])
        r = c.response(sid)
    finally:
        c.close()
    assert r["status"] == 200, r
    [first] = received(chain_backends, "vllm")
    [second] = received(chain_backends, "openai")
    assert json.loads(first["body"])["model"] == CHAIN_MODEL
    assert second["body"].encode() == body.replace(b'"llama-3-70b"', b'"gpt-4o-mini"')


def test_refused_connection_falls_back(chain_backends):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    def vllm_refuses(cfg):
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == "vllm":
                c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = closed

    g = Gateway(chain_backends, tweak=vllm_refuses)
    try:
        r = g.chat(CHAIN_MODEL, provider_data=PROVIDER_DATA)
        assert r.status_code == 200, r.text
        [second] = received(chain_backends, "openai")
        assert headers_of(second)["authorization"] == ["Bearer sk-openai-secret"]
        assert "x-maas-subscription" not in headers_of(second)
    finally:
        g.stop()


def test_reset_mid_request_falls_back(gw, chain_backends):
    r = gw.chat(CHAIN_MODEL, provider_data=PROVIDER_DATA, headers={"x-mock-fail": "vllm=reset"})
    assert r.status_code == 200, r.text
    assert len(received(chain_backends, "vllm")) == 1
    [second] = received(chain_backends, "openai")
    assert headers_of(second)["authorization"] == ["Bearer sk-openai-secret"]


def test_when_every_provider_fails_the_client_gets_the_last_5xx(gw, chain_backends):
    r = gw.chat(CHAIN_MODEL, provider_data=PROVIDER_DATA, headers={"x-mock-fail": "vllm=503,openai=500"})
    assert r.status_code == 500
    assert r.headers["x-mock-backend"] == "openai"
    assert len(received(chain_backends, "vllm")) == 1 and len(received(chain_backends, "openai")) == 1


def test_provider_data_invalid_for_the_second_provider_is_400_before_any_attempt(gw, chain_backends):
    # vllm ignores openai_organization; openai forwards it, and an object is not a header value.
    r = gw.chat(CHAIN_MODEL, provider_data={"vllm_api_token": "ok", "openai_organization": {"o": 1}})
    assert r.status_code == 400
    assert error_code(r) == "invalid_provider_data"
    assert received(chain_backends, "vllm") == [] and received(chain_backends, "openai") == []


def test_missing_endpoint_metadata_is_502_and_nothing_is_sent(chain_backends):
    def no_metadata(cfg):
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == "vllm":
                c["load_assignment"]["endpoints"][0]["lb_endpoints"][0].pop("metadata")

    g = Gateway(chain_backends, tweak=no_metadata)
    try:
        r = g.chat(CHAIN_MODEL, provider_data=PROVIDER_DATA)
        assert r.status_code == 502
        assert error_code(r) == "fallback_misconfigured"
        assert "sk-" not in r.text
        assert received(chain_backends, "vllm") == [] and received(chain_backends, "openai") == []
        # Counted under the listener's counter names in both builds (the native upstream role hands
        # its counts to the listener's filter: Envoy would scope its own under the cluster).
        g.wait_for_stat(g.stat("rejected.fallback_misconfigured"), 1)
        assert g.stats().get(g.stat("rejected.fallback_misconfigured")) == 1
        # Requests that are not chain requests are untouched by the upstream role's absence.
        assert g.chat("llama-3-8b").status_code == 200
    finally:
        g.stop()


@pytest.mark.parametrize("name", ["x-llm-provider", "X-LLM-Provider"])
def test_a_client_naming_the_chain_in_the_routing_header_gets_nothing_special(gw, chain_backends, name):
    r = gw.chat("gpt-4o", headers={name: "llama-ha", "x-mock-fail": "vllm=503"})
    assert r.status_code == 200
    [only] = received(chain_backends, "openai")
    assert headers_of(only)["x-llm-provider"] == ["openai"]
    assert json.loads(only["body"])["model"] == "gpt-4o"
    # A model served by vllm alone: no fallback, whatever the routing header says.
    r = gw.chat("llama-3-8b", headers={name: "llama-ha", "x-mock-fail": "vllm=503"})
    assert r.status_code == 503
    assert len(received(chain_backends, "openai")) == 1


def test_strict_provider_then_byok_provider_restores_the_clients_credential_only_for_the_second(chain_backends):
    config = shipped_plugin_config()
    openai = next(p for p in config["providers"] if p["name"] == "openai")
    openai["client_auth"] = "forward"
    openai["forward_headers"] = {}
    g = Gateway(chain_backends, config)
    try:
        r = g.chat(CHAIN_MODEL, provider_data={"vllm_api_token": "sk-gateway"},
                   headers={"authorization": "Bearer client-own", "x-api-key": "client-x", "x-mock-fail": "vllm=503"})
        assert r.status_code == 200, r.text
        [first] = received(chain_backends, "vllm")
        [second] = received(chain_backends, "openai")
        assert headers_of(first)["authorization"] == ["Bearer sk-gateway"]
        assert "x-api-key" not in headers_of(first)
        assert headers_of(second)["authorization"] == ["Bearer client-own"]
        assert headers_of(second)["x-api-key"] == ["client-x"]
    finally:
        g.stop()


def test_attempts_per_chain_and_provider_and_exhausted_chains_are_counted(chain_backends):
    # A fresh Envoy, so every counter starts at zero (each worker hands its counts over once a second).
    g = Gateway(chain_backends)
    try:
        assert g.chat(CHAIN_MODEL, headers={"x-mock-fail": "vllm=503"}).status_code == 200
        assert g.chat(CHAIN_MODEL, headers={"x-mock-fail": "vllm=503,openai=503"}).status_code == 503
        assert g.chat(CHAIN_MODEL).status_code == 200
        prefix = g.stat("chain.llama-ha.")
        expected = {"requests": 3, "attempts.vllm": 3, "attempts.openai": 2, "exhausted": 1}
        for name, value in expected.items():
            g.wait_for_stat(prefix + name, value)
        stats = g.stats()
        assert {name: stats.get(prefix + name) for name in expected} == expected
        # Under the same names as the wasm build's, not under the chain cluster's stats scope.
        assert not [n for n in stats if n.startswith("cluster.llama-ha.") and "llm_header_forward" in n]
    finally:
        g.stop()


def test_an_attempt_is_counted_when_the_client_goes_away_before_any_response(chain_backends):
    # vllm takes 3 s; the client gives up after 1 s, long after the attempt was fitted to vllm.
    g = Gateway(chain_backends)
    try:
        with pytest.raises(httpx.TimeoutException):
            g.chat(CHAIN_MODEL, path="/v1/chat/completions?delay_ms=3000", timeout=1.0)
        name = g.stat("chain.llama-ha.attempts.vllm")
        assert g.wait_for_stat(name, 1).get(name) == 1
    finally:
        g.stop()


def test_llama_stack_client_path_falls_back_too(gw, chain_backends):
    r = gw.chat(CHAIN_MODEL, provider_data=PROVIDER_DATA, path="/v1/openai/v1/chat/completions",
                headers={"x-mock-fail": "vllm=503"})
    assert r.status_code == 200, r.text
    [second] = received(chain_backends, "openai")
    assert second["path"] == "/v1/chat/completions"
    assert headers_of(second)["authorization"] == ["Bearer sk-openai-secret"]


def test_three_attempts_each_undo_only_what_the_one_before_set(chain_backends):
    """vllm, then openai, then anthropic: the third attempt finds the second one's record of what it
    set (filter state written by an upstream attempt replaces the first one's and reaches the next)."""
    config = shipped_plugin_config()
    config["fallbacks"][0]["attempts"].append({"provider": "anthropic", "model": "claude-3-5-sonnet"})

    def three_providers(cfg):
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == "anthropic":
                c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] = {
                    "filter_metadata": {"llm_header_forward": {"provider": "anthropic"}}}
            if c["name"] == "llama-ha":
                c["cluster_type"]["typed_config"]["clusters"].append("anthropic")
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            if "retry_policy" in route.get("route", {}):
                route["route"]["retry_policy"]["num_retries"] = 2

    g = Gateway(chain_backends, config, tweak=three_providers)
    try:
        data = {**PROVIDER_DATA, "anthropic_api_key": "sk-ant-secret"}
        r = g.chat(CHAIN_MODEL, provider_data=data, headers={"x-mock-fail": "vllm=503,openai=503"})
        assert r.status_code == 200, r.text
        [first], [second], [third] = (received(chain_backends, n) for n in ("vllm", "openai", "anthropic"))
        h3 = headers_of(third)
        assert h3["x-api-key"] == ["sk-ant-secret"] and h3["x-llm-provider"] == ["anthropic"]
        assert h3["x-llm-model"] == ["claude-3-5-sonnet"]
        assert json.loads(third["body"])["model"] == "claude-3-5-sonnet"
        for leaked in ["authorization", "x-gateway", "x-maas-subscription"]:
            assert leaked not in h3, f"{leaked} from an earlier attempt reached anthropic"
        assert "sk-vllm-secret" not in json.dumps(third) and "sk-openai-secret" not in json.dumps(third)
        assert headers_of(second)["authorization"] == ["Bearer sk-openai-secret"]
        # What each attempt found recorded by the one before it (debug log: names, never values).
        log = g.wait_for_log('earlier attempts set ["authorization", "x-llm-provider", "x-llm-model"]')
        records = [line.split("earlier attempts set ")[1] for line in log.splitlines() if "earlier attempts set " in line]
        assert len(records) == 2, records
        assert "x-gateway" in records[0] and "x-gateway" not in records[1], records
        assert "sk-" not in log
    finally:
        g.stop()
