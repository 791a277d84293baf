#!/usr/bin/env python3
"""Instructions per request, per listener: `make bench`'s Envoy and bodies under callgrind.

Throughput ratios on a shared 2-core machine swing with the neighbours; the number of instructions
Envoy's process executes per request does not (user space only: the kernel's share of a request, ~a
quarter of its CPU time, is not counted). One Envoy (`--concurrency 1`) with `make bench`'s
listeners runs under `valgrind --tool=callgrind`; for each listener, after a warm-up, the counters
are zeroed, N requests are sent one after another on one connection, and the counters are dumped.
The dumps stay in the work directory for `callgrind_annotate` (build the native filter with
`CARGO_PROFILE_NATIVE_STRIP=false CARGO_PROFILE_NATIVE_DEBUG=1` to see its functions by name).

    bench/instructions.py --listeners none,noop-native,native --size 1KB --requests 200

Needs valgrind (`apt-get install valgrind`); a wasm listener needs minutes to start under it.
Reports, never asserts.
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: the listeners, bodies and provider data of `make bench`)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listeners", default="none,noop-native,native")
    ap.add_argument("--size", default="1KB", choices=list(run.SIZES))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--envoy", default=str(run.ROOT / ".venv/lib/python3.11/site-packages/envoy/_bin/envoy"),
                    help="the Envoy executable itself (not the .venv/bin/envoy wrapper script)")
    args = ap.parse_args()

    listeners = ["none"] + [n for n in args.listeners.split(",") if n and n != "none"]
    work = Path(tempfile.mkdtemp(prefix="llmhf-instructions-"))
    ports = {n: run.free_port() for n in listeners + ["upstream"]}
    admin = run.free_port()
    (work / "envoy.yaml").write_text(yaml.safe_dump(run.envoy_config(ports, admin, listeners)))
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={work}/callgrind.%p",
         args.envoy, "-c", str(work / "envoy.yaml"), "--concurrency", "1", "--use-dynamic-base-id",
         "--log-level", "warning", "--log-path", str(work / "envoy.log")],
        stdout=subprocess.DEVNULL, stderr=open(work / "valgrind.log", "w"))
    try:
        run.wait_ready(proc, admin, 1800, 1,
                       lambda: f"envoy did not start under valgrind:\n{(work / 'valgrind.log').read_text()[-2000:]}")
        body = run.body_of_size(run.SIZES[args.size])
        headers = {"content-type": "application/json", "x-llamastack-provider-data": run.PROVIDER_DATA}
        base = None
        with httpx.Client(trust_env=False, timeout=120) as client:
            for name in listeners:
                url = f"http://127.0.0.1:{ports[name]}/v1/chat/completions"
                for _ in range(20):  # warm-up (V8 tiering, connection pools)
                    client.post(url, content=body, headers=headers).raise_for_status()
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
                for _ in range(args.requests):
                    client.post(url, content=body, headers=headers).raise_for_status()
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
                dump = max(work.glob("callgrind.*"), key=lambda f: f.stat().st_mtime)
                total = int(re.search(r"^(?:summary|totals):\s+(\d+)", dump.read_text(errors="replace"), re.M)[1])
                dump.rename(work / f"{name}-{args.size}.callgrind")
                per_request = total / args.requests
                base = base or per_request
                print(f"{name:14} {args.size:5} {per_request:10,.0f} instructions/request "
                      f"({per_request / base - 1:+.1%} against none)", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"dumps: {work}")


if __name__ == "__main__":
    main()
