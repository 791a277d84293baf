"""Deployment files: every YAML parses, every embedded plugin configuration passes the same
validator as `llm-header-forward check`, and the settings the filter depends on are present."""

import json
import os
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from harness import ROOT

CLI = ROOT / "target/release/llm-header-forward"


def check(config):
    """Runs `llm-header-forward check` on a plugin configuration (dict or JSON text)."""
    text = config if isinstance(config, str) else json.dumps(config)
    r = subprocess.run([str(CLI), "check", "--config", "-", "--json"], input=text.encode(), capture_output=True)
    return r.returncode, json.loads(r.stdout)


def walk(node, visit):
    """Calls `visit` on every mapping in a parsed YAML/JSON document."""
    if isinstance(node, dict):
        visit(node)
        for v in node.values():
            walk(v, visit)
    elif isinstance(node, list):
        for v in node:
            walk(v, visit)


def wasm_configs(doc):
    """Every wasm filter config (the `config` of envoy.extensions.filters.http.wasm.v3.Wasm) in a document."""
    found = []
    walk(doc, lambda n: found.append(n["config"]) if n.get("@type", "").endswith("filters.http.wasm.v3.Wasm") else None)
    return found


def listener_buffer_limits(doc):
    found = []
    walk(doc, lambda n: found.append(n["per_connection_buffer_limit_bytes"]) if "per_connection_buffer_limit_bytes" in n else None)
    return found


YAML_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "envoy").rglob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def cli_built():
    if not CLI.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "llm-header-forward"], cwd=ROOT, check=True)


@pytest.mark.parametrize("path", YAML_FILES)
def test_yaml_parses_and_embedded_plugin_configs_are_valid(path):
    docs = [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]
    assert docs
    configs = []
    for doc in docs:
        for wasm in wasm_configs(doc):
            assert wasm.get("allow_on_headers_stop_iteration") is True, f"{path}: body-based routing needs it"
            # A crashed VM is replaced, never skipped (FAIL_OPEN would pass requests unfiltered).
            assert wasm.get("failure_policy") == "FAIL_RELOAD", path
            configs.append(wasm["configuration"]["value"])
        if doc.get("kind") == "WasmPlugin":
            configs.append(json.dumps(doc["spec"]["pluginConfig"]))
            assert doc["spec"]["failStrategy"] == "FAIL_CLOSE"
    for config in configs:
        code, result = check(config)
        assert code == 0 and result["valid"], f"{path}: {result['problems']}"
        limits = [l for d in docs for l in listener_buffer_limits(d)]
        if limits:
            # Twice body.max_bytes: one socket read can carry the buffer past body.max_bytes before
            # the filter sees it (README); the headroom keeps Envoy's own 413 out of reach.
            assert min(limits) >= 2 * json.loads(config).get("body", {}).get("max_bytes", 8388608), path


def test_every_deployment_file_carries_the_same_plugin_config():
    reference = json.loads((ROOT / "envoy/plugin-config.json").read_text())
    envoy, *upstream = wasm_configs(yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text()))
    assert json.loads(envoy["configuration"]["value"]) == reference
    # The fallback chain's upstream role: the same configuration plus "role": "upstream".
    assert [json.loads(u["configuration"]["value"]) for u in upstream] == [{**reference, "role": "upstream"}]
    # The Istio recipes ship no fallback chain (it needs a cluster patch with the upstream role,
    # see the README): without one, a chain's model would have nowhere to go.
    single = {k: v for k, v in reference.items() if k != "fallbacks"}
    istio = [d for d in yaml.safe_load_all((ROOT / "envoy/istio/envoyfilter.yaml").read_text()) if d]
    assert json.loads(wasm_configs(istio[0])[0]["configuration"]["value"]) == single
    plugin = next(d for d in yaml.safe_load_all((ROOT / "envoy/istio/wasmplugin.yaml").read_text()) if d)
    assert plugin["spec"]["pluginConfig"] == single


def test_istio_routes_answer_like_the_shipped_envoy_routes():
    """The no_route 404 (JSON, labelled so) and the /v1/openai/v1/ rewrite, in both route tables."""
    envoy = yaml.safe_load((ROOT / "envoy/envoy.yaml").read_text())
    routes = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    no_route = routes[-1]
    vs = next(d for d in yaml.safe_load_all((ROOT / "envoy/istio/envoyfilter.yaml").read_text())
              if d and d.get("kind") == "VirtualService")
    istio_no_route = vs["spec"]["http"][-1]
    assert json.loads(istio_no_route["directResponse"]["body"]["string"]) == json.loads(
        no_route["direct_response"]["body"]["inline_string"])
    assert istio_no_route["headers"]["response"]["set"]["content-type"] == "application/json"
    # Requests without a model reach a backend only as exactly GET /v1/models, in both tables.
    unrouted = [r for r in routes if "headers" not in r["match"] or r["match"]["headers"][0]["name"] == ":method"]
    assert [(r["match"].get("path"), r["match"]["headers"][0]["string_match"]["exact"]) for r in unrouted[:-1]] == [
        ("/v1/models", "GET"), ("/v1/openai/v1/models", "GET")]
    istio_unrouted = [m for r in vs["spec"]["http"] for m in r.get("match", []) if "x-llm-provider" not in m.get("headers", {})]
    assert istio_unrouted == [{"uri": {"exact": "/v1/models"}, "method": {"exact": "GET"}},
                              {"uri": {"exact": "/v1/openai/v1/models"}, "method": {"exact": "GET"}}]
    for provider in ("vllm", "openai", "anthropic"):
        assert any(r["match"].get("prefix") == "/v1/openai/v1/" and r["route"].get("prefix_rewrite") == "/v1/"
                   and r["match"]["headers"][0]["string_match"]["exact"] == provider for r in routes), provider
        assert any(m.get("uri") == {"prefix": "/v1/openai/v1/"} and r.get("rewrite") == {"uri": "/v1/"}
                   and m["headers"]["x-llm-provider"]["exact"] == provider
                   for r in vs["spec"]["http"] for m in r.get("match", [])), provider


def test_configs_validate_against_the_committed_schema():
    schema = json.loads((ROOT / "envoy/plugin-config.schema.json").read_text())
    jsonschema.validate(json.loads((ROOT / "envoy/plugin-config.json").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"providers": [], "unknown": 1}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"providers": [{"name": "a"}]}, schema)


def test_check_rejects_a_bad_config_with_every_problem():
    code, result = check({"providers": [{"name": "a", "models": [""]}, {"name": "a", "models": ["x"]}], "x": 1})
    assert code == 1
    assert len(result["problems"]) == 3


def test_istio_image_recipe_packages_plugin_wasm():
    dockerfile = (ROOT / "envoy/istio/Dockerfile").read_text()
    assert "FROM scratch" in dockerfile
    assert "llm_header_forward.wasm ./plugin.wasm" in dockerfile


def test_run_func_e_says_clearly_when_func_e_is_missing(tmp_path):
    if shutil.which("func-e", path="/usr/bin:/bin"):
        pytest.skip("func-e is installed here")
    env = dict(os.environ, PATH=f"{tmp_path}:/usr/bin:/bin:{os.path.dirname(os.environ.get('CARGO', '/root/.cargo/bin/cargo'))}:/root/.cargo/bin")
    r = subprocess.run(["make", "-s", "run-func-e"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "func-e is not installed" in r.stdout + r.stderr
