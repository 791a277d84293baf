#!/usr/bin/env python3
"""A stand-in LLM backend for trying the filter: answers like the real APIs (OpenAI-compatible chat
completions, Anthropic Messages, streaming included) and reports, in the reply, exactly which
request headers reached it.

    python3 envoy/mock_llm.py vllm=127.0.0.1:18001 openai=127.0.0.1:18002 anthropic=127.0.0.1:18003

Each NAME=HOST:PORT starts one backend called NAME. Standard library only; loopback only.

- `POST /v1/messages`: an Anthropic Messages reply (`type: message`); with `"stream": true` its
  event stream (`message_start`, `content_block_start`, `ping`, `content_block_delta`...,
  `content_block_stop`, `message_delta`, `message_stop`).
- `GET /v1/models` (any path under it): a model list.
- Any other request (`POST /v1/chat/completions`, ...): an OpenAI chat completion; with
  `"stream": true` server-sent events in OpenAI's `chat.completion.chunk` format, several chunks a
  short delay apart, then `data: [DONE]`.

Every non-streaming reply has an `upstream` field: the backend name, method, path, the received
headers (as [name, value] pairs, in order) and the body size. Streams carry it in their first event
(the first chunk; `message_start`'s message). Each backend also keeps the last requests it received
(`server.received`, each with the `body` it got), for in-process tests.

A request header `x-mock-fail: vllm=503,openai=reset` makes the named backends fail that request
instead (a status, or `reset`: the connection is dropped without a reply), to show fallback chains.

Query parameters, for tests: `?delay_ms=N` answers after N ms; `?chunks=N` streams N content
pieces (default 4). A request header `x-mock-gate: <id>` makes a stream wait, before its last
content piece, until an in-process test calls `server.gates.release(<id>)`: proof that the
client got the first pieces while the backend still held the last one (`server.gates.outcome`).

A client (or Envoy) that goes away mid-reply ends that reply quietly: no traceback.

To add a behaviour, add a method to `Handler` and a line to `Handler.route`.
"""

import collections
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK_DELAY_S = 0.02
GATE_TIMEOUT_S = 15
# What the client going away looks like to the writer.
GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Gates:
    """Streams that hold their last piece until a test releases them (header `x-mock-gate`)."""

    def __init__(self):
        self._events = {}
        self._outcomes = {}
        self._lock = threading.Lock()

    def _event(self, gate_id):
        with self._lock:
            return self._events.setdefault(gate_id, threading.Event())

    def release(self, gate_id):
        self._event(gate_id).set()

    def wait(self, gate_id):
        """Called by the stream before its last piece; records whether it was released in time."""
        released = self._event(gate_id).wait(GATE_TIMEOUT_S)
        with self._lock:
            self._outcomes[gate_id] = "released" if released else "timed out"

    def outcome(self, gate_id):
        """"released": the client saw the first pieces before the backend sent the last one;
        "timed out": it did not (a buffering proxy); None: the stream has not got that far."""
        with self._lock:
            return self._outcomes.get(gate_id)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-llm/1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    @property
    def backend(self):
        return self.server.backend_name

    # ---- dispatch ----------------------------------------------------------------------------

    def route(self):
        """The method that answers this request."""
        path = urlsplit(self.path).path
        if path.startswith("/v1/models"):
            return self.models
        if self.command == "POST" and path == "/v1/messages":
            return self.anthropic_messages
        return self.chat_completions

    def handle_any(self):
        try:
            body = self.read_body()
            query = parse_qs(urlsplit(self.path).query)
            request = Request(self, body, query)
            # Recorded when it arrives, not after the delay below: a slow request whose client gave
            # up must not show up later in another test's record.
            self.server.record({**request.upstream, "body": body.decode(errors="replace")})
            # `?delay_ms=N` makes the backend slow, to show that client timeout headers are ignored.
            if "delay_ms" in query:
                time.sleep(int(query["delay_ms"][0]) / 1000)
            failure = self.failure()
            if failure == "reset":
                self.close_connection = True
                self.connection.shutdown(2)  # no reply at all: Envoy sees the connection reset
                return
            if failure:
                self.reply(int(failure), {"error": {"message": f"mock {self.backend} failing on demand",
                                                    "type": "server_error", "param": None, "code": "mock_failure"},
                                          "upstream": request.upstream})
                return
            self.route()(request)
        except GONE:
            self.close_connection = True  # the client or Envoy cancelled: nothing to answer

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def failure(self):
        """`x-mock-fail: vllm=503, openai=reset`: what this backend does instead of answering (a
        status, or `reset`: drop the connection without a reply), to show fallback chains."""
        for item in self.headers.get("x-mock-fail", "").split(","):
            name, _, how = item.strip().partition("=")
            if name == self.backend:
                return how or "503"
        return None

    # ---- answers -----------------------------------------------------------------------------

    def models(self, req):
        self.reply(200, {"object": "list", "data": [{"id": f"{self.backend}-model", "object": "model"}],
                         "upstream": req.upstream})

    def chat_completions(self, req):
        text = f"Hello from the mock {self.backend} backend."
        common = {"id": f"chatcmpl-mock-{self.backend}", "created": int(time.time()), "model": req.model}
        if not req.stream:
            self.reply(200, {
                **common,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9},
                "upstream": req.upstream,
            })
            return

        def chunk(delta, finish=None, **extra):
            return {**common, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

        self.start_stream()
        self.event(chunk({"role": "assistant", "content": ""}, upstream=req.upstream))
        for piece in req.pieces(text):
            self.event(chunk({"content": piece}))
        self.event(chunk({}, "stop"))
        self.write(b"data: [DONE]\n\n")
        self.end_stream()

    def anthropic_messages(self, req):
        text = f"Hello from the mock {self.backend} backend."
        message = {"id": f"msg_mock_{self.backend}", "type": "message", "role": "assistant", "model": req.model}
        if not req.stream:
            self.reply(200, {**message, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                             "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 8},
                             "upstream": req.upstream})
            return
        self.start_stream()
        self.event({"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1}, "upstream": req.upstream}}, "message_start")
        self.event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   "content_block_start")
        self.event({"type": "ping"}, "ping")
        for piece in req.pieces(text):
            self.event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                       "content_block_delta")
        self.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self.event({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 8}}, "message_delta")
        self.event({"type": "message_stop"}, "message_stop")
        self.end_stream()

    # ---- HTTP plumbing -----------------------------------------------------------------------

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-mock-backend", self.backend)
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-mock-backend", self.backend)
        self.end_headers()

    def write(self, data):
        """One HTTP chunk, flushed at once."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, payload, name=None):
        line = (f"event: {name}\n" if name else "") + f"data: {json.dumps(payload)}\n\n"
        self.write(line.encode())

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Request:
    """What a handler needs to know about the request it answers."""

    def __init__(self, handler, body, query):
        self.handler = handler
        self.query = query
        self.json = None
        try:
            parsed = json.loads(body) if body else None
            self.json = parsed if isinstance(parsed, dict) else None
        except ValueError:
            pass
        self.model = (self.json or {}).get("model")
        self.stream = (self.json or {}).get("stream") is True
        self.upstream = {
            "name": handler.backend,
            "method": handler.command,
            "path": handler.path,
            "headers": [[k.lower(), v] for k, v in handler.headers.items()],
            "body_bytes": len(body),
        }

    def pieces(self, text):
        """`text` in `?chunks=N` pieces, a short delay apart; a gated stream waits before the last."""
        n = max(2, int(self.query.get("chunks", ["4"])[0]))
        words = text.split(" ")
        pieces = [" ".join(words[i * len(words) // n:(i + 1) * len(words) // n]) for i in range(n)]
        pieces = [p + " " if i < n - 1 else p for i, p in enumerate(pieces)]
        gate = self.handler.headers.get("x-mock-gate")
        for i, piece in enumerate(pieces):
            if i == n - 1 and gate:
                self.handler.server.gates.wait(gate)
            elif i:
                time.sleep(CHUNK_DELAY_S)
            yield piece


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, backend_name):
        super().__init__(address, Handler)
        self.backend_name = backend_name
        self.gates = Gates()
        self.received = collections.deque(maxlen=1000)

    def record(self, upstream):
        self.received.append(upstream)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], GONE):
            return  # a peer that went away while its request was read: not an error of ours
        super().handle_error(request, client_address)


def start(name, host="127.0.0.1", port=0):
    """Starts one backend in a background thread; returns the server (its port: server.server_port)."""
    server = Server((host, port), name)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for spec in argv:
        name, _, address = spec.partition("=")
        host, _, port = address.rpartition(":")
        server = start(name, host or "127.0.0.1", int(port))
        print(f"mock {name} backend on http://{server.server_address[0]}:{server.server_port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
