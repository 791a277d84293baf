import pytest

from harness import WASM, Backends, Gateway

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


def pytest_sessionstart(session):
    if not WASM.exists():
        raise pytest.UsageError(f"{WASM} is missing: run `make build` (or `make test`)")


@pytest.fixture(scope="session")
def backends():
    b = Backends()
    yield b
    b.close()


@pytest.fixture(scope="session")
def gateway(backends):
    """Envoy with the shipped envoy/envoy.yaml, as users run it."""
    gw = Gateway(backends)
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def lab(backends):
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
