"""Bad requests get an OpenAI-shaped error with a stable code, and never an echo of a header value."""

import gzip
import json
import socket

import pytest

from harness import error_code, upstream


def rejected(resp, status, code):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    assert err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert resp.headers["content-type"] == "application/json"
    return err["message"]


@pytest.mark.parametrize("name", ["X-Forwarded-For", "HOST", "Cookie", "x-ENVOY-original-path", "Transfer-Encoding",
                                  "X-LLM-Provider", "x-ogx-provider-data", "Authorization", "X-Internal-Debug", ":authority"])
def test_blocked_names_in_provider_data_are_rejected(gateway, name):
    data = {"vllm_extra_headers": {name: "sneaky-value"}}
    msg = rejected(gateway.chat("llama-3-8b", provider_data=data), 400, "blocked_header")
    assert name.lower() in msg
    assert "sneaky-value" not in msg


def test_header_value_with_crlf_or_nul(gateway):
    for value in ["a\r\nx-injected: 1", "a\u0000b", "a\nb", "\u001b[31m"]:
        msg = rejected(gateway.chat("llama-3-8b", provider_data={"vllm_api_token": value}), 400, "invalid_header_value")
        assert "authorization" in msg and value not in msg


def test_header_value_over_8192_bytes(gateway):
    ok = gateway.chat("llama-3-8b", provider_data={"tenant_id": "t" * 8192})
    assert ok.status_code == 200
    msg = rejected(gateway.chat("llama-3-8b", provider_data={"tenant_id": "t" * 8193}), 400, "header_value_too_long")
    assert "x-tenant-id" in msg


def test_65_extra_headers(gateway):
    extra = {f"x-maas-{i:02d}": "v" for i in range(64)}
    assert gateway.chat("llama-3-8b", provider_data={"vllm_extra_headers": extra}).status_code == 200
    extra["x-maas-64"] = "v"
    rejected(gateway.chat("llama-3-8b", provider_data={"vllm_extra_headers": extra}), 400, "too_many_headers")


def test_invalid_header_name_and_wrong_type(gateway):
    rejected(gateway.chat("llama-3-8b", provider_data={"vllm_extra_headers": {"x-maas bad": "v"}}), 400, "invalid_header_name")
    rejected(gateway.chat("llama-3-8b", provider_data={"tenant_id": {"nested": 1}}), 400, "invalid_provider_data")


@pytest.mark.parametrize("raw", ["not json", "{\"a\":", "[1,2]", "\"string\"", "42", "{\"a\":" * 20 + "1" + "}" * 20])
def test_provider_data_not_json_not_an_object_or_too_deep(gateway, raw):
    msg = rejected(gateway.chat("llama-3-8b", provider_data=raw), 400, "invalid_provider_data")
    assert raw not in msg or len(raw) < 3


def test_provider_data_too_large(gateway):
    raw = json.dumps({"vllm_api_token": "k", "pad": "p" * 16400})
    rejected(gateway.chat("llama-3-8b", provider_data=raw), 431, "provider_data_too_large")


def test_two_provider_data_headers(gateway):
    headers = {"x-ogx-provider-data": json.dumps({"vllm_api_token": "b"})}
    rejected(gateway.chat("llama-3-8b", provider_data={"vllm_api_token": "a"}, headers=headers), 400, "conflicting_provider_data")


def test_duplicate_model(gateway):
    rejected(gateway.chat(body='{"model":"llama-3-8b","messages":[],"model":"gpt-4o"}'), 400, "duplicate_model")
    rejected(gateway.chat(body='{"model":"llama-3-8b","m\\u006fdel":"gpt-4o"}'), 400, "duplicate_model")


@pytest.mark.parametrize("model", ["1", "null", "[\"gpt-4o\"]", "{\"name\":\"gpt-4o\"}", "true"])
def test_model_must_be_a_string(gateway, model):
    rejected(gateway.chat(body=f'{{"model":{model},"messages":[]}}'), 400, "invalid_model")


def test_model_with_control_character(gateway):
    rejected(gateway.chat(body='{"model":"llama-3\\r\\nx-evil: 1"}'), 400, "invalid_model")


@pytest.mark.parametrize("body", ['{"model":"llama-3-8b"', '{"model":"llama-3-8b",}', "{'model':'x'}", '{"model":"a"} trailing'])
def test_malformed_json(gateway, body):
    rejected(gateway.chat(body=body), 400, "invalid_json")


# Each is put in a long prompt at lanes around the scanner's 64-byte windows (counted from the
# string's first byte), then the top-level model: what each build (the wasm build runs the wasm-SIMD
# marking, the native one AVX2 or SSE2) must accept or refuse, as serde_json does (which, unlike
# Python's json, refuses lone surrogates).
VALID_IN_STRINGS = [b"\\n", b'\\"', b"\\\\", b"\\u00e9", b"\\ud83d\\ude00", "\u00e9".encode(), "\u20ac".encode(),
                    "\U0001f600".encode(), b"\x7f"]
INVALID_IN_STRINGS = [b"\x01", b"\x1f", b"\x80", b"\xc3(", b"\xe2\x80(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                      b"\xc0\xaf", b"\\x", b"\\udc00", b"\\ud83dx", b"\n", b"\t"]


def test_specials_at_the_scanners_window_edges_are_judged_like_serde_json(gateway):
    wrong = []
    for lane in [0, 1, 31, 32, 33, 61, 62, 63, 64, 65, 127, 128]:
        for special in VALID_IN_STRINGS + INVALID_IN_STRINGS:
            body = (b'{"messages":[{"role":"user","content":"' + b"a" * lane + special + b"b" * 70 + special
                    + b'c"}],"model":"llama-3-8b"}')
            valid = special in VALID_IN_STRINGS
            r = gateway.chat(body=body)
            if valid and (r.status_code != 200 or upstream(r)["headers"]["x-llm-provider"] != ["vllm"]):
                wrong.append((lane, special, r.status_code, r.text[:200]))
            if not valid and (r.status_code != 400 or error_code(r) != "invalid_json"):
                wrong.append((lane, special, r.status_code, r.text[:200]))
    assert not wrong, wrong


def test_body_over_max_bytes_by_content_length(lab):
    body = json.dumps({"model": "llama-3-8b", "pad": "p" * 5000})
    rejected(lab.chat(body=body), 413, "request_too_large")


def test_body_over_max_bytes_chunked(lab):
    def pieces():
        yield b'{"model":"llama-3-8b","pad":"'
        for _ in range(10):
            yield b"p" * 1000
        yield b'"}'

    r = lab.client.post("/v1/chat/completions", content=pieces(), headers={"content-type": "application/json"})
    rejected(r, 413, "request_too_large")


def test_gzip_body(gateway):
    body = gzip.compress(json.dumps({"model": "llama-3-8b"}).encode())
    r = gateway.chat(body=body, headers={"content-encoding": "gzip"})
    rejected(r, 415, "unsupported_content_encoding")


def test_error_reply_never_echoes_values(gateway):
    secret = "sk-live-do-not-echo"
    for data in [{"vllm_extra_headers": {"cookie": secret}}, {"vllm_api_token": secret + "\n"}]:
        r = gateway.chat("llama-3-8b", provider_data=data)
        assert r.status_code == 400
        assert secret not in r.text


@pytest.mark.parametrize("variant", ['"Model"', '"MODEL"', '"mod\\u0065L"', '"mOdEl"'])
@pytest.mark.parametrize("variant_first", [False, True])
def test_case_variant_of_model_is_refused(gateway, variant, variant_first):
    """Go's encoding/json and ASP.NET Core match keys case-insensitively (last wins): a backend would
    serve gpt-4o with the vllm token the filter routed on llama-3-8b."""
    entries = ['"model":"llama-3-8b"', f'{variant}:"gpt-4o"']
    if variant_first:
        entries.reverse()
    body = "{" + ",".join(entries) + ',"messages":[]}'
    rejected(gateway.chat(body=body, provider_data={"vllm_api_token": "sk-vllm"}), 400, "duplicate_model")


def test_case_variant_of_model_below_the_top_level_is_just_content(gateway):
    body = '{"model":"llama-3-8b","messages":[{"role":"user","content":"hi","Model":"x","MODEL":"y"}]}'
    assert upstream(gateway.chat(body=body))["headers"]["x-llm-model"] == ["llama-3-8b"]


def test_nesting_up_to_256_levels_is_forwarded(gateway):
    # The top-level object is level 1; 255 arrays inside it make 256.
    body = '{"model":"llama-3-8b","x":' + "[" * 255 + "]" * 255 + "}"
    assert upstream(gateway.chat(body=body))["name"] == "vllm"


def test_nesting_past_256_levels_is_refused_before_the_body_ends(gateway):
    """The 257th level is refused the moment it opens: the scanner's memory is fixed, and a client
    cannot hold a request open with an ever-deeper body. The body below never ends; the reply
    arrives anyway."""
    port = int(gateway.base.rsplit(":", 1)[1])
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    chunk = b'{"model":"llama-3-8b","x":' + b"[" * 256
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head + b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = s.recv(65536)
            if not data:
                break
            reply += data
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), reply
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "invalid_json"
    assert "256 levels" in body["error"]["message"]


C1_AND_SEPARATORS = ["\u0085", "\u0080", "\u009b[31m", "\u009f", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", C1_AND_SEPARATORS)
def test_c1_controls_and_line_separators_in_provider_data_values(gateway, char):
    """NEL, CSI and U+2028/U+2029 split or forge lines in logs and line-oriented stores downstream."""
    for data in [{"vllm_api_token": f"sk{char}x-injected: 1"}, {"vllm_extra_headers": {"x-maas-tier": f"a{char}b"}}]:
        msg = rejected(gateway.chat("llama-3-8b", provider_data=data), 400, "invalid_header_value")
        assert char not in msg


@pytest.mark.parametrize("char", C1_AND_SEPARATORS)
def test_c1_controls_and_line_separators_in_the_model(gateway, char):
    body = json.dumps({"model": f"llama-3-8b{char}x", "messages": []})
    rejected(gateway.chat(body=body), 400, "invalid_model")
