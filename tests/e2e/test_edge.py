"""The shipped Envoy's edge hardening: what a client cannot make the backend see, whatever it
writes (forwarding headers, underscore spellings, paths), and Envoy's own limits."""

import collections
import socket

import h2.settings
import pytest

from h2c import Client, request_headers
from harness import Gateway, upstream


def raw(gw, request: bytes):
    """Sends one HTTP/1.1 request as written (no client-side path cleaning); returns the status,
    the response headers (lowercase names) and the body."""
    port = int(gw.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower().decode()] = value.strip().decode()
                if len(body) >= int(headers.get("content-length", "0")):
                    break
    status = int(data.split(b" ", 2)[1])
    return status, headers, body


def backend_requests(gw, cluster="vllm"):
    return gw.stats().get(f"cluster.{cluster}.upstream_rq_total", 0)


def test_envoy_owns_forwarding_headers_and_request_id(gateway):
    """`use_remote_address` and the early header mutation: the backend sees Envoy's view of the
    client, never what the client wrote, in any letter case."""
    spoofed = {"X-Forwarded-For": "6.6.6.6", "x-forwarded-host": "evil.example", "X-FORWARDED-PROTO": "https",
               "x-forwarded-port": "8443", "x-forwarded-prefix": "/admin", "x-request-id": "attacker-chosen-id"}
    up = upstream(gateway.chat("llama-3-8b", headers=spoofed))
    h = up["headers"]
    # One address, Envoy's view of the peer (for a loopback peer Envoy writes its own address).
    assert len(h["x-forwarded-for"]) == 1 and "," not in h["x-forwarded-for"][0], h
    assert "6.6.6.6" not in h["x-forwarded-for"][0]
    assert h["x-forwarded-proto"] == ["http"], h
    for name in ("x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix"):
        assert name not in h, name
    assert h["x-request-id"] != ["attacker-chosen-id"] and len(h["x-request-id"]) == 1


@pytest.mark.parametrize("name", ["x_llamastack_provider_data", "x_api_key", "x_llm_provider", "X_Ogx_Provider_Data"])
def test_underscore_spellings_never_reach_the_backend(gateway, name):
    """CGI/WSGI-style backends read `x_api_key` as `x-api-key`: Envoy refuses such requests
    (`headers_with_underscores_action: REJECT_REQUEST`)."""
    before = backend_requests(gateway)
    body = b'{"model":"llama-3-8b","messages":[]}'
    status, _, _ = raw(gateway, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                 + name.encode() + b": sk-smuggled\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    assert status == 400
    # HTTP/2: the stream is reset.
    port = int(gateway.base.rsplit(":", 1)[1])
    c = Client(port)
    try:
        sid = c.open(request_headers(port, extra=[("content-type", "application/json"), (name.lower(), "sk-smuggled")]))
        c.data(sid, body, end_stream=True)
        r = c.response(sid)
        assert r["reset"] is not None or (r["status"] or 0) >= 400, r
        assert b"sk-smuggled" not in r["body"]
    finally:
        c.close()
    assert backend_requests(gateway) == before


@pytest.mark.parametrize("path,status", [
    (b"/v1/models/../chat/completions", 404),   # normalized to /v1/chat/completions: no model, no route
    (b"/v1/models%2F..", 400),                   # escaped slash: refused
    (b"/v1/models%2f../chat/completions", 400),
    (b"/v1/modelsXYZ", 404),                     # not a prefix match any more
    (b"/v1//models/./../models/../chat/completions", 404),
    (b"/v1/models", 404),                        # POST: the route is GET only
])
def test_unread_bodies_reach_no_backend_through_the_models_route(gateway, path, status):
    before = backend_requests(gateway)
    body = b"model=llama-3-8b&prompt=not-json"
    st, headers, reply = raw(gateway, b"POST " + path + b" HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n"
                                      b"content-length: %d\r\n\r\n" % len(body) + body)
    assert st == status, reply
    assert "x-mock-backend" not in headers
    assert backend_requests(gateway) == before


def test_get_models_still_reaches_vllm(gateway):
    up = upstream(gateway.client.get("/v1/models"))
    assert up["name"] == "vllm" and up["method"] == "GET"
    # Normalization runs before routing: an equivalent spelling is the same path.
    st, headers, _ = raw(gateway, b"GET /v1//models HTTP/1.1\r\nhost: x\r\n\r\n")
    assert st == 200 and headers.get("x-mock-backend") == "vllm"


def test_http2_limits_are_advertised(gateway):
    port = int(gateway.base.rsplit(":", 1)[1])
    c = Client(port)
    try:
        assert c.max_streams == 100
    finally:
        c.close()


def test_a_client_ignoring_the_stream_limit_loses_its_connection(gateway):
    """An attacker that opens more streams than the advertised 100 (the h2 package is told the
    limit is higher) does not get them: Envoy closes the whole connection, and every stream it
    held goes with it."""
    port = int(gateway.base.rsplit(":", 1)[1])
    c = Client(port)
    try:
        limit = c.max_streams
        assert limit <= 100, f"Envoy allows {limit} streams per connection"
        c.conn.remote_settings._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = collections.deque([10 * limit])
        for _ in range(limit + 50):
            sid = c.open(request_headers(port, extra=[("content-type", "application/json")]))
            c.data(sid, b'{"model":"llama-3-8b"')
        c.sock.settimeout(10)
        closed = False
        while not closed:
            try:
                closed = not c.sock.recv(65536)
            except ConnectionResetError:
                closed = True
        assert closed
    finally:
        c.close()
    active = gateway.wait_for_stat("http.llm_gateway.downstream_rq_active", 0)
    assert active["http.llm_gateway.downstream_rq_active"] == 0
    assert upstream(gateway.chat("llama-3-8b"))["name"] == "vllm"


def test_no_unbounded_connection_warning_at_start(backends):
    """Envoy warns at start when nothing limits downstream connections; the shipped overload
    manager (`global_downstream_max_connections`) sets that limit."""
    gw = Gateway(backends)
    try:
        gw.chat("llama-3-8b")
        log = gw.log()
        assert "no configured limit to the number of allowed active downstream connections" not in log.lower(), log
        assert "overload" not in log.lower() or "error" not in log.lower()
    finally:
        gw.stop()
