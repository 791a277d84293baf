"""The native build (SPEC §9) on its own: how Envoy loads it, what it does with a missing
configuration, the panic guard, and a body far larger than Envoy's slices. Everything else runs
against both builds through the shared fixtures."""

import json

import pytest
import yaml

from harness import (NATIVE, NATIVE_PANIC, ROOT, SHIPPED, SHIPPED_NATIVE, EnvoyFailed, Gateway, error_code, hcm_of,
                     plugin_filter, plugin_value, shipped_plugin_config, upstream, upstream_filters)

native_only = pytest.mark.native_only


def _load_native_yaml_generator():
    import importlib.util
    spec = importlib.util.spec_from_file_location("native_yaml", ROOT / "envoy/native_yaml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_envoy_native_yaml_is_envoy_yaml_with_the_native_filter():
    """Same listener, routes, clusters and plugin configuration as envoy.yaml; only the filter differs."""
    generated = _load_native_yaml_generator().generate(SHIPPED.read_text())
    assert SHIPPED_NATIVE.read_text() == generated, "envoy/envoy-native.yaml is stale: run `make native-yaml`"
    wasm, native = yaml.safe_load(SHIPPED.read_text()), yaml.safe_load(SHIPPED_NATIVE.read_text())
    # The clusters are the same but for the upstream role's filter, which carries the same plugin
    # configuration (with "role": "upstream") in the native build.
    upstream_w, upstream_n = upstream_filters(wasm), upstream_filters(native)
    assert [f["name"] for f in upstream_n] == ["envoy.filters.http.dynamic_modules"] * len(upstream_w) != []
    assert [plugin_value(f) for f in upstream_n] == [plugin_value(f) for f in upstream_w]
    for f in upstream_w + upstream_n:
        f.clear()
    assert native["static_resources"]["clusters"] == wasm["static_resources"]["clusters"]
    assert hcm_of(native)["route_config"] == hcm_of(wasm)["route_config"]
    w, n = plugin_filter(hcm_of(wasm)), plugin_filter(hcm_of(native))
    assert n["name"] == "envoy.filters.http.dynamic_modules"
    assert n["typed_config"]["filter_name"] == "llm_header_forward"
    assert n["typed_config"]["filter_config"]["value"] == w["typed_config"]["config"]["configuration"]["value"]
    assert [f["name"] for f in hcm_of(native)["http_filters"]][1:] == [f["name"] for f in hcm_of(wasm)["http_filters"]][1:]


@native_only("loading the dynamic module by path")
def test_loads_by_path_with_the_matching_abi(gateway):
    log = gateway.wait_for_log("llm-header-forward: configured")
    assert "ABI version v0.2.0 matched" in log
    up = upstream(gateway.chat("llama-3-8b", provider_data={"vllm_api_token": "sk-path"}))
    assert up["name"] == "vllm" and up["headers"]["authorization"] == ["Bearer sk-path"]


@native_only("loading the dynamic module by name")
def test_loads_by_name_from_the_search_path(backends):
    def by_name(cfg):
        plugin_filter(hcm_of(cfg))["typed_config"]["dynamic_module_config"] = {"name": "llm_header_forward"}

    gw = Gateway(backends, tweak=by_name, env={"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE.parent)})
    try:
        up = upstream(gw.chat("gpt-4o", provider_data={"openai_api_key": "sk-name"}))
        assert up["name"] == "openai" and up["headers"]["authorization"] == ["Bearer sk-name"]
    finally:
        gw.stop()


@native_only("the dynamic module's filter_config")
def test_a_missing_filter_config_refuses_the_filter(backends):
    def no_config(cfg):
        del plugin_filter(hcm_of(cfg))["typed_config"]["filter_config"]

    with pytest.raises(EnvoyFailed) as failed:
        Gateway(backends, tweak=no_config).stop()
    assert "invalid plugin configuration" in str(failed.value)


@native_only("the dynamic module's panic guard (a test-only build that panics on request)")
@pytest.mark.parametrize("hook", ["headers", "body"])
def test_a_panic_answers_500_and_envoy_keeps_serving(backends, hook):
    if not NATIVE_PANIC.exists():
        pytest.fail(f"{NATIVE_PANIC} is missing: `make test` builds it")

    def panicking_build(cfg):
        plugin_filter(hcm_of(cfg))["typed_config"]["dynamic_module_config"] = {
            "module": {"local": {"filename": str(NATIVE_PANIC)}}}

    gw = Gateway(backends, tweak=panicking_build, concurrency=1)
    try:
        r = gw.chat("llama-3-8b", provider_data={"vllm_api_token": "sk-panic"},
                    headers={"x-llm-header-forward-test-panic": hook})
        assert r.status_code == 500, r.text
        assert error_code(r) == "internal_error"
        assert "sk-panic" not in r.text
        # The same worker, the same module: the next request is served normally.
        for model, provider in [("llama-3-8b", "vllm"), ("gpt-4o", "openai")]:
            up = upstream(gw.chat(model, provider_data={"vllm_api_token": "sk-after"}))
            assert up["name"] == provider
        assert gw.proc.poll() is None, "envoy died"
        log = gw.wait_for_log("answering 500 internal_error")
        assert "panic at src/native/filter.rs" in log
        assert "sk-panic" not in log
    finally:
        gw.stop()


@native_only("the dynamic module's panic guard in the upstream role (a test-only build that panics on request)")
def test_a_panic_in_the_upstream_role_answers_500_and_envoy_keeps_serving(backends):
    if not NATIVE_PANIC.exists():
        pytest.fail(f"{NATIVE_PANIC} is missing: `make test` builds it")

    def panicking_upstream_role(cfg):
        for entry in upstream_filters(cfg):
            entry["typed_config"]["dynamic_module_config"] = {"module": {"local": {"filename": str(NATIVE_PANIC)}}}

    for s in backends.servers.values():
        s.received.clear()
    gw = Gateway(backends, tweak=panicking_upstream_role, concurrency=1)
    try:
        r = gw.chat("llama-3-70b", provider_data={"vllm_api_token": "sk-panic"},
                    headers={"x-llm-header-forward-test-panic": "upstream"})
        # A local reply from the upstream role: not retried, nothing sent to any provider.
        assert r.status_code == 500, r.text
        assert error_code(r) == "internal_error"
        assert "sk-panic" not in r.text
        assert all(not s.received for s in backends.servers.values())
        # The same worker, the same module: the next chain request is served normally.
        up = upstream(gw.chat("llama-3-70b", provider_data={"vllm_api_token": "sk-after"}))
        assert up["name"] == "vllm" and up["headers"]["authorization"] == ["Bearer sk-after"]
        assert gw.proc.poll() is None, "envoy died"
        log = gw.wait_for_log("upstream role panicked: answering 500 internal_error")
        assert "sk-panic" not in log
    finally:
        gw.stop()


@native_only("a 12 MiB body in Envoy's slices, scanned in place")
def test_a_12_mib_chunked_body_is_scanned_across_every_slice(backends):
    """The model comes last, after 12 MiB of escaped text sent in odd-sized chunks: the scanner has
    to carry its state over hundreds of slice boundaries, and the body reaches the backend whole."""
    plugin = shipped_plugin_config()
    plugin["body"]["max_bytes"] = 16 * 1024 * 1024

    def big_buffers(cfg):
        cfg["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = 17 * 1024 * 1024

    text = ('Line with \\"quotes\\", a tab\\t, unicode \\u00e9 and \\\\ backslashes. ' * 200_000)[: 12 * 1024 * 1024]
    body = ('{"messages":[{"role":"user","content":"' + text + '"}],"stream":false,"model":"gpt-4o"}').encode()
    assert len(body) > 12 * 1024 * 1024

    def chunks():
        for i in range(0, len(body), 7919):
            yield body[i:i + 7919]

    gw = Gateway(backends, plugin, tweak=big_buffers)
    try:
        r = gw.client.post("/v1/chat/completions", content=chunks(), timeout=120, headers={
            "content-type": "application/json", "x-llamastack-provider-data": json.dumps({"openai_api_key": "sk-big"})})
        up = upstream(r)
        assert up["name"] == "openai"
        assert up["headers"]["x-llm-model"] == ["gpt-4o"]
        assert up["headers"]["authorization"] == ["Bearer sk-big"]
        assert up["body_bytes"] == len(body)
        # The same body with the model spelled twice (the second after 12 MiB) is refused.
        twice = body[:-1] + b',"model":"llama-3-8b"}'
        r = gw.client.post("/v1/chat/completions", content=iter([twice[i:i + 65521] for i in range(0, len(twice), 65521)]),
                           timeout=120, headers={"content-type": "application/json"})
        assert r.status_code == 400 and error_code(r) == "duplicate_model"
    finally:
        gw.stop()
