"""Oversized uploads always get the filter's JSON 413, never Envoy's text/plain one: the shipped
listener buffer leaves a whole `body.max_bytes` of headroom over the filter's limit (README,
"Why per_connection_buffer_limit_bytes")."""

import json
import socket
import threading
from urllib.parse import urlsplit

from harness import shipped_plugin_config

MIB = 1024 * 1024


def raw_chunked_upload(base, total, chunk_sizes):
    """POSTs a `total`-byte JSON chat body with HTTP/1.1 chunked encoding, cycling through
    `chunk_sizes`, while reading the reply (the gateway may answer and close before the upload
    ends). Returns (status, headers, body bytes)."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    prefix = b'{"model":"llama-3-8b","messages":[{"role":"user","content":"'
    suffix = b'"}]}'
    filler = total - len(prefix) - len(suffix)

    def pieces():
        yield prefix
        sent, i = 0, 0
        while sent < filler:
            n = min(chunk_sizes[i % len(chunk_sizes)], filler - sent)
            yield b"x" * n
            sent, i = sent + n, i + 1
        yield suffix

    def send():
        try:
            sock.sendall(head)
            for p in pieces():
                sock.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the gateway answered and closed: expected for an oversized body

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reply = b""
    try:
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        header_block, _, body = reply.partition(b"\r\n\r\n")
        lines = header_block.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
    finally:
        sock.close()
        sender.join(30)
    return status, headers, body


def test_twenty_chunked_12_mib_uploads_all_get_the_filters_json_413(gateway):
    limit = shipped_plugin_config()["body"]["max_bytes"]
    assert 12 * MIB > limit
    # Chunk sizes from 16 KiB to 3 MiB, shifted per attempt, so the reads that carry the body past
    # body.max_bytes differ from one upload to the next.
    sizes = [16 * 1024, 3 * MIB, 256 * 1024, 1 * MIB + 7, 64 * 1024, 2 * MIB + 1, 512 * 1024 - 3]
    for attempt in range(20):
        shifted = sizes[attempt % len(sizes):] + sizes[:attempt % len(sizes)]
        status, headers, body = raw_chunked_upload(gateway.base, 12 * MIB, shifted)
        assert status == 413, (attempt, status, body[:200])
        assert headers.get("content-type") == "application/json", (attempt, headers, body[:200])
        assert json.loads(body)["error"]["code"] == "request_too_large", (attempt, body[:200])
