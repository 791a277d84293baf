//! `llm-header-forward check --envoy envoy.yaml`: the Envoy wiring fallback chains depend on
//! (SPEC §8), checked before deployment. Every problem is reported at once:
//!
//! - a chain without a route matching its name in the provider routing header;
//! - a chain's route without `retry_policy`, retrying too few times for the chain's attempts,
//!   not retrying on `5xx`, `reset`, `connect-failure` or `refused-stream`, or without
//!   `previous_priorities` (then every retry goes back to the first provider);
//! - the route's cluster without the upstream role before `upstream_codec` (filters on the member
//!   clusters of an aggregate never run), or with a configuration that is not the listener's plus
//!   `"role": "upstream"`;
//! - an endpoint of the chain's clusters without `filter_metadata.llm_header_forward.provider`,
//!   or naming a provider outside the chain, and attempts no endpoint serves.
//!
//! Both builds are recognised, in listeners and clusters alike: the wasm filter
//! (`envoy.filters.http.wasm`, configuration in `config.configuration`) and the native dynamic module
//! (`envoy.filters.http.dynamic_modules`, configuration in `filter_config`).
//!
//! Static resources only (what a YAML file holds); works on the document as JSON values.

use crate::policy::{Chain, Policy};
use serde_json::Value;

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";
const NATIVE_FILTER: &str = "envoy.filters.http.dynamic_modules";
const RETRY_ON: [&str; 4] = ["5xx", "reset", "connect-failure", "refused-stream"];

/// The downstream filters' plugin configurations (JSON text) in an Envoy document, either build.
pub fn listener_plugin_configs(envoy: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for hcm in connection_managers(envoy) {
        for f in array(&hcm["http_filters"]) {
            if let Some(text) = plugin_configuration(f) {
                out.push(text);
            }
        }
    }
    out
}

/// Every problem of the Envoy wiring for `policy`'s fallback chains.
pub fn check(policy: &Policy, plugin_config: &Value, envoy: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let clusters: Vec<&Value> = array(&envoy["static_resources"]["clusters"]).collect();
    let routes: Vec<&Value> = connection_managers(envoy)
        .flat_map(|hcm| array(&hcm["route_config"]["virtual_hosts"]))
        .flat_map(|vh| array(&vh["routes"]))
        .collect();
    for chain in &policy.chains {
        let at = format!("fallback chain {:?}", chain.name);
        let matching: Vec<&Value> =
            routes.iter().copied().filter(|r| matches_header(r, &policy.provider_header, &chain.name)).collect();
        if matching.is_empty() {
            problems.push(format!(
                "{at}: no route matches {}: {} (the downstream role routes the chain's requests by it)",
                policy.provider_header, chain.name
            ));
        }
        for route in matching {
            let Some(cluster_name) = route["route"]["cluster"].as_str() else {
                problems.push(format!("{at}: its route has no single `cluster`"));
                continue;
            };
            check_retries(&at, chain, &route["route"]["retry_policy"], &mut problems);
            let Some(cluster) = find(&clusters, cluster_name) else {
                problems.push(format!("{at}: the route's cluster {cluster_name:?} is not defined"));
                continue;
            };
            check_upstream_role(&at, cluster_name, cluster, plugin_config, &mut problems);
            check_endpoints(&at, policy, chain, cluster_name, cluster, &clusters, &mut problems);
        }
    }
    problems
}

fn check_retries(at: &str, chain: &Chain, retry: &Value, problems: &mut Vec<String>) {
    if retry.is_null() {
        problems.push(format!("{at}: the route has no retry_policy, so no attempt after the first ever happens"));
        return;
    }
    let needed = chain.attempts.len().saturating_sub(1) as u64;
    let retries = retry["num_retries"].as_u64().unwrap_or(1);
    if retries < needed {
        problems.push(format!(
            "{at}: retry_policy.num_retries is {retries}, the chain needs at least {needed} (attempts - 1)"
        ));
    }
    let on: Vec<&str> = retry["retry_on"].as_str().unwrap_or_default().split(',').map(str::trim).collect();
    let missing: Vec<&str> = RETRY_ON.iter().copied().filter(|c| !on.contains(c)).collect();
    if !missing.is_empty() {
        problems.push(format!("{at}: retry_policy.retry_on lacks {}", missing.join(",")));
    }
    if retry["retry_priority"]["name"].as_str() != Some(PREVIOUS_PRIORITIES) {
        problems.push(format!(
            "{at}: retry_policy has no retry_priority {PREVIOUS_PRIORITIES} (without it every retry goes back to the first provider)"
        ));
    }
}

fn check_upstream_role(at: &str, name: &str, cluster: &Value, plugin_config: &Value, problems: &mut Vec<String>) {
    let filters: Vec<&Value> =
        array(&cluster["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"]).collect();
    let role = filters.iter().position(|f| {
        plugin_configuration(f)
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|c| c["role"] == "upstream")
    });
    let Some(i) = role else {
        problems.push(format!(
            "{at}: cluster {name:?} has no llm-header-forward filter (wasm or native) with \"role\": \"upstream\" in {HTTP_OPTIONS}.http_filters \
             (filters on the member clusters of an aggregate never run): every attempt would carry the first one's headers"
        ));
        return;
    };
    let codec_after = filters.iter().skip(i + 1).any(|f| f["name"] == "envoy.filters.http.upstream_codec");
    if !codec_after {
        problems.push(format!(
            "{at}: cluster {name:?}: the upstream role must be followed by envoy.filters.http.upstream_codec"
        ));
    }
    let config =
        filters.get(i).and_then(|f| plugin_configuration(f)).and_then(|t| serde_json::from_str::<Value>(&t).ok());
    if let (Some(Value::Object(mut upstream)), Value::Object(listener)) = (config, plugin_config) {
        upstream.remove("role");
        let mut listener = listener.clone();
        listener.remove("role");
        if upstream != listener {
            problems.push(format!(
                "{at}: cluster {name:?}: the upstream role's configuration differs from the listener's (it must be the same plus \"role\": \"upstream\")"
            ));
        }
    }
}

fn check_endpoints(
    at: &str,
    policy: &Policy,
    chain: &Chain,
    name: &str,
    cluster: &Value,
    clusters: &[&Value],
    problems: &mut Vec<String>,
) {
    let is_aggregate = cluster["cluster_type"]["name"] == "envoy.clusters.aggregate";
    let members: Vec<(&str, &Value)> = if is_aggregate {
        array(&cluster["cluster_type"]["typed_config"]["clusters"])
            .filter_map(Value::as_str)
            .filter_map(|m| match find(clusters, m) {
                Some(c) => Some((m, c)),
                None => {
                    problems.push(format!("{at}: aggregate cluster {name:?} names an undefined cluster {m:?}"));
                    None
                }
            })
            .collect()
    } else {
        vec![(name, cluster)]
    };
    let chain_providers: Vec<&str> =
        chain.attempts.iter().filter_map(|a| policy.providers.get(a.provider)).map(|p| p.name.as_str()).collect();
    let mut served = Vec::new();
    for (member, c) in members {
        for group in array(&c["load_assignment"]["endpoints"]) {
            for (k, endpoint) in array(&group["lb_endpoints"]).enumerate() {
                match endpoint["metadata"]["filter_metadata"]["llm_header_forward"]["provider"].as_str() {
                    None => problems.push(format!(
                        "{at}: cluster {member:?} endpoint {k} has no metadata filter_metadata.llm_header_forward.provider (its attempts would be refused with 502 fallback_misconfigured)"
                    )),
                    Some(p) if !chain_providers.contains(&p) => problems.push(format!(
                        "{at}: cluster {member:?} endpoint {k} names provider {p:?}, which is not an attempt of the chain"
                    )),
                    Some(p) => served.push(p.to_string()),
                }
            }
        }
    }
    for p in chain_providers {
        if !served.iter().any(|s| s == p) {
            problems.push(format!("{at}: no endpoint of cluster {name:?} serves the attempt for {p:?}"));
        }
    }
}

fn connection_managers(envoy: &Value) -> impl Iterator<Item = &Value> {
    array(&envoy["static_resources"]["listeners"])
        .flat_map(|l| array(&l["filter_chains"]))
        .flat_map(|fc| array(&fc["filters"]))
        .filter(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .map(|f| &f["typed_config"])
}

/// The plugin configuration JSON text of a filter entry: the wasm filter's `configuration` or the
/// dynamic module's `filter_config` (a `StringValue`, or a plain string).
fn plugin_configuration(filter: &Value) -> Option<String> {
    let config = match filter["name"].as_str() {
        Some("envoy.filters.http.wasm") => &filter["typed_config"]["config"]["configuration"],
        Some(NATIVE_FILTER) => &filter["typed_config"]["filter_config"],
        _ => return None,
    };
    config["value"].as_str().or(config.as_str()).map(str::to_string)
}

fn matches_header(route: &Value, header: &str, value: &str) -> bool {
    array(&route["match"]["headers"]).any(|h| {
        h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(header))
            && (h["string_match"]["exact"] == value || h["exact_match"] == value)
    })
}

fn find<'a>(clusters: &[&'a Value], name: &str) -> Option<&'a Value> {
    clusters.iter().copied().find(|c| c["name"] == name)
}

fn array(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

#[cfg(test)]
mod native_upstream_tests {
    use super::*;

    const CONFIG: &str = r#"{"providers":[{"name":"vllm","models":["llama-*"]},{"name":"openai","models":["gpt-*"]}],
        "fallbacks":[{"name":"ha","models":["m"],"attempts":[{"provider":"vllm"},{"provider":"openai"}]}]}"#;

    fn native(config: &str) -> Value {
        serde_json::json!({"name": NATIVE_FILTER, "typed_config": {
            "filter_name": "llm_header_forward",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config}}})
    }

    /// The shipped wiring of a chain, with `filters` in the chain cluster's `http_filters`.
    fn envoy(filters: Value) -> Value {
        let endpoint = |p: &str| {
            serde_json::json!({"lb_endpoints": [{"endpoint": {},
            "metadata": {"filter_metadata": {"llm_header_forward": {"provider": p}}}}]})
        };
        serde_json::json!({"static_resources": {
            "listeners": [{"filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                "typed_config": {"http_filters": [native(CONFIG)], "route_config": {"virtual_hosts": [{"routes": [
                    {"match": {"headers": [{"name": "x-llm-provider", "string_match": {"exact": "ha"}}]},
                     "route": {"cluster": "ha", "retry_policy": {"num_retries": 1,
                        "retry_on": "5xx,reset,connect-failure,refused-stream",
                        "retry_priority": {"name": PREVIOUS_PRIORITIES}}}}]}]}}}]}]}],
            "clusters": [
                {"name": "vllm", "load_assignment": {"endpoints": [endpoint("vllm")]}},
                {"name": "openai", "load_assignment": {"endpoints": [endpoint("openai")]}},
                {"name": "ha", "cluster_type": {"name": "envoy.clusters.aggregate",
                    "typed_config": {"clusters": ["vllm", "openai"]}},
                 "typed_extension_protocol_options": {HTTP_OPTIONS: {"http_filters": filters}}}]}})
    }

    fn problems(envoy: &Value) -> Vec<String> {
        let text = listener_plugin_configs(envoy).into_iter().next().expect("the native listener filter is found");
        let policy = Policy::from_json(text.as_bytes()).expect("valid");
        check(&policy, &serde_json::from_str(&text).expect("json"), envoy)
    }

    fn upstream_config() -> String {
        CONFIG.replacen('{', r#"{"role":"upstream","#, 1)
    }

    #[test]
    fn the_native_module_with_the_upstream_role_before_upstream_codec_is_accepted() {
        let codec = serde_json::json!({"name": "envoy.filters.http.upstream_codec"});
        let wired = envoy(serde_json::json!([native(&upstream_config()), codec]));
        assert_eq!(problems(&wired), Vec::<String>::new());
    }

    #[test]
    fn the_native_module_gets_the_same_wiring_problems_as_the_wasm_filter() {
        let codec = serde_json::json!({"name": "envoy.filters.http.upstream_codec"});
        let no_role = problems(&envoy(serde_json::json!([native(CONFIG), codec.clone()])));
        assert_eq!(no_role.len(), 1, "{no_role:?}");
        assert!(no_role[0].contains("has no llm-header-forward filter (wasm or native) with \"role\": \"upstream\""));
        let codec_first = problems(&envoy(serde_json::json!([codec, native(&upstream_config())])));
        assert_eq!(codec_first.len(), 1, "{codec_first:?}");
        assert!(codec_first[0].contains("must be followed by envoy.filters.http.upstream_codec"), "{codec_first:?}");
        let other = upstream_config().replace(r#""models":["gpt-*"]"#, r#""models":["o1*"]"#);
        let codec = serde_json::json!({"name": "envoy.filters.http.upstream_codec"});
        let differs = problems(&envoy(serde_json::json!([native(&other), codec])));
        assert_eq!(differs.len(), 1, "{differs:?}");
        assert!(differs[0].contains("differs from the listener's"), "{differs:?}");
    }
}
