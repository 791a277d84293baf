"""What an operator sees: refused configs, counters, logs without secrets."""

import json
import time

import httpx
import pytest

from harness import BUILDS, Gateway, run_envoy_expecting_failure, shipped_plugin_config, upstream


def test_envoy_refuses_a_bad_plugin_config_and_names_every_problem(backends):
    bad = {
        "routing": {"unknown_model": "nobody"},
        "bogus_field": 1,
        "providers": [
            {"name": "vllm", "models": [""], "forward_headers": {"__reserved": "x-a", "t": "Host"}},
            {"name": "vllm", "models": ["gpt-*"], "set_headers": {"x-ok": "a\r\nb"}},
        ],
    }
    failure = run_envoy_expecting_failure(backends, bad)
    lines = [l for l in failure.splitlines() if "invalid plugin configuration" in l]
    assert lines, failure
    line = lines[0]
    for problem in ["bogus_field: unknown field", "unknown_model", "empty model pattern", "reserved",
                    "\"host\" is on the core blocklist", "duplicate provider name", "value has CR"]:
        assert problem in line, f"{problem!r} missing from: {line}"


def test_envoy_refuses_non_json_plugin_config(backends):
    failure = run_envoy_expecting_failure(backends, "{not json")
    assert "invalid JSON" in failure


def test_shipped_plugin_config_is_valid_and_matches_routes():
    cfg = shipped_plugin_config()
    assert [p["name"] for p in cfg["providers"]] == ["vllm", "openai", "anthropic"]


def test_counters_in_stats_and_prometheus(backends):
    gw = Gateway(backends)
    try:
        upstream(gw.chat("llama-3-8b", provider_data={"vllm_api_token": "k", "vllm_extra_headers": {"x-no": "1"}}))
        upstream(gw.chat("gpt-4o"))
        assert gw.chat("unknown-model").status_code == 404
        assert gw.chat("llama-3-8b", provider_data="nope").status_code == 400
        p = gw.stat("")
        stats = gw.wait_for_stat(p + "requests", 4)
        assert stats[p + "requests"] == 4
        assert stats[p + "provider.vllm.requests"] == 1
        assert stats[p + "provider.openai.requests"] == 1
        assert stats[p + "provider.anthropic.requests"] == 0
        assert stats[p + "headers_forwarded"] == 1
        assert stats[p + "headers_dropped.not_allowed"] == 1
        assert stats[p + "rejected.model_not_found"] == 1
        assert stats[p + "rejected.invalid_provider_data"] == 1
        prom = httpx.get(gw.admin + "/stats/prometheus", trust_env=False).text
        assert 'provider="vllm"' in prom
        assert 'code="model_not_found"' in prom
        assert 'reason="not_allowed"' in prom
    finally:
        gw.stop()


@pytest.mark.native_only("it starts both builds itself, so it runs once")
def test_both_builds_expose_the_same_metric_names(backends):
    """Both glues define their counters from one list (`src/counters.rs`); before that, the native
    build lacked the fallback chains' counters."""
    names = {}
    for build in BUILDS:
        gw = Gateway(backends, build=build)
        try:
            mine = gw.stat_prefix + "llm_header_forward."
            names[build] = {n.removeprefix(gw.stat_prefix) for n in gw.stats() if n.startswith(mine)}
        finally:
            gw.stop()
    wasm_vm_only = {"llm_header_forward.vm_memory_bytes"}  # the wasm VMs' linear memory
    assert wasm_vm_only <= names["wasm"]
    assert names["wasm"] - wasm_vm_only == names["native"]
    for name in ["requests", "provider.vllm.requests", "rejected.model_not_found", "chain.llama-ha.exhausted",
                 "chain.llama-ha.attempts.openai"]:
        assert "llm_header_forward." + name in names["native"], name


def test_logs_name_headers_but_never_values(gateway):
    secret = "sk-very-secret-4711"
    upstream(gateway.chat("llama-3-8b", provider_data={"vllm_api_token": secret, "vllm_extra_headers": {"x-maas-tier": secret + "-tier"}},
                          headers={"cookie": secret, "authorization": "Bearer " + secret}))
    gateway.chat("llama-3-8b", provider_data={"vllm_extra_headers": {"x-forwarded-for": secret}})
    gateway.chat("llama-3-8b", provider_data={"vllm_api_token": secret + "\r\n", "tenant_id": "last-request"})
    log = gateway.wait_for_log("invalid_header_value")
    assert "x-maas-tier" in log, "debug logs name the headers"
    assert "x-forwarded-for" in log
    assert secret not in log


def test_log_level_follows_envoys_level_at_runtime(backends):
    gw = Gateway(backends)
    try:
        httpx.post(gw.admin + f"/logging?{gw.log_component}=info", trust_env=False)
        time.sleep(1.5)  # the wasm filter re-reads the level once a second
        upstream(gw.chat("llama-3-8b", headers={"x-marker": "quiet"}))
        httpx.post(gw.admin + f"/logging?{gw.log_component}=debug", trust_env=False)
        time.sleep(1.5)
        upstream(gw.chat("gpt-4o"))
        log = gw.wait_for_log("provider=openai")
        assert "provider=vllm" not in log, "a debug line was written while wasm was at info"
    finally:
        gw.stop()


def test_rules_the_filter_would_never_apply_are_config_errors(backends):
    """`x-forwarded-*`, `x-request-id`, host and framing belong to Envoy: a rule naming them used to
    be accepted and silently ignored. Now Envoy refuses the config, naming every such rule."""
    bad = {"providers": [
        {"name": "vllm", "models": ["llama-*"], "remove_headers": ["X-Forwarded-For"],
         "client_headers": {"mode": "allowlist", "drop": ["x-request-id"], "forward": ["x-forwarded-*", "host", "x-real-ip"]}},
    ]}
    failure = run_envoy_expecting_failure(backends, bad)
    line = next(l for l in failure.splitlines() if "invalid plugin configuration" in l)
    assert "5 configuration problems" in line, line
    for problem in ['remove_headers: \\"x-forwarded-for\\" names a header Envoy owns',
                    'client_headers.drop: \\"x-request-id\\" names a header Envoy owns',
                    'client_headers.forward: \\"x-forwarded-*\\" names a header Envoy owns',
                    'client_headers.forward: \\"host\\" names a header Envoy owns',
                    'client_headers.forward: \\"x-real-ip\\" is always removed']:
        assert problem.replace('\\"', '"') in line or problem in line, f"{problem!r} missing from: {line}"


def test_forward_rename_and_forward_headers_rules_that_never_apply_are_config_errors(backends):
    """Review of issue 10: these were accepted and did nothing. A `forward_headers` target that
    `remove_headers` matches was never forwarded (the provider-data token silently vanished); a
    rename onto a `set_headers` name removed the client's header and set nothing; an exact
    `client_headers.forward` name that `drop` or `remove_headers` also matches was never forwarded."""
    bad = {"providers": [
        {"name": "vllm", "models": ["llama-*"],
         "forward_headers": {"tenant_id": "x-tenant-id"}, "remove_headers": ["x-tenant-*"],
         "set_headers": {"x-gateway": "gw"},
         "client_headers": {"forward": ["x-*", "x-stainless-lang", "x-tenant-name"],
                            "rename": {"x-customer-id": "x-gateway"}}},
    ]}
    failure = run_envoy_expecting_failure(backends, bad)
    line = next(l for l in failure.splitlines() if "invalid plugin configuration" in l).replace('\\"', '"')
    assert "4 configuration problems" in line, line
    for problem in ['"x-tenant-id" is in forward_headers and matches remove_headers "x-tenant-*"',
                    'rename."x-customer-id": target "x-gateway" is also in set_headers, so the rename never applies',
                    'forward: "x-stainless-lang" matches client_headers.drop "x-stainless-*", so it is never forwarded',
                    'forward: "x-tenant-name" matches remove_headers "x-tenant-*", so it is never forwarded']:
        assert problem in line, f"{problem!r} missing from: {line}"


def test_a_forward_list_in_mode_all_is_a_config_error(backends):
    """`{"mode": "all", "forward": ["x-tenant-*"]}` read like a restriction but kept every client
    header: the operator's list was silently ignored."""
    bad = {"providers": [{"name": "vllm", "models": ["llama-*"],
                          "client_headers": {"mode": "all", "forward": ["x-tenant-*"]}}]}
    failure = run_envoy_expecting_failure(backends, bad)
    line = next(l for l in failure.splitlines() if "invalid plugin configuration" in l).replace('\\"', '"')
    assert 'client_headers.forward: only used in mode "allowlist"' in line, line
