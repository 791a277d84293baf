#!/usr/bin/env python3
"""A stand-in LLM backend for trying the filter: answers like an OpenAI-compatible server and
reports, in the reply, exactly which request headers reached it.

    python3 envoy/mock_llm.py vllm=127.0.0.1:18001 openai=127.0.0.1:18002 anthropic=127.0.0.1:18003

Each NAME=HOST:PORT starts one backend called NAME. Standard library only; loopback only.
`/v1/chat/completions` (any POST) returns a chat completion whose `upstream` field has the backend
name, method, path, the received headers (as [name, value] pairs, in order) and the body size;
`/v1/models` lists a model. Used by `make run` and by the end-to-end tests.
"""

import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def make_handler(backend_name):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mock-llm/1"

        def log_message(self, fmt, *args):  # keep test output quiet
            pass

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
            self.send_header("x-mock-backend", backend_name)
            self.end_headers()
            self.wfile.write(data)

        def upstream_info(self, body):
            return {
                "name": backend_name,
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body_bytes": len(body),
            }

        def handle_any(self):
            body = self.read_body()
            # `?delay_ms=N` makes the backend slow, to show that client timeout headers are ignored.
            query = parse_qs(urlsplit(self.path).query)
            if "delay_ms" in query:
                time.sleep(int(query["delay_ms"][0]) / 1000)
            model = None
            try:
                parsed = json.loads(body) if body else None
                if isinstance(parsed, dict):
                    model = parsed.get("model")
            except ValueError:
                pass
            info = self.upstream_info(body)
            if self.path.startswith("/v1/models"):
                self.reply(200, {"object": "list", "data": [{"id": f"{backend_name}-model", "object": "model"}], "upstream": info})
                return
            self.reply(200, {
                "id": f"chatcmpl-mock-{backend_name}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": f"Hello from the mock {backend_name} backend."},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9},
                "upstream": info,
            })

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start(name, host="127.0.0.1", port=0):
    """Starts one backend in a background thread; returns the server (its port: server.server_port)."""
    server = Server((host, port), make_handler(name))
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
