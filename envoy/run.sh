#!/usr/bin/env bash
# Starts the mock LLM backends and Envoy with envoy/envoy.yaml (from the repository root), prints a
# request to try, and stops both on Ctrl-C. ENVOY may be a binary or "func-e run".
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY=${ENVOY:-envoy}
PYTHON=${PYTHON:-python3}
# BUILD=native: the dynamic module and envoy/envoy-native.yaml (`make run-native`).
if [ "${BUILD:-wasm}" = native ]; then
  MODULE=target/release/libllm_header_forward.so CONFIG=envoy/envoy-native.yaml COMPONENT=dynamic_modules
  [ -f "$MODULE" ] || { echo "missing $MODULE: run 'make native' first" >&2; exit 1; }
else
  MODULE=target/wasm32-unknown-unknown/release/llm_header_forward.wasm CONFIG=envoy/envoy.yaml COMPONENT=wasm
  [ -f "$MODULE" ] || { echo "missing $MODULE: run 'make build' first" >&2; exit 1; }
fi

"$PYTHON" envoy/mock_llm.py vllm=127.0.0.1:18001 openai=127.0.0.1:18002 anthropic=127.0.0.1:18003 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null || true' EXIT

cat <<'MSG'

llm-header-forward is starting on http://127.0.0.1:10000 (admin: http://127.0.0.1:9901).
Try, in another terminal:

  curl -s --noproxy '*' http://127.0.0.1:10000/v1/chat/completions \
    -H 'content-type: application/json' \
    -H 'X-LlamaStack-Provider-Data: {"vllm_api_token":"my-key","vllm_extra_headers":{"X-MaaS-Subscription":"free-tier"}}' \
    -H 'x-llm-provider: openai' -H 'cookie: session=1' \
    -d '{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}]}'

The reply's "upstream" field shows what the vllm backend received: authorization and
x-maas-subscription from provider data, x-llm-provider set to vllm (the spoofed value is gone),
no cookie, no provider-data header. Change the model to gpt-4o or claude-3-5-sonnet to reach
the other backends; counters: curl -s --noproxy '*' http://127.0.0.1:9901/stats | grep llm_header
The mocks stream too ("stream": true) and speak Anthropic's POST /v1/messages; to use the
openai / anthropic / llama-stack-client SDKs, see "With the real SDKs" in README.md.

Fallback chain llama-ha (vllm, then openai with model gpt-4o-mini). The mock vllm fails this one
on demand (x-mock-fail: vllm=503), Envoy retries on openai, and the filter's upstream role fits the
retry to openai: openai's key instead of vllm's, no vllm extra headers, the model rewritten:

  curl -s --noproxy '*' http://127.0.0.1:10000/v1/chat/completions \
    -H 'content-type: application/json' -H 'x-mock-fail: vllm=503' \
    -H 'X-LlamaStack-Provider-Data: {"vllm_api_token":"vllm-key","openai_api_key":"openai-key","vllm_extra_headers":{"X-MaaS-Subscription":"free-tier"}}' \
    -d '{"model":"llama-3-70b","messages":[{"role":"user","content":"hi"}]}'

The reply comes from openai ("upstream".name): authorization "Bearer openai-key", x-llm-provider
openai, "model" gpt-4o-mini, and nothing vllm's attempt carried (vllm-key, x-maas-subscription).

MSG
# shellcheck disable=SC2086
$ENVOY -c "$CONFIG" --use-dynamic-base-id --log-level warning --component-log-level "$COMPONENT:info"
