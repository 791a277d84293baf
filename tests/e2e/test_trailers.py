"""Request trailers (SPEC §4): with HTTP/2 on both sides a client can send header fields after the
body, and Envoy passes them to an HTTP/2 backend. Everything the header rules remove must not
pass as a trailer either."""

import json

import pytest

from conftest import LAB_CONFIG
from h2c import Client, EchoUpstream, request_headers, use_h2_upstream
from harness import Gateway

# Each name here is removed from the headers for the shipped vllm provider (or managed by Envoy in
# the headers only); as trailers they must not reach the backend either.
HOSTILE = [
    ("x-llamastack-provider-data", json.dumps({"openai_api_key": "sk-other-provider"})),
    ("x-ogx-provider-data", json.dumps({"vllm_api_token": "sk-trailer"})),
    ("cookie", "session=trailer"),
    ("authorization", "Bearer sk-client"),
    ("x-api-key", "sk-client-key"),
    ("proxy-authorization", "Basic Zm9vOmJhcg=="),
    ("x-llm-provider", "openai"),
    ("x-llm-model", "gpt-4o"),
    ("x-envoy-upstream-rq-timeout-ms", "1"),
    ("x-envoy-retry-on", "5xx"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-request-id", "attacker-chosen"),
    ("host", "evil.example"),
    ("x-real-ip", "6.6.6.7"),
    ("forwarded", "for=6.6.6.8"),
]
BENIGN = ("x-body-checksum", "abc123")
# Names the shipped vllm provider sets as headers (set_headers, a forward_headers target): the
# filter's value wins in the headers, and a trailer must not follow it with the client's.
SET_AS_HEADERS = [("x-gateway", "trailer-gateway"), ("x-tenant-id", "trailer-tenant")]


@pytest.fixture(scope="module")
def h2_backend():
    echo = EchoUpstream("h2-echo")
    yield echo
    echo.close()


def send_with_trailers(gw, content_type, body, trailers, path="/v1/chat/completions"):
    port = int(gw.base.rsplit(":", 1)[1])
    c = Client(port)
    try:
        sid = c.open(request_headers(port, path, extra=[("content-type", content_type)]))
        c.data(sid, body)
        c.trailers(sid, trailers)
        r = c.response(sid)
    finally:
        c.close()
    assert r["status"] == 200, r
    return json.loads(r["body"])["upstream"]


def check_trailers(up):
    names = [n for n, _ in up["trailers"]]
    assert [BENIGN[0]] == names, f"only the benign trailer may pass, got {up['trailers']}"
    values = json.dumps(up)
    for secret in ("sk-other-provider", "sk-trailer", "sk-client", "session=trailer", "attacker-chosen", "6.6.6.", "evil.example",
                   "trailer-gateway", "trailer-tenant"):
        assert secret not in values, secret


def test_trailers_after_a_json_body_get_the_header_rules(backends, h2_backend):
    gw = Gateway(backends, tweak=lambda cfg: use_h2_upstream(cfg, "vllm", h2_backend.port))
    try:
        body = json.dumps({"model": "llama-3-8b", "messages": []}).encode()
        up = send_with_trailers(gw, "application/json", body, [BENIGN, *HOSTILE, *SET_AS_HEADERS])
        assert up["name"] == "h2-echo"
        assert dict(up["headers"])["x-llm-provider"] == "vllm"
        check_trailers(up)
    finally:
        gw.stop()


def test_trailers_of_a_request_decided_without_its_body(backends, h2_backend):
    """A body that is not JSON is not read: the decision is made on the headers (here the lab's
    default provider, anthropic), and the trailers still get that provider's rules."""
    gw = Gateway(backends, LAB_CONFIG, tweak=lambda cfg: use_h2_upstream(cfg, "anthropic", h2_backend.port))
    try:
        up = send_with_trailers(gw, "text/plain", b"hello", [BENIGN, *HOSTILE])
        assert dict(up["headers"])["x-llm-provider"] == "anthropic"
        # The lab's anthropic provider forwards client credentials (bring-your-own-key): as a
        # header x-api-key would pass, so as a trailer it may too. Its set_headers authorization
        # wins over the client's in the headers, so the client's authorization trailer may not
        # follow it; the rest may not pass either.
        names = [n for n, _ in up["trailers"]]
        assert sorted(names) == sorted([BENIGN[0], "x-api-key"]), up["trailers"]
    finally:
        gw.stop()
