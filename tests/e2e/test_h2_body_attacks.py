"""Body attacks over raw HTTP/2 (h2c) frames, as an attacker sends them: the body split across DATA
frames anywhere, or a stream that never ends. The filter's answer must not depend on the framing."""

import json
import socket

import h2.config
import h2.connection
import h2.events
import pytest

HEADERS = [(":method", "POST"), (":scheme", "http"), (":authority", "gateway"), (":path", "/v1/chat/completions"),
           ("content-type", "application/json")]


def h2_exchange(gateway, frames, end_stream=True):
    """Sends `frames` as DATA frames of one stream (ending it only if `end_stream`) and returns
    (status, body) of the reply, which must come even when the stream is left open."""
    port = int(gateway.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, HEADERS)
        for i, frame in enumerate(frames):
            conn.send_data(stream, frame, end_stream=end_stream and i == len(frames) - 1)
            sock.sendall(conn.data_to_send())
        sock.sendall(conn.data_to_send())
        status, body = None, b""
        while True:
            data = sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed before the reply ended: {status} {body!r}")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and event.stream_id == stream:
                    return status, body
            sock.sendall(conn.data_to_send())


def code(body):
    return json.loads(body)["error"]["code"]


def test_nesting_past_256_levels_over_h2_is_refused_while_the_stream_is_open(gateway):
    frames = [b'{"model":"llama-3-8b","x":'] + [b"[" * 64] * 4 + [b"["]
    status, body = h2_exchange(gateway, frames, end_stream=False)
    assert (status, code(body)) == (400, "invalid_json"), body


@pytest.mark.parametrize("frames", [
    [b'{"model":"llama-3-8b","Mo', b'del":"gpt-4o"}'],
    [b'{"model":"llama-3-8b","mod\\u00', b'65L":"gpt-4o"}'],
    [b'{"MOD', b'EL":"gpt-4o",', b'"model":"llama-3-8b"}'],
    [bytes([b]) for b in b'{"model":"llama-3-8b","mOdEl":"gpt-4o"}'],
])
def test_case_variant_of_model_split_across_data_frames(gateway, frames):
    status, body = h2_exchange(gateway, frames)
    assert (status, code(body)) == (400, "duplicate_model"), body


def test_a_well_formed_body_split_byte_by_byte_is_forwarded(gateway):
    frames = [bytes([b]) for b in b'{"model":"llama-3-8b","messages":[{"role":"user","content":"Model MODEL"}]}']
    status, body = h2_exchange(gateway, frames)
    assert status == 200, body
    assert json.loads(body)["upstream"]["name"] == "vllm"
