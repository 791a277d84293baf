"""The body's model picks the backend; nothing the client sends can steer routing."""

import json

import httpx
import pytest

from harness import upstream, error_code


@pytest.mark.parametrize(
    "model,backend",
    [("llama-3-8b", "vllm"), ("meta-llama/Llama-3.1-70B", "vllm"), ("gpt-4o", "openai"), ("claude-3-5-sonnet", "anthropic")],
)
def test_each_model_reaches_its_cluster_with_routing_headers(gateway, model, backend):
    up = upstream(gateway.chat(model))
    assert up["name"] == backend
    assert up["headers"]["x-llm-provider"] == [backend]
    assert up["headers"]["x-llm-model"] == [model]


def test_spoofed_routing_headers_are_replaced(gateway):
    up = upstream(gateway.chat("llama-3-8b", headers={"x-llm-provider": "anthropic", "X-LLM-Model": "claude-3"}))
    assert up["name"] == "vllm"
    assert up["headers"]["x-llm-provider"] == ["vllm"]
    assert up["headers"]["x-llm-model"] == ["llama-3-8b"]


def test_spoofed_routing_header_without_a_model_is_removed(gateway):
    r = gateway.client.get("/v1/models", headers={"x-llm-provider": "anthropic", "authorization": "Bearer client"})
    up = upstream(r)
    assert up["name"] == "vllm", "Envoy's own /v1/models route, not the spoofed provider"
    assert "x-llm-provider" not in up["headers"]
    assert "authorization" not in up["headers"], "client credentials never pass without a provider rule"


def test_spoofed_envoy_control_headers_are_not_honoured(gateway):
    # The backend takes 200 ms; a client-chosen 1 ms upstream timeout would turn this into a 504.
    r = gateway.chat("llama-3-8b", path="/v1/chat/completions?delay_ms=200", headers={
        "x-envoy-upstream-rq-timeout-ms": "1",
        "x-envoy-max-retries": "7",
        "X-Envoy-Retry-On": "5xx",
        "x-envoy-internal": "true",
    })
    up = upstream(r)
    for name in ["x-envoy-upstream-rq-timeout-ms", "x-envoy-max-retries", "x-envoy-retry-on", "x-envoy-internal"]:
        assert name not in up["headers"], name


def test_unknown_model_is_rejected_with_404(gateway):
    r = gateway.chat("mistral-large")
    assert r.status_code == 404
    assert error_code(r) == "model_not_found"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_body_without_model_is_rejected_when_unknown_model_is_reject(gateway):
    r = gateway.chat(body=json.dumps({"messages": []}))
    assert (r.status_code, error_code(r)) == (404, "model_not_found")


def test_unknown_and_missing_model_go_to_the_default_provider(lab):
    up = upstream(lab.chat("mistral-large"))
    assert up["name"] == "anthropic"
    assert up["headers"]["x-llm-model"] == ["mistral-large"]
    up = upstream(lab.chat(body=json.dumps({"messages": []})))
    assert up["name"] == "anthropic"
    assert "x-llm-model" not in up["headers"]
    assert up["headers"]["x-llm-provider"] == ["anthropic"]


def test_request_without_body_uses_default_provider_rules(lab):
    up = upstream(lab.client.get("/v1/models"))
    assert up["name"] == "anthropic"
    assert up["headers"]["x-llm-provider"] == ["anthropic"]


def test_chunked_body_streamed_in_pieces(gateway):
    def pieces():
        yield b'{"messages":[{"role":"user","content":"'
        yield b"x" * 200_000
        yield b'"}],'
        yield b'"model":"gpt-4o"}'

    r = gateway.client.post("/v1/chat/completions", content=pieces(), headers={"content-type": "application/json"})
    up = upstream(r)
    assert up["name"] == "openai"
    assert up["headers"].get("transfer-encoding") == ["chunked"] or up["body_bytes"] > 200_000
    assert up["body_bytes"] == len(b'{"messages":[{"role":"user","content":"') + 200_000 + len(b'"}],"model":"gpt-4o"}')


def test_http2_cleartext_client(gateway):
    with httpx.Client(base_url=gateway.base, http1=False, http2=True, trust_env=False) as h2:
        r = h2.post("/v1/chat/completions", json={"model": "claude-3-haiku", "messages": []},
                    headers={"x-llamastack-provider-data": json.dumps({"anthropic_api_key": "sk-ant-h2"})})
        assert r.http_version == "HTTP/2"
        up = upstream(r)
        assert up["name"] == "anthropic"
        assert up["headers"]["x-api-key"] == ["sk-ant-h2"]
        r = h2.post("/v1/chat/completions", json={"model": "nope"})
        assert (r.status_code, error_code(r)) == (404, "model_not_found")


def test_large_body_model_after_a_megabyte(gateway):
    body = json.dumps({"messages": [{"role": "user", "content": "y" * 1_500_000}], "model": "llama-3-8b"})
    up = upstream(gateway.chat(body=body))
    assert up["name"] == "vllm"
    assert up["body_bytes"] == len(body)


def test_non_json_body_is_not_read_and_not_routed(gateway):
    r = gateway.client.post("/v1/chat/completions", content=b'{"model":"llama-3-8b"}', headers={"content-type": "text/plain"})
    assert r.status_code == 404
    assert error_code(r) == "no_route", "Envoy's fallback route answered: the filter set no routing header"


def test_no_route_reply_is_labelled_json_and_says_what_a_chat_request_needs(gateway):
    for r in [gateway.client.post("/v1/chat/completions", content=b'{"model":"gpt-4o"}'),  # no content-type
              gateway.client.get("/v1/chat/completions")]:
        assert r.status_code == 404
        assert r.headers.get_list("content-type") == ["application/json"]
        error = r.json()["error"]
        assert error["code"] == "no_route"
        assert "content-type: application/json" in error["message"]


@pytest.mark.parametrize("model,backend", [("llama-3-8b", "vllm"), ("gpt-4o", "openai"), ("claude-3-5-sonnet", "anthropic")])
def test_llama_stack_openai_compatible_prefix_is_rewritten_to_v1(gateway, model, backend):
    up = upstream(gateway.chat(model, path="/v1/openai/v1/chat/completions"))
    assert (up["name"], up["path"]) == (backend, "/v1/chat/completions")
    assert up["headers"]["x-llm-model"] == [model]
    # Only that prefix is rewritten; other requests reach the backend exactly as before.
    up = upstream(gateway.chat(model, path="/v2/openai/v1/chat/completions"))
    assert up["path"] == "/v2/openai/v1/chat/completions"
    up = upstream(gateway.chat(model))
    assert up["path"] == "/v1/chat/completions" and "x-envoy-original-path" not in up["headers"]
    up = upstream(gateway.client.get("/v1/openai/v1/models"))
    assert (up["name"], up["path"]) == ("vllm", "/v1/models")
