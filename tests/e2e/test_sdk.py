"""The real client SDKs (openai, anthropic, llama-stack-client) against the shipped configuration:
what each backend received, non-streaming and streaming, and that streams arrive piece by piece.

Each call carries a unique `x-test-id` (an `x-*` header, forwarded by default) so the test finds
its own request in the mock backend's record (`server.received`), also for streams. What the SDK
itself sent is read from its HTTP client (an httpx request hook), so "kept" is checked against the
SDK's own header values, whatever SDK version is installed."""

import json
import uuid

import anthropic
import llama_stack_client
import openai
import pytest

TOKENS = {"vllm_api_token": "sk-vllm-sdk", "openai_api_key": "sk-openai-sdk", "anthropic_api_key": "sk-ant-sdk"}
GATEWAY_KEY = "sk-gateway-own-key"  # what the SDKs are configured with: must never reach a provider
PROVIDER_DATA = {"X-LlamaStack-Provider-Data": json.dumps(TOKENS)}
TEXT = "Hello from the mock {} backend."


class Sent:
    """The headers of every request an SDK's HTTP client sent, by x-test-id."""

    def __init__(self):
        self.by_id = {}

    def hook(self, request):
        self.by_id[request.headers.get("x-test-id")] = dict(request.headers)

    def client(self, sdk):
        """The SDK's own HTTP client class (some SDK versions use httpx, others a fork of it)."""
        return sdk.DefaultHttpxClient(trust_env=False, timeout=30, event_hooks={"request": [self.hook]})


def received(backends, name, test_id):
    """The request backend `name` received with this x-test-id: {header: [values]}, path."""
    matches = [r for r in list(backends.servers[name].received)
               if any(h == ["x-test-id", test_id] for h in r["headers"])]
    assert len(matches) == 1, f"{name} received {len(matches)} requests with x-test-id {test_id}"
    headers = {}
    for k, v in matches[0]["headers"]:
        headers.setdefault(k, []).append(v)
    return headers, matches[0]["path"]


def assert_only_its_own(headers, provider):
    """No SDK telemetry, no gateway key, no other provider's token, no provider data."""
    assert not [h for h in headers if h.startswith("x-stainless-")], headers
    values = [v for vs in headers.values() for v in vs]
    assert not [v for v in values if GATEWAY_KEY in v], "the SDK's (gateway's) own key reached the provider"
    own = {"vllm": "sk-vllm-sdk", "openai": "sk-openai-sdk", "anthropic": "sk-ant-sdk"}[provider]
    for token in TOKENS.values():
        if token != own:
            assert not [v for v in values if token in v], f"{token} reached {provider}"
    assert "x-llamastack-provider-data" not in headers
    assert headers["x-llm-provider"] == [provider]


def gated(stream, server, gate):
    """The stream's items, releasing the backend's last piece (`x-mock-gate`) once the first item
    has arrived. If anything between buffered the reply, the first item could not arrive before the
    backend gave up waiting and sent its last piece: the assertions below catch exactly that."""
    for i, item in enumerate(stream):
        if i == 0:
            assert server.gates.outcome(gate) is None, "the backend already sent its last piece"
            server.gates.release(gate)
        yield item
    assert server.gates.outcome(gate) == "released", "the first piece did not arrive before the last was sent"


def openai_stream(client, server, model, test_id):
    """A gated streaming chat completion through `client`: the text pieces, in order."""
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
                                            extra_headers={"x-test-id": test_id, "x-mock-gate": test_id})
    pieces = []
    for chunk in gated(stream, server, test_id):
        assert chunk.object == "chat.completion.chunk"
        pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    return pieces


@pytest.fixture()
def sent():
    return Sent()


def openai_client(gateway, sent, base_path="/v1"):
    return openai.OpenAI(base_url=gateway.base + base_path, api_key=GATEWAY_KEY, organization="org-sdk",
                         project="proj-sdk", default_headers=PROVIDER_DATA, http_client=sent.client(openai), max_retries=0)


def anthropic_client(gateway, sent):
    return anthropic.Anthropic(base_url=gateway.base, api_key=GATEWAY_KEY, default_headers=PROVIDER_DATA,
                               http_client=sent.client(anthropic), max_retries=0)


@pytest.mark.parametrize("model,provider", [("gpt-4o", "openai"), ("llama-3-8b", "vllm")])
def test_openai_sdk_chat(gateway, backends, sent, model, provider):
    test_id = uuid.uuid4().hex
    client = openai_client(gateway, sent)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-test-id": test_id})
    assert reply.choices[0].message.content == TEXT.format(provider)
    sdk = sent.by_id[test_id]
    assert sdk["authorization"] == f"Bearer {GATEWAY_KEY}" and "x-stainless-lang" in sdk, "what the SDK sent"
    headers, path = received(backends, provider, test_id)
    assert path == "/v1/chat/completions"
    assert_only_its_own(headers, provider)
    own = TOKENS["openai_api_key" if provider == "openai" else "vllm_api_token"]
    assert headers["authorization"] == [f"Bearer {own}"]
    if provider == "openai":
        assert headers["openai-organization"] == ["org-sdk"] and headers["openai-project"] == ["proj-sdk"]
    else:
        assert "openai-organization" not in headers and "openai-project" not in headers, "OpenAI's headers reached vllm"


@pytest.mark.parametrize("model,provider", [("gpt-4o-mini", "openai"), ("llama-3-8b", "vllm")])
def test_openai_sdk_stream_arrives_chunk_by_chunk(gateway, backends, sent, model, provider):
    test_id = uuid.uuid4().hex
    pieces = openai_stream(openai_client(gateway, sent), backends.servers[provider], model, test_id)
    assert "".join(pieces) == TEXT.format(provider)
    assert len([p for p in pieces if p]) >= 4, pieces
    headers, _ = received(backends, provider, test_id)
    assert_only_its_own(headers, provider)


def test_anthropic_sdk_messages(gateway, backends, sent):
    test_id = uuid.uuid4().hex
    client = anthropic_client(gateway, sent)
    reply = client.messages.create(model="claude-3-5-sonnet", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"x-test-id": test_id, "anthropic-beta": "prompt-caching-2024-07-31"})
    assert reply.type == "message" and reply.content[0].text == TEXT.format("anthropic")
    sdk = sent.by_id[test_id]
    headers, path = received(backends, "anthropic", test_id)
    assert path == "/v1/messages"
    assert_only_its_own(headers, "anthropic")
    # SDK versions send their key as x-api-key or as authorization: Bearer; either is stripped.
    assert GATEWAY_KEY in sdk.get("x-api-key", sdk.get("authorization", "")), sdk
    assert headers["x-api-key"] == ["sk-ant-sdk"], "provider data's key, not the SDK's"
    assert "authorization" not in headers
    assert headers["anthropic-version"] == [sdk["anthropic-version"]], "the SDK's anthropic-version is kept"
    assert headers["anthropic-beta"] == ["prompt-caching-2024-07-31"]
    assert not [h for h in headers if h.startswith("openai-")]


def test_anthropic_sdk_newer_version_is_kept_not_overwritten(gateway, backends, sent):
    test_id = uuid.uuid4().hex
    client = anthropic_client(gateway, sent)
    client.messages.create(model="claude-3-haiku", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                           extra_headers={"x-test-id": test_id, "anthropic-version": "2099-01-01"})
    headers, _ = received(backends, "anthropic", test_id)
    assert headers["anthropic-version"] == ["2099-01-01"]


def test_anthropic_sdk_stream_arrives_event_by_event(gateway, backends, sent):
    test_id = gate = uuid.uuid4().hex
    server = backends.servers["anthropic"]
    client = anthropic_client(gateway, sent)
    kinds, text = [], []
    with client.messages.stream(model="claude-3-5-sonnet", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                                extra_headers={"x-test-id": test_id, "x-mock-gate": gate}) as stream:
        for event in gated(stream, server, gate):
            kinds.append(event.type)
            if event.type == "content_block_delta":
                text.append(event.delta.text)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "".join(text) == TEXT.format("anthropic") == final.content[0].text
    assert final.stop_reason == "end_turn"
    headers, _ = received(backends, "anthropic", test_id)
    assert_only_its_own(headers, "anthropic")
    assert headers["x-api-key"] == ["sk-ant-sdk"]
    assert headers["anthropic-version"] == [sent.by_id[test_id]["anthropic-version"]]


def test_llama_stack_client_openai_compatible_path(gateway, backends, sent):
    """llama-stack-client posts to /v1/openai/v1/chat/completions with its provider data in
    X-LlamaStack-Provider-Data; the shipped routes rewrite the prefix to /v1/."""
    test_id = uuid.uuid4().hex
    client = llama_stack_client.LlamaStackClient(base_url=gateway.base, provider_data=TOKENS,
                                                 http_client=sent.client(llama_stack_client), max_retries=0)
    reply = client.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-test-id": test_id})
    assert reply.choices[0].message.content == TEXT.format("vllm")
    assert sent.by_id[test_id]["x-llamastack-provider-data"], "the SDK sent provider data"
    headers, path = received(backends, "vllm", test_id)
    assert path == "/v1/chat/completions"
    assert_only_its_own(headers, "vllm")
    assert headers["authorization"] == ["Bearer sk-vllm-sdk"]



def test_llama_stack_path_streams_through_the_openai_sdk(gateway, backends, sent):
    """Streaming on the Llama Stack path, driven by the openai SDK on the /v1/openai/v1 base URL:
    llama-stack-client 0.2.12 decodes every `data:` line as JSON and so cannot read the
    `data: [DONE]` that OpenAI's API and vLLM end a stream with."""
    test_id = uuid.uuid4().hex
    client = openai_client(gateway, sent, base_path="/v1/openai/v1")
    pieces = openai_stream(client, backends.servers["vllm"], "meta-llama/Llama-3.1-8B-Instruct", test_id)
    assert "".join(pieces) == TEXT.format("vllm")
    headers, path = received(backends, "vllm", test_id)
    assert path == "/v1/chat/completions"
    assert_only_its_own(headers, "vllm")
    assert headers["authorization"] == ["Bearer sk-vllm-sdk"]
    assert "openai-organization" not in headers
