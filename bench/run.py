#!/usr/bin/env python3
"""`make bench`: the filter's cost against the same Envoy without it, side by side in one run.

One Envoy (`--concurrency 1`) with identical proxy listeners that differ only in the HTTP filter:
  none   - no wasm filter
  noop   - a wasm filter that does nothing (bench/noop): the floor of any wasm filter
  filter - llm-header-forward with the shipped plugin configuration
  noop-native - an Envoy dynamic module that does nothing (bench/noop-native): the native floor
  native - llm-header-forward's native build (SPEC §9), same plugin configuration
all routing to an upstream listener in the same Envoy that buffers the body and answers with a
direct response. wrk drives each listener in turn (alternating, several rounds) with a JSON chat
body of ~1 KB, ~64 KB and ~1 MB and a provider-data header that exercises forwarding.
Prints one table (median req/s, p50/p99, ratio to `none`), the wasm size and Envoy's RSS before and
after a long run through the filter. Loopback only. Timings are reported, never asserted.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
WASM = ROOT / "target/wasm32-unknown-unknown/release/llm_header_forward.wasm"
NOOP = ROOT / "target/wasm32-unknown-unknown/release/noop_filter.wasm"
NATIVE = ROOT / "target/release/libllm_header_forward.so"
NOOP_NATIVE = ROOT / "target/release/libnoop_native.so"
LISTENERS = ["none", "noop", "filter", "noop-native", "native"]
# Counter of requests seen, per filter listener, for the RSS soak.
SOAKED = {"filter": "wasmcustom.llm_header_forward.requests", "native": "dynamicmodulescustom.llm_header_forward.requests"}
# Diagnostic listeners (`--variants`): the do-nothing module plus one host interaction each.
VARIANTS = ["noop-pause", "noop-read", "noop-headers", "noop-get", "noop-set", "noop-add", "noop-clear", "noop-pairs"]
SIZES = {"1KB": 1024, "64KB": 64 * 1024, "1MB": 1024 * 1024}
PROVIDER_DATA = json.dumps({
    "vllm_api_token": "sk-bench-0123456789abcdef",
    "tenant_id": "tenant-42",
    "vllm_extra_headers": {"X-MaaS-Subscription": "free-tier", "x-maas-region": "eu"},
})

WRK_SCRIPT = r"""
wrk.method = "POST"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["content-type"] = "application/json"
wrk.headers["x-llamastack-provider-data"] = os.getenv("BENCH_PROVIDER_DATA")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"status_errors":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_plugin_config():
    cfg = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    return wasm["typed_config"]["config"]


def wasm_filter(name, path, configuration=None, allow_stop=False):
    config = {
        "name": name,
        "root_id": name,
        "failure_policy": "FAIL_CLOSED",
        "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(path)}}},
    }
    if allow_stop:
        config["allow_on_headers_stop_iteration"] = True
    if configuration is not None:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration}
    return {"name": "envoy.filters.http.wasm",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config}}


def native_filter(path, name, configuration=None):
    config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"module": {"local": {"filename": str(path)}}},
        "filter_name": name,
    }
    if configuration is not None:
        config["filter_config"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration}
    return {"name": "envoy.filters.http.dynamic_modules", "typed_config": config}


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def hcm_listener(name, port, http_filters, routes):
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": 16 * 1024 * 1024,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": http_filters + [ROUTER],
            },
        }]}],
    }


def envoy_config(ports, admin_port, listeners):
    plugin = shipped_plugin_config()
    proxy_routes = [
        {"match": {"prefix": "/", "headers": [{"name": "x-llm-provider", "string_match": {"exact": "vllm"}}]},
         "route": {"cluster": "upstream"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
    ]
    filters = {
        "none": [],
        "noop": [wasm_filter("noop", NOOP)],
        "filter": [wasm_filter("llm-header-forward", WASM, plugin["configuration"]["value"], allow_stop=True)],
        "noop-native": [native_filter(NOOP_NATIVE, "noop")],
        "native": [native_filter(NATIVE, "llm_header_forward", plugin["configuration"]["value"])],
    }
    for v in VARIANTS:
        filters[v] = [wasm_filter(v, NOOP, v.split("-")[1], allow_stop=True)]
    listeners = [hcm_listener(n, ports[n], filters[n], proxy_routes) for n in listeners]
    # The upstream reads the whole body (buffer filter) before its direct response, so connections
    # are reused for every body size.
    buffer = {"name": "envoy.filters.http.buffer",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                               "max_request_bytes": 16 * 1024 * 1024}}
    listeners.append(hcm_listener("upstream", ports["upstream"], [buffer], [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}'}}}]))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [{
                "name": "upstream", "connect_timeout": "2s", "type": "STATIC",
                "per_connection_buffer_limit_bytes": 16 * 1024 * 1024,
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["upstream"]}}}}]}]},
            }],
        },
    }


# Chat content like real prompts: English prose in paragraphs (JSON `\n` escapes), an occasional
# quotation (`\"`) and a few non-ASCII characters (’, —, é).
PROSE = (
    "The quarterly report shows that revenue grew in every region, although costs rose faster than "
    "expected in the second half. Please summarise the main drivers and list the risks that the board "
    "should discuss at the next meeting.\n\nAs the CFO put it, \"we’re investing ahead of demand\" — a "
    "choice that depends on the café chain contract being renewed.\n\n"
)


def body_of_size(size):
    """A chat request of about `size` bytes, the model last so the whole body is scanned."""
    skeleton = {"messages": [{"role": "system", "content": "You are a concise analyst."}, {"role": "user", "content": ""}],
                "temperature": 0.2, "stream": False, "model": "llama-3-8b"}
    content = (PROSE * (size // len(PROSE) + 1))[:size]
    skeleton["messages"][1]["content"] = content
    data = json.dumps(skeleton, ensure_ascii=False).encode()
    while len(data) > size and content:
        content = content[: len(content) - max(1, (len(data) - size) // 2)]
        skeleton["messages"][1]["content"] = content
        data = json.dumps(skeleton, ensure_ascii=False).encode()
    return data


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_ready(proc, admin, timeout, poll, failure):
    """Waits until Envoy's admin `/ready` answers 200; exits with `failure()` if it dies or times out."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(failure())
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/ready", trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)


class Bench:
    def __init__(self, envoy, work, connections, duration, listeners):
        self.envoy, self.work, self.connections, self.duration = envoy, work, connections, duration
        self.listeners = listeners
        self.ports = {n: free_port() for n in listeners + ["upstream"]}
        self.admin = free_port()
        cfg = work / "bench-envoy.yaml"
        cfg.write_text(yaml.safe_dump(envoy_config(self.ports, self.admin, listeners)))
        self.log = work / "envoy.log"
        self.proc = subprocess.Popen([envoy, "-c", str(cfg), "--concurrency", "1", "--use-dynamic-base-id",
                                      "--log-level", "warning", "--log-path", str(self.log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.proc, self.admin, 60, 0.2, lambda: f"envoy failed to start:\n{self.log.read_text()}")
        self.script = work / "bench.lua"
        self.script.write_text(WRK_SCRIPT)

    def check_routing(self):
        """The filter listener must actually forward (200) through the filter's route."""
        body = body_of_size(1024)
        for name in self.listeners:
            r = httpx.post(f"http://127.0.0.1:{self.ports[name]}/v1/chat/completions", content=body, trust_env=False,
                           headers={"content-type": "application/json", "x-llamastack-provider-data": PROVIDER_DATA})
            if r.status_code != 200:
                raise SystemExit(f"{name}: {r.status_code} {r.text}")

    def wrk(self, listener, body_path, duration):
        env = dict(os.environ, BENCH_BODY=str(body_path), BENCH_PROVIDER_DATA=PROVIDER_DATA)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{self.connections}", f"-d{duration}s", "--latency", "-s", str(self.script),
             f"http://127.0.0.1:{self.ports[listener]}/v1/chat/completions"],
            env=env, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        if result["status_errors"] or result["socket_errors"]:
            raise SystemExit(f"{listener}: errors during the run: {result}")
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        return result

    def filter_requests(self, listener):
        stat = SOAKED[listener].replace(".", "\\.")
        stats = httpx.get(f"http://127.0.0.1:{self.admin}/stats?filter=^{stat}$", trust_env=False).text
        return int(stats.split(":")[1]) if ":" in stats else 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def median(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per listener and size")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--soak", type=int, default=200_000, help="requests through the filter for the RSS check")
    ap.add_argument("--sizes", default="1KB,64KB,1MB")
    ap.add_argument("--out", help="also write the report (markdown) here")
    ap.add_argument("--variants", action="store_true", help="also run the diagnostic do-nothing variants")
    ap.add_argument("--listeners", default=",".join(LISTENERS), help="which of the listeners to run ('none' always)")
    args = ap.parse_args()

    envoy = os.environ.get("ENVOY") or shutil.which("envoy") or str(ROOT / ".venv/bin/envoy")
    for tool, path in [("wrk", shutil.which("wrk")), ("envoy", envoy), ("filter", WASM), ("noop filter", NOOP),
                       ("native filter", NATIVE), ("native noop module", NOOP_NATIVE)]:
        if not path or not Path(path).exists():
            raise SystemExit(f"missing {tool}: run `make bench` (it builds and installs what is needed)")

    work = Path(tempfile.mkdtemp(prefix="llmhf-bench-"))
    chosen = ["none"] + [n for n in args.listeners.split(",") if n and n != "none"]
    listeners = chosen + (VARIANTS if args.variants else [])
    bench = Bench(envoy, work, args.connections, args.duration, listeners)
    rows, notes = [], []
    try:
        bench.check_routing()
        sizes = [s for s in args.sizes.split(",") if s]
        for size in sizes:
            body = work / f"body-{size}.json"
            body.write_bytes(body_of_size(SIZES[size]))
            for listener in listeners:  # warm-up: V8 tiering, connection pools
                bench.wrk(listener, body, 2)
            runs = {n: [] for n in listeners}
            for r in range(args.rounds):
                k = r % len(listeners)
                order = listeners[k:] + listeners[:k]
                for listener in order:
                    runs[listener].append(bench.wrk(listener, body, args.duration))
                    print(f"  {size} round {r + 1} {listener}: {runs[listener][-1]['rps']:.0f} req/s", file=sys.stderr)
            base = median([x["rps"] for x in runs["none"]])
            for listener in listeners:
                rps = median([x["rps"] for x in runs[listener]])
                rows.append((size, listener, rps, median([x["p50_us"] for x in runs[listener]]),
                             median([x["p99_us"] for x in runs[listener]]), rps / base))

        body = work / "body-1KB.json"
        body.write_bytes(body_of_size(1024))
        soaks = []  # (listener, requests, RSS before, RSS after)
        for listener in [n for n in SOAKED if n in listeners and args.soak > 0]:
            rss_before = rss_kb(bench.proc.pid)
            start = bench.filter_requests(listener)
            while bench.filter_requests(listener) - start < args.soak:
                bench.wrk(listener, body, 5)
            soaks.append((listener, bench.filter_requests(listener) - start, rss_before, rss_kb(bench.proc.pid)))
    finally:
        bench.stop()

    envoy_version = subprocess.run([envoy, "--version"], capture_output=True, text=True).stdout.strip().split()[-1]
    lines = [
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Linux {platform.release()}; "
        f"Envoy {envoy_version}, `--concurrency 1`; wrk -t1 -c{args.connections}, {args.duration} s per run, "
        f"median of {args.rounds} alternating rounds.",
        "",
        "| body | listener | req/s | p50 (ms) | p99 (ms) | ratio to none |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for size, listener, rps, p50, p99, ratio in rows:
        lines.append(f"| {size} | {listener} | {rps:,.0f} | {p50 / 1000:.3f} | {p99 / 1000:.3f} | {ratio:.3f} |")
    lines.append("")
    by = {(s, l): (rps, p50, p99, ratio) for s, l, rps, p50, p99, ratio in rows}
    for size in dict.fromkeys(s for s, *_ in rows):
        n = by[(size, "none")]
        for filt, floor in [("filter", "noop"), ("native", "noop-native")]:
            if (size, filt) in by and (size, floor) in by:
                f, noop = by[(size, filt)], by[(size, floor)]
                lines.append(f"- {size}: {filt}/none = **{f[3]:.3f}** ({floor}/none = {noop[3]:.3f}); "
                             f"p99 added by {filt} = {(f[2] - n[2]):.0f} µs")
    lines.append(f"- wasm: {WASM.stat().st_size:,} bytes (noop: {NOOP.stat().st_size:,}); "
                 f"native .so: {NATIVE.stat().st_size:,} bytes (noop-native: {NOOP_NATIVE.stat().st_size:,})")
    for listener, soaked, rss_before, rss_after in soaks:
        lines.append(f"- Envoy RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after {soaked:,} "
                     f"requests through `{listener}` (growth {(rss_after - rss_before) / 1024:+.1f} MiB)")
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
