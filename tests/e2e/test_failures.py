"""Failure behaviour: nothing hangs, nothing passes half-rewritten, a crashed VM fails its own requests
and is replaced."""

import copy
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from harness import (NOOP_WASM, Gateway, _wasm_filter_config, plugin_filter, set_module_path, set_plugin_value,
                     shipped_config, shipped_plugin_config, upstream)


def _hcm(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crashing_filter(reload_config=None):
    """A tweak that puts the bench's do-nothing module, configured to panic on `x-crash` and to
    hold every request with a body until the body ends, in front of the filter, with the shipped
    failure policy (`reload_config` may replace the shipped back-off)."""

    def tweak(cfg):
        shipped = _wasm_filter_config(cfg)
        crash = {"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": "crash", "root_id": "crash", "allow_on_headers_stop_iteration": True,
                       "failure_policy": shipped["failure_policy"],
                       "reload_config": reload_config or shipped["reload_config"],
                       "vm_config": {"vm_id": "crash", "runtime": "envoy.wasm.runtime.v8",
                                     "code": {"local": {"filename": str(NOOP_WASM)}}},
                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "crash"}}}}
        _hcm(cfg)["http_filters"].insert(0, crash)

    return tweak


def hold(gw, token):
    """Starts a request whose body is not finished: the VM holds it."""
    port = int(gw.base.rsplit(":", 1)[1])
    body = json.dumps({"model": "llama-3-8b", "messages": []}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              b"x-llamastack-provider-data: " + json.dumps({"vllm_api_token": token}).encode() + b"\r\n"
              b"content-length: %d\r\n\r\n" % len(body) + body[:10])
    return s, body[10:]


def finish(held):
    s, rest = held
    with s:
        s.sendall(rest)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def requires_noop():
    if not NOOP_WASM.exists():
        pytest.skip("build the do-nothing module: make test builds it")


@pytest.mark.wasm_only("a crashed wasm VM and its reload; the native build's panic guard: test_native.py")
def test_a_crashed_vm_fails_its_requests_and_is_reloaded(backends):
    """FAIL_RELOAD (as shipped): the requests the VM held when it crashed get 503 and never reach
    the backend; the next request after the back-off (0.2-0.3 s) gets a fresh VM and is filtered
    as usual. (FAIL_CLOSED answered 503 to every later request until Envoy was restarted.)"""
    requires_noop()
    gw = Gateway(backends, tweak=crashing_filter(), concurrency=1)
    try:
        assert gw.chat("llama-3-8b").status_code == 200
        held = [hold(gw, f"sk-held-{i}") for i in range(3)]
        time.sleep(0.3)  # let Envoy deliver the partial bodies (not an assertion)
        crashed = gw.chat("llama-3-8b", headers={"x-crash": "1"})
        assert crashed.status_code == 503
        for h in held:
            status, reply = finish(h)
            assert status == 503, reply
            assert b"sk-held" not in reply
        # Poll until the reloaded VM serves (no assertion on how long that takes).
        deadline = time.time() + 20
        while True:
            after = gw.chat("llama-3-8b", provider_data={"vllm_api_token": "sk-after-crash"})
            if after.status_code == 200 or time.time() > deadline:
                break
            assert after.status_code == 503 and "sk-after-crash" not in after.text, "never unfiltered"
            time.sleep(0.05)
        up = upstream(after)
        assert up["headers"]["authorization"] == ["Bearer sk-after-crash"], "the filter still runs after the reload"
        assert "x-llamastack-provider-data" not in up["headers"]
        assert gw.wait_for_stat("wasm.crash.vm_reload_success", 1)["wasm.crash.vm_reload_success"] == 1
        assert "sk-held" not in json.dumps([upstream(gw.chat("llama-3-8b"))])
    finally:
        gw.stop()


@pytest.mark.wasm_only("the wasm VM's reload back-off")
def test_during_the_reload_back_off_requests_are_refused_not_passed(backends):
    """Within the back-off after a (re)load, a crashed VM is not replaced yet: requests get 503,
    never the backend unfiltered. A 60 s back-off makes that window certain here."""
    requires_noop()
    gw = Gateway(backends, tweak=crashing_filter({"backoff": {"base_interval": "60s"}}), concurrency=1)
    try:
        assert gw.chat("llama-3-8b", headers={"x-crash": "1"}).status_code == 503
        for i in range(3):
            r = gw.chat("llama-3-8b", provider_data={"vllm_api_token": f"sk-backoff-{i}"},
                        headers={"x-llm-provider": "openai"})
            assert r.status_code == 503 and f"sk-backoff-{i}" not in r.text
        assert gw.stats()["wasm.crash.vm_reload_backoff"] >= 1
    finally:
        gw.stop()


def test_envoy_buffer_smaller_than_body_limit_gives_413_not_a_hang(backends):
    def small_buffer(cfg):
        cfg["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = 65536

    gw = Gateway(backends, tweak=small_buffer)
    try:
        body = json.dumps({"model": "llama-3-8b", "messages": [{"role": "user", "content": "x" * 300_000}]})
        started = time.time()
        r = gw.chat(body=body, timeout=20)
        assert r.status_code == 413
        assert time.time() - started < 10
        assert gw.chat("llama-3-8b").status_code == 200
    finally:
        gw.stop()


def test_client_disconnecting_mid_body(gateway):
    port = int(gateway.base.rsplit(":", 1)[1])
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: 100000\r\n\r\n" + b'{"model":"llama-3-8b","messages":[{"content":"' + b"x" * 5000)
    up = upstream(gateway.chat("llama-3-8b", provider_data={"vllm_api_token": "sk-next"}))
    assert up["headers"]["authorization"] == ["Bearer sk-next"]
    assert "panicked" not in gateway.log() and "Wasm VM failed" not in gateway.log()


def test_upstream_down(backends):
    def dead_upstream(cfg):
        for cluster in cfg["static_resources"]["clusters"]:
            if "load_assignment" not in cluster:
                continue  # the fallback chain's aggregate cluster
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"]["socket_address"]["port_value"] = free_port()

    gw = Gateway(backends, tweak=dead_upstream)
    try:
        r = gw.chat("llama-3-8b", provider_data={"vllm_api_token": "sk-down"})
        assert r.status_code == 503
        assert "sk-down" not in r.text
        assert gw.chat("unknown").status_code == 404, "the filter still answers before the upstream"
    finally:
        gw.stop()


def test_config_reload_under_traffic(backends):
    """Listener update (LDS from a file) while requests flow: every request completes, under either
    the old or the new plugin configuration, never a mix."""
    work = {}  # the LDS file's path
    port = free_port()

    def plugin(version):
        cfg = shipped_plugin_config()
        cfg["providers"][0]["set_headers"] = {"x-config-version": version, "x-gateway": f"gw-{version}"}
        return json.dumps(cfg)

    def to_lds(cfg):
        cfg["static_resources"].pop("listeners")
        cfg["node"] = {"id": "llm-header-forward-test", "cluster": "llm-header-forward-test"}
        cfg["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3", "path_config_source": {
            "path": str(work["lds"]), "watched_directory": {"path": str(work["lds"].parent)}}}}

    lds_dir = Path(tempfile.mkdtemp(prefix="llmhf-lds-"))
    work["lds"] = lds_dir / "lds.yaml"

    def write_lds(listener, version):
        listener = copy.deepcopy(listener)
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        set_plugin_value(plugin_filter(hcm), plugin(version))
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        tmp = lds_dir / f".lds-{version}.yaml"
        tmp.write_text(yaml.safe_dump({"resources": [listener]}))
        tmp.rename(work["lds"])

    # Envoy reads the LDS file at start: write v1 from the shipped listener before starting.
    first = shipped_config()["static_resources"]["listeners"][0]
    first["address"]["socket_address"]["port_value"] = port
    hcm = first["filter_chains"][0]["filters"][0]["typed_config"]
    set_module_path(plugin_filter(hcm))
    write_lds(first, "v1")
    gw = Gateway(backends, tweak=to_lds)
    results, errors = [], []
    stop = threading.Event()

    def traffic(n):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=20) as c:
            i = 0
            while not stop.is_set():
                i += 1
                token = f"sk-{n}-{i}"
                try:
                    r = c.post("/v1/chat/completions", json={"model": "llama-3-8b", "messages": []},
                               headers={"x-llamastack-provider-data": json.dumps({"vllm_api_token": token})})
                    results.append((token, r.status_code, r.json()))
                except httpx.HTTPError as e:
                    errors.append(repr(e))

    try:
        threads = [threading.Thread(target=traffic, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        write_lds(first, "v2")
        deadline = time.time() + 20
        while time.time() < deadline and not any(
                r[1] == 200 and ["v2"] == [v for n, v in r[2]["upstream"]["headers"] if n == "x-config-version"] for r in results[-50:]):
            time.sleep(0.2)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors[:5]
        versions = set()
        for token, status, reply in results:
            assert status == 200, reply
            h = {}
            for n, v in reply["upstream"]["headers"]:
                h.setdefault(n, []).append(v)
            assert h["authorization"] == [f"Bearer {token}"]
            assert h["x-llm-provider"] == ["vllm"]
            version = h["x-config-version"]
            assert len(version) == 1 and h["x-gateway"] == [f"gw-{version[0]}"], h
            versions.add(version[0])
        assert versions == {"v1", "v2"}, versions
    finally:
        stop.set()
        gw.stop()
