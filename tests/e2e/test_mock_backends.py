"""The mock backends (envoy/mock_llm.py), run as `make run` runs them (a separate process), behave
like real APIs when Envoy cancels a request: the reply ends quietly, no traceback, and the
backend keeps serving."""

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from harness import ROOT, Gateway

NAMES = ("vllm", "openai", "anthropic")


class ProcessBackends:
    """The three mocks in one `python3 envoy/mock_llm.py name=host:port ...` process."""

    def __init__(self):
        ports = []
        for _ in NAMES:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        self.ports = dict(zip(NAMES, ports))
        args = [f"{n}=127.0.0.1:{p}" for n, p in self.ports.items()]
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "envoy/mock_llm.py"), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in NAMES:  # one line per backend once it listens
            assert self.proc.stdout.readline().startswith("mock "), self.stop()

    def port(self, name):
        return self.ports[name]

    def stop(self):
        """Stops the process; returns what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=10)
        return err


@pytest.fixture(scope="module")
def process_gateway():
    backends = ProcessBackends()
    gw = Gateway(backends)
    yield gw, backends
    gw.stop()
    backends.stop()


def test_cancelled_requests_end_quietly(process_gateway):
    gw, backends = process_gateway
    chat = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]}
    # A stream the client abandons after its first event: Envoy resets the upstream mid-stream.
    for path, body in [("/v1/chat/completions?chunks=200", chat),
                       ("/v1/messages?chunks=200", {**chat, "model": "claude-3-5-sonnet", "max_tokens": 8})]:
        with httpx.Client(base_url=gw.base, trust_env=False) as c:
            with c.stream("POST", path, json={**body, "stream": True}) as r:
                assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
                first = next(r.iter_lines())
                assert first.startswith(("data: ", "event: ")), first
    # A slow reply the client gives up on: Envoy cancels it while the backend is still thinking.
    for path in ["/v1/chat/completions?delay_ms=400", "/v1/messages?delay_ms=400"]:
        with pytest.raises(httpx.TimeoutException):
            gw.chat("gpt-4o", path=path, timeout=0.1)
    time.sleep(0.6)  # the backend wakes up and writes to the closed connection
    # Still serving, then stopped: nothing on stderr.
    r = gw.chat("claude-3-haiku", path="/v1/messages")
    assert r.json()["type"] == "message" and r.json()["upstream"]["name"] == "anthropic"
    err = backends.stop()
    assert "Traceback" not in err and "Error" not in err, err
