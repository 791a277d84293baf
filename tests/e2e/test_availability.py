"""Availability under attack (issue 9, finding 1): one unauthenticated client opening thousands of
HTTP/2 streams, each with HPACK-indexed big headers (a 4 KiB header referenced many times costs a
few bytes on the wire) and an unfinished JSON body, must not take the gateway down. The filter
holds each such request while it waits for the model; a held request must cost the VM a small
fixed amount of memory, and other clients must be served during the attack and after it.

`make test` runs it at 40 connections; `make attack` at full size (ATTACK_CONNECTIONS=400).
ATTACK_REPORT=path appends the measured figures there as JSON."""

import json
import os
import re
import time

import httpx
import pytest

from h2c import Client, request_headers
from harness import Gateway, shipped_config, upstream

CONNECTIONS = int(os.environ.get("ATTACK_CONNECTIONS", "40"))
MEMORY_GAUGE = "wasmcustom.llm_header_forward.vm_memory_bytes"
# A held request may cost the VMs this much on average (the copy of its headers was ~28-60 KiB).
PER_STREAM_BUDGET = 1024
PAD = "a" * 4000  # one HPACK dynamic-table entry (4096 bytes by default) holds it


def hcm(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def header_budget():
    """Bytes of request headers the shipped Envoy accepts (max_request_headers_kb, default 60)."""
    return hcm(shipped_config()).get("max_request_headers_kb", 60) * 1024


def rss(pid):
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def heap(gw):
    return int(httpx.get(gw.admin + "/memory", trust_env=False).json()["allocated"])


def wait_for(gw, pred, timeout=120):
    deadline = time.time() + timeout
    while True:
        stats = gw.stats()
        if pred(stats) or time.time() > deadline:
            return stats
        time.sleep(0.2)


def vm_memory(gw):
    """The sum of the filter's VMs' linear memory, once the gauge has been reported (each VM
    reports its growth every second)."""
    time.sleep(2.5)  # two reporting periods, so every VM's latest growth is in (not an assertion)
    return gw.stats()[MEMORY_GAUGE]


def normal_request(gw, token):
    with httpx.Client(base_url=gw.base, trust_env=False, timeout=60) as c:
        r = c.post("/v1/chat/completions", json={"model": "llama-3-8b", "messages": []},
                   headers={"x-llamastack-provider-data": json.dumps({"vllm_api_token": token})})
    up = upstream(r)
    assert up["headers"]["authorization"] == [f"Bearer {token}"]
    return r.status_code


@pytest.mark.wasm_only("the wasm VM's linear memory (vm_memory_bytes); the native build has no VM")
def test_held_requests_cost_the_vm_a_small_fixed_amount(backends):
    gw = Gateway(backends, concurrency=2)
    clients = []
    try:
        port = int(gw.base.rsplit(":", 1)[1])
        refs = (header_budget() - 1024) // (len(PAD) + 6)
        before = {"vm": vm_memory(gw), "rss": rss(gw.proc.pid), "heap": heap(gw)}

        # The attack: every connection opens as many streams as Envoy allows, each with `refs`
        # references to the same indexed 4 KiB header and a body that never ends.
        streams = 0
        for _ in range(CONNECTIONS):
            c = Client(port)
            clients.append(c)
            per_connection = min(c.max_streams, 1000)
            for _ in range(per_connection):
                sid = c.open(request_headers(port, extra=[("content-type", "application/json"),
                                                          *[("x-pad", PAD)] * refs]))
                c.data(sid, b'{"model":"llama-3-8b"')
                streams += 1
        active = wait_for(gw, lambda s: s.get("http.llm_gateway.downstream_rq_active", 0) >= streams)
        held = active.get("http.llm_gateway.downstream_rq_active", 0)
        workers = [v for k, v in active.items() if re.search(r"^listener\..*\.worker_\d+\.downstream_cx_active$", k)]
        assert len([w for w in workers if w > 0]) >= 2, f"connections on both workers: {workers}"

        # Another client is served during the attack.
        during_status = normal_request(gw, "sk-during-attack")
        during = {"vm": vm_memory(gw), "rss": rss(gw.proc.pid), "heap": heap(gw)}

        for c in clients:
            c.close()
        clients.clear()
        wait_for(gw, lambda s: s.get("http.llm_gateway.downstream_rq_active", 1) == 0)
        after_status = normal_request(gw, "sk-after-attack")
        after = {"vm": vm_memory(gw), "rss": rss(gw.proc.pid), "heap": heap(gw)}

        report = {"connections": CONNECTIONS, "streams_opened": streams, "streams_held": held,
                  "headers_per_stream_bytes": refs * (len(PAD) + 5), "before": before, "during": during,
                  "after": after, "during_status": during_status, "after_status": after_status}
        print("\nattack report:", json.dumps(report))
        if os.environ.get("ATTACK_REPORT"):
            with open(os.environ["ATTACK_REPORT"], "a") as f:
                f.write(json.dumps(report) + "\n")

        assert held >= streams, f"Envoy held {held} of {streams} streams"
        log = gw.log()
        for crash in ("Wasm VM failed", "panicked", "unreachable", "Failed to reload"):
            assert crash not in log, crash
        assert gw.stats().get("wasm.llm-header-forward.vm_reload_success", 0) == 0, "the VM never crashed"
        grown = during["vm"] - before["vm"]
        assert grown <= streams * PER_STREAM_BUDGET, (
            f"the VMs grew by {grown} bytes for {streams} held requests ({grown // max(streams, 1)} per request)")
    finally:
        for c in clients:
            c.close()
        gw.stop()
