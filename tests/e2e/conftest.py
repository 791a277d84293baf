"""Fixtures. Every test that starts Envoy (it uses `backends`, `gateway` or `lab`, directly or via
`Gateway(backends, ...)`) runs once per build, `[wasm]` and `[native]`, with nothing to add to the
test. A test that is inherently about one build says so with a reason:

    @pytest.mark.wasm_only("the wasm VM's linear memory")
    @pytest.mark.native_only("the dynamic module's panic guard")
"""

import pytest

import harness
from harness import BUILDS, NATIVE, WASM, Backends, Gateway

# A second plugin configuration, for the rules the shipped one does not switch on: on_invalid drop,
# a default provider for unknown models, a small body limit, bring-your-own-key, generic extra
# headers, remove_headers and an operator set_headers Authorization.
LAB_CONFIG = {
    "on_invalid": "drop",
    "body": {"max_bytes": 4096},
    "routing": {"unknown_model": "anthropic"},
    "blocked_headers": ["x-internal-*"],
    "providers": [
        {
            "name": "vllm",
            "models": ["llama-*"],
            "forward_headers": {"vllm_api_token": {"header": "authorization", "prefix": "Bearer "}},
            "extra_headers": ["x-maas-*", "x-debug"],
            "set_headers": {"x-gateway": "lab"},
            "remove_headers": ["x-debug"],
            "client_headers": {"mode": "all", "drop": ["x-stainless-*", "x-drop-me"]},
        },
        {
            "name": "openai",
            "models": ["gpt-*"],
            "client_auth": "forward",
            "forward_headers": {"openai_api_key": {"header": "authorization", "prefix": "Bearer "}},
            "generic_extra_headers": True,
            "extra_headers": ["x-*"],
        },
        {
            "name": "anthropic",
            "models": ["claude-*"],
            "client_auth": "forward",
            "forward_headers": {"anthropic_api_key": "authorization"},
            "set_headers": {"authorization": "Bearer gateway-static"},
        },
    ],
}


def pytest_configure(config):
    config.addinivalue_line("markers", "wasm_only(reason): the test is about the proxy-wasm build only")
    config.addinivalue_line("markers", "native_only(reason): the test is about the dynamic-module build only")


def pytest_sessionstart(session):
    if not WASM.exists():
        raise pytest.UsageError(f"{WASM} is missing: run `make build` (or `make test`)")
    if not NATIVE.exists():
        raise pytest.UsageError(f"{NATIVE} is missing: run `make native` (or `make test`)")


def _builds_for(definition):
    for only, build in (("wasm_only", "wasm"), ("native_only", "native")):
        marker = definition.get_closest_marker(only)
        if marker is not None:
            if not (marker.args or marker.kwargs.get("reason")):
                raise pytest.UsageError(f"{definition.nodeid}: @pytest.mark.{only} needs a reason")
            return [build]
    return list(BUILDS)


def pytest_generate_tests(metafunc):
    if "build" in metafunc.fixturenames:
        metafunc.parametrize("build", _builds_for(metafunc.definition), indirect=True, scope="session")


@pytest.fixture(autouse=True)
def _build_of_this_test(request):
    """`Gateway(...)` in a test that does not use the fixtures above runs the default build, wasm."""
    callspec = getattr(request.node, "callspec", None)
    harness.select_build(callspec.params.get("build", "wasm") if callspec else "wasm")


@pytest.fixture(scope="session")
def build(request):
    """The build under test: every Envoy-using test is parametrized with it."""
    harness.select_build(request.param)
    yield request.param


@pytest.fixture(scope="session")
def backends(build):
    b = Backends()
    yield b
    b.close()


@pytest.fixture(scope="session")
def gateway(backends, build):
    """Envoy with the shipped envoy/envoy.yaml, as users run it."""
    gw = Gateway(backends)
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def lab(backends, build):
    gw = Gateway(backends, LAB_CONFIG)
    yield gw
    gw.stop()


# An operator who lets provider data add any header (`extra_headers: ["*"]`): the core blocklist is
# all that stands between the client and the backend's framing, identity and method headers.
WILDCARD_CONFIG = {
    "providers": [
        {"name": "vllm", "models": ["llama-*"], "extra_headers": ["*"],
         "forward_headers": {"vllm_api_token": {"header": "authorization", "prefix": "Bearer "}, "n": "x-n"}},
        {"name": "openai", "models": ["gpt-*"], "extra_headers": ["x-*"]},
    ],
}


@pytest.fixture(scope="session")
def wildcard(backends):
    gw = Gateway(backends, WILDCARD_CONFIG)
    yield gw
    gw.stop()
