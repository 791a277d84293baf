//! The `llm-header-forward` CLI on the shipped examples, and the committed JSON Schema.

use llm_header_forward::config;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llm-header-forward")).args(args).current_dir(root()).output().expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_accepts_the_shipped_config() {
    let o = cli(&["check", "--config", "envoy/plugin-config.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("3 provider(s): vllm, openai, anthropic"));
}

#[test]
fn check_lists_every_problem_and_fails() {
    let bad = std::env::temp_dir().join(format!("llmhf-bad-{}.json", std::process::id()));
    std::fs::write(&bad, r#"{"bogus":1,"providers":[{"name":"a","models":[""],"set_headers":{"host":"x"}}]}"#)
        .expect("write");
    let o = cli(&["check", "--config", bad.to_str().expect("path"), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(3), "{v}");
    let _ = std::fs::remove_file(bad);
}

#[test]
fn explain_the_examples() {
    let cases = [
        ("envoy/examples/chat-vllm.json", 0, "forwarded"),
        ("envoy/examples/models.http", 0, "forwarded"),
        ("envoy/examples/blocked-header.json", 1, "rejected"),
        ("envoy/examples/duplicate-model.http", 1, "rejected"),
        ("envoy/examples/claude-sdk.json", 0, "forwarded"),
        ("envoy/examples/case-variant-model.http", 1, "rejected"),
        ("envoy/examples/spoofed-client-ip.json", 0, "forwarded"),
    ];
    for (request, code, outcome) in cases {
        let o = cli(&["explain", "--config", "envoy/plugin-config.json", "--request", request, "--json"]);
        assert_eq!(o.status.code(), Some(code), "{request}: {}", stdout(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["outcome"], outcome, "{request}");
    }
    let o = cli(&["explain", "--config", "envoy/plugin-config.json", "--request", "envoy/examples/chat-vllm.json"]);
    let text = stdout(&o);
    for line in [
        "provider: vllm",
        "- remove  x-llm-provider",
        "+ set     authorization",
        "by forward_headers \"vllm_api_token\"",
        "x dropped x-other",
        "x-llm-provider: vllm",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("cookie: session"), "the cookie never reaches upstream:\n{text}");

    let o = cli(&["explain", "--config", "envoy/plugin-config.json", "--request", "envoy/examples/claude-sdk.json"]);
    let text = stdout(&o);
    for line in [
        "provider: anthropic",
        "- remove  openai-organization          by client_headers.mode: allowlist",
        "- remove  x-api-key                    by client_auth: strip",
        "+ set     anthropic-version            = \"2023-06-01\" by default_headers",
        "anthropic-beta: prompt-caching-2024-07-31",
        "x-trace-id: t-1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(cli(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(cli(&["explain", "--config", "envoy/plugin-config.json"]).status.code(), Some(2));
}

#[test]
fn committed_schema_matches_the_config_types() {
    let committed = std::fs::read_to_string(root().join("envoy/plugin-config.schema.json")).expect("schema file");
    assert!(
        committed == config::schema(),
        "envoy/plugin-config.schema.json is stale: run `make schema` (cargo run --release --bin llm-header-forward -- schema > envoy/plugin-config.schema.json)"
    );
    assert_eq!(stdout(&cli(&["schema"])), committed);
}

/// The schema and the parser name the same fields: every property the schema lists is accepted,
/// and the schema forbids anything else.
#[test]
fn schema_properties_are_exactly_the_parsers_fields() {
    let schema: Value = serde_json::from_str(&config::schema()).expect("json");
    let top: Vec<&String> = schema["properties"].as_object().expect("properties").keys().collect();
    let provider = &schema["$defs"]["ProviderConfig"];
    let fields: Vec<&String> = provider["properties"].as_object().expect("provider properties").keys().collect();
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(provider["additionalProperties"], false);
    let unknown = |json: String| {
        let (_, errors) = config::parse_partial(json.as_bytes());
        errors.into_iter().filter(|e| e.contains("unknown field")).collect::<Vec<_>>()
    };
    for key in &top {
        assert!(unknown(format!(r#"{{"{key}": null, "providers": []}}"#)).is_empty(), "parser does not know {key}");
    }
    for key in &fields {
        let p = format!(r#"{{"providers": [{{"name": "a", "models": [], "{key}": null}}]}}"#);
        assert!(unknown(p).is_empty(), "parser does not know providers[].{key}");
    }
    assert_eq!(unknown(r#"{"providers": [], "extra": 1}"#.into()).len(), 1);
    assert!(Path::new(&root().join("envoy/plugin-config.json")).exists());
}

#[test]
fn explain_shows_client_identity_headers_removed_and_check_refuses_rules_envoy_owns() {
    let o =
        cli(&["explain", "--config", "envoy/plugin-config.json", "--request", "envoy/examples/spoofed-client-ip.json"]);
    let text = stdout(&o);
    for line in ["- remove  forwarded", "- remove  x-real-ip", "by client identity header (always removed)"] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("203.0.113.7\n"), "the spoofed address is not among the upstream headers:\n{text}");

    let bad = std::env::temp_dir().join(format!("llmhf-envoy-owned-{}.json", std::process::id()));
    std::fs::write(&bad, r#"{"providers":[{"name":"a","models":["m"],"remove_headers":["x-forwarded-for"]}]}"#)
        .expect("write");
    let o = cli(&["check", "--config", bad.to_str().expect("path")]);
    let _ = std::fs::remove_file(&bad);
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert!(all.contains("names a header Envoy owns"), "{all}");
}

#[test]
fn check_accepts_the_shipped_envoy_wiring_of_the_fallback_chain() {
    let o = cli(&["check", "--config", "envoy/plugin-config.json", "--envoy", "envoy/envoy.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("fallback chain llama-ha: vllm -> openai (model gpt-4o-mini)"), "{}", stdout(&o));
    // Without --config, the listener's own plugin configuration is checked.
    let o = cli(&["check", "--envoy", "envoy/envoy.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // The native build's wiring: the dynamic module is the listener filter and the upstream role.
    for args in [
        &["check", "--config", "envoy/plugin-config.json", "--envoy", "envoy/envoy-native.yaml"][..],
        &["check", "--envoy", "envoy/envoy-native.yaml"][..],
    ] {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
        assert!(stdout(&o).contains("Envoy wiring of the fallback chains: ok"), "{}", stdout(&o));
    }
}

#[test]
fn check_reports_every_envoy_wiring_problem_of_a_chain_at_once() {
    let shipped = std::fs::read_to_string(root().join("envoy/envoy.yaml")).expect("shipped yaml");
    let mut doc: Value = serde_yaml::from_str(&shipped).expect("yaml");
    for route in doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .expect("routes")
    {
        if let Some(retry) = route["route"].get_mut("retry_policy") {
            retry["num_retries"] = 0.into();
            retry.as_object_mut().expect("object").remove("retry_priority");
        }
    }
    for cluster in doc["static_resources"]["clusters"].as_array_mut().expect("clusters") {
        if cluster["name"] == "llama-ha" {
            cluster.as_object_mut().expect("object").remove("typed_extension_protocol_options");
        }
        if cluster["name"] == "openai" {
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
                .as_object_mut()
                .expect("object")
                .remove("metadata");
        }
    }
    let broken = std::env::temp_dir().join(format!("llmhf-envoy-{}.yaml", std::process::id()));
    std::fs::write(&broken, serde_yaml::to_string(&doc).expect("yaml")).expect("write");
    let o =
        cli(&["check", "--config", "envoy/plugin-config.json", "--envoy", broken.to_str().expect("path"), "--json"]);
    let _ = std::fs::remove_file(&broken);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let all = v["problems"].to_string();
    for needle in [
        "num_retries is 0",
        "no retry_priority envoy.retry_priorities.previous_priorities",
        "has no llm-header-forward filter (wasm or native) with \\\"role\\\": \\\"upstream\\\"",
        "cluster \\\"openai\\\" endpoint 0 has no metadata",
        "no endpoint of cluster \\\"llama-ha\\\" serves the attempt for \\\"openai\\\"",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in {all}");
    }
}
