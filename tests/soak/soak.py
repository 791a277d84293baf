#!/usr/bin/env python3
"""`make soak`: many concurrent requests through real Envoy, checked one by one for leakage.

Every request carries unique tokens for all three providers (and a unique nonce). A valid request
must reach exactly its provider, carrying exactly its own token for that provider and none of the
other tokens; an invalid one must get its documented status and error code. At the end Envoy must
show no wasm VM failure and no RSS growth. Loopback only, bounded by --requests and --timeout.
"""

import argparse
import asyncio
import gzip
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from harness import Backends, Gateway  # noqa: E402

MODELS = {"vllm": "llama-3-8b", "openai": "gpt-4o", "anthropic": "claude-3-5-sonnet"}
TOKEN_KEY = {"vllm": "vllm_api_token", "openai": "openai_api_key", "anthropic": "anthropic_api_key"}
TOKEN_HEADER = {"vllm": ("authorization", "Bearer "), "openai": ("authorization", "Bearer "), "anthropic": ("x-api-key", "")}

# kind -> (weight, expected status, expected code)
KINDS = {
    "valid": (60, 200, None),
    "blocked_header": (5, 400, "blocked_header"),
    "crlf_value": (5, 400, "invalid_header_value"),
    "bad_provider_data": (5, 400, "invalid_provider_data"),
    "unknown_model": (5, 404, "model_not_found"),
    "duplicate_model": (5, 400, "duplicate_model"),
    "non_string_model": (4, 400, "invalid_model"),
    "malformed_body": (4, 400, "invalid_json"),
    "two_provider_data": (3, 400, "conflicting_provider_data"),
    "too_many_headers": (2, 400, "too_many_headers"),
    "gzip_body": (2, 415, "unsupported_content_encoding"),
}


def build(i, rng):
    kind = rng.choices(list(KINDS), weights=[w for w, _, _ in KINDS.values()])[0]
    provider = rng.choice(list(MODELS))
    tokens = {p: f"tok-{i:07d}-{p}-{rng.getrandbits(32):08x}" for p in MODELS}
    data = {TOKEN_KEY[p]: tokens[p] for p in MODELS}
    data["vllm_extra_headers"] = {"x-maas-nonce": f"nonce-{i:07d}"}
    body = {"model": MODELS[provider], "messages": [{"role": "user", "content": "x" * rng.randrange(0, 3000)}]}
    headers = {"content-type": "application/json", "x-llm-provider": rng.choice(list(MODELS))}
    raw_body = None
    if kind == "blocked_header":
        data[f"{provider}_extra_headers"] = {rng.choice(["Host", "X-Forwarded-For", "Cookie", "x-envoy-retry-on"]): "evil"}
    elif kind == "crlf_value":
        data[TOKEN_KEY[provider]] = tokens[provider] + "\r\nx-evil: 1"
    elif kind == "bad_provider_data":
        data = None
        headers["x-llamastack-provider-data"] = rng.choice(["{not json", "[1,2]", '"s"'])
    elif kind == "unknown_model":
        body["model"] = f"mistral-{i}"
    elif kind == "duplicate_model":
        raw_body = json.dumps(body)[:-1] + ',"model":"gpt-4o"}'
    elif kind == "non_string_model":
        body["model"] = rng.choice([1, None, ["gpt-4o"], {"m": 1}])
    elif kind == "malformed_body":
        raw_body = json.dumps(body)[: rng.randrange(1, 20)]
    elif kind == "two_provider_data":
        headers["x-ogx-provider-data"] = json.dumps(data)
    elif kind == "too_many_headers":
        provider = "vllm"
        body["model"] = MODELS["vllm"]
        data["vllm_extra_headers"] = {f"x-maas-{n}": "v" for n in range(65)}
    if data is not None:
        headers["x-llamastack-provider-data"] = json.dumps(data)
    payload = raw_body.encode() if raw_body is not None else json.dumps(body).encode()
    if kind == "gzip_body":
        payload = gzip.compress(payload)
        headers["content-encoding"] = "gzip"
    return kind, provider, tokens, headers, payload


async def request(reader, writer, headers, payload):
    head = "POST /v1/chat/completions HTTP/1.1\r\nhost: soak\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"content-length: {len(payload)}\r\n\r\n"
    writer.write(head.encode() + payload)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    close = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "connection" and "close" in value.lower():
            close = True
    body = await reader.readexactly(length)
    return status, json.loads(body), close


def check(i, kind, provider, tokens, status, reply):
    _, want_status, want_code = KINDS[kind]
    if status != want_status:
        return f"#{i} {kind}: status {status}, expected {want_status}: {reply}"
    if want_code is not None:
        code = reply.get("error", {}).get("code")
        if code != want_code:
            return f"#{i} {kind}: code {code}, expected {want_code}"
        if any(t in json.dumps(reply) for t in tokens.values()):
            return f"#{i} {kind}: an error reply echoed a token"
        return None
    up = reply["upstream"]
    if up["name"] != provider:
        return f"#{i}: sent to {up['name']}, model belongs to {provider}"
    header, prefix = TOKEN_HEADER[provider]
    seen = [(n, v) for n, v in up["headers"] if "tok-" in v]
    expected = [(header, prefix + tokens[provider])]
    if seen != expected:
        return f"#{i}: {provider} upstream saw tokens {seen}, expected {expected}"
    nonces = [v for n, v in up["headers"] if v.startswith("nonce-")]
    if nonces != ([f"nonce-{i:07d}"] if provider == "vllm" else []):
        return f"#{i}: {provider} upstream saw nonces {nonces}"
    return None


async def worker(gw_port, queue, results, rng):
    reader = writer = None
    while True:
        item = await queue.get()
        if item is None:
            break
        i, kind, provider, tokens, headers, payload = item
        for attempt in range(2):
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", gw_port)
                status, reply, close = await request(reader, writer, headers, payload)
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                writer = None
                if attempt:
                    raise
        if close:
            writer.close()
            writer = None
        results.append((i, kind, check(i, kind, provider, tokens, status, reply)))
    if writer is not None:
        writer.close()


async def soak(gw, total, concurrency, seed):
    rng = random.Random(seed)
    queue = asyncio.Queue(maxsize=concurrency * 4)
    results = []
    port = int(gw.base.rsplit(":", 1)[1])
    workers = [asyncio.create_task(worker(port, queue, results, rng)) for _ in range(concurrency)]
    for i in range(total):
        await queue.put((i, *build(i, rng)))
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    return results


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-rss-growth-mb", type=float, default=5.0)
    args = ap.parse_args()

    backends = Backends()
    gw = Gateway(backends)
    failures = []
    try:
        warm = max(2000, args.requests // 20)
        asyncio.run(soak(gw, warm, args.concurrency, args.seed + 1))
        rss_before = rss_kb(gw.proc.pid)
        started = time.time()
        results = asyncio.run(soak(gw, args.requests, args.concurrency, args.seed))
        elapsed = time.time() - started
        rss_after = rss_kb(gw.proc.pid)
        failures = [msg for _, _, msg in results if msg]
        by_kind = {}
        for _, kind, _ in results:
            by_kind[kind] = by_kind.get(kind, 0) + 1
        log = gw.log()
        vm_failures = [line for line in log.splitlines() if "Wasm VM failed" in line or "panicked" in line or "[critical]" in line]
        growth = (rss_after - rss_before) / 1024
        print(f"{len(results):,} requests at concurrency {args.concurrency} in {elapsed:.1f} s "
              f"({len(results) / elapsed:,.0f} req/s); mix: {json.dumps(by_kind, sort_keys=True)}")
        print(f"leak/expectation failures: {len(failures)}; VM failures in the log: {len(vm_failures)}; "
              f"Envoy RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB ({growth:+.1f} MiB)")
        for msg in failures[:20]:
            print("  FAIL", msg)
        for line in vm_failures[:5]:
            print("  VM", line)
        ok = not failures and not vm_failures and len(results) == args.requests and growth <= args.max_rss_growth_mb
    finally:
        gw.stop()
        backends.close()
    print("soak: PASS" if ok else "soak: FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
