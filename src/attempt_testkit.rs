//! Fallback chains driven the way Envoy drives them (SPEC §8), for property tests and the `attempt`
//! fuzz target: the downstream role once, then the upstream role once per attempt on ONE shared
//! header map. The invariant: after every attempt the map holds exactly what this provider's own
//! rules produce for the original request — nothing another provider's rules produced, whatever
//! the earlier attempts did. The filter never calls this.

use crate::attempt::{Attempt, decide_attempt};
use crate::decision::{Decision, Headers, provider_data_header, rewrite_for};
use crate::flow::decide_complete;
use crate::policy::Policy;
use crate::testkit::Bytes;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// Chains of 2 and 3 providers whose rules overlap on purpose: several providers set, forward,
/// strip or keep the same header names.
pub const CHAIN_POLICIES: &[&str] = &[
    r#"{"blocked_headers":["x-internal-*"],"providers":[
        {"name":"vllm","models":["llama-*"],"forward_headers":{"vllm_api_token":{"header":"authorization","prefix":"Bearer "},"tenant":"x-tenant"},"extra_headers":["x-maas-*","x-shared"],"set_headers":{"x-gateway":"vllm"},"remove_headers":["x-debug"],"client_headers":{"mode":"allowlist","forward":["x-*"],"rename":{"x-custom":"x-shared"}},"default_headers":{"x-tenant":"default-vllm"}},
        {"name":"openai","models":["gpt-*"],"client_auth":"forward","forward_headers":{"openai_api_key":{"header":"authorization","prefix":"Bearer "}},"extra_headers":["x-*"],"generic_extra_headers":true,"client_headers":{"mode":"allowlist","forward":["x-*","openai-*"]}},
        {"name":"anthropic","models":["claude-*"],"forward_headers":{"anthropic_api_key":"x-api-key","tenant":"x-tenant"},"extra_headers":["anthropic-*","x-shared"],"set_headers":{"x-gateway":"anthropic"},"default_headers":{"anthropic-version":"2023-06-01","x-custom":"default-anthropic"},"client_headers":{"mode":"allowlist","forward":["anthropic-*","x-shared"]}},
        {"name":"byok","models":["byok-*"],"client_auth":"forward","client_headers":{"mode":"all","drop":["x-stainless-*","x-maas-*"]}}],
      "fallbacks":[
        {"name":"ha2","models":["llama-3-70b"],"attempts":[{"provider":"vllm"},{"provider":"openai","model":"gpt-4o-mini"}]},
        {"name":"ha3","models":["ha3/*"],"attempts":[{"provider":"anthropic"},{"provider":"vllm","model":"llama-3-8b"},{"provider":"openai"}]},
        {"name":"byok-last","models":["strict-then-byok"],"attempts":[{"provider":"vllm"},{"provider":"byok"}]}]}"#,
    r#"{"on_invalid":"drop","routing":{"provider_header":"x-route","model_header":"x-route-model"},"providers":[
        {"name":"a","models":["a-*"],"forward_headers":{"k":"x-k","tenant":"x-tenant"},"extra_headers":["x-*"],"generic_extra_headers":true,"client_auth":"forward"},
        {"name":"b","models":["b-*"],"forward_headers":{"k":"authorization"},"extra_headers":["x-k","x-shared"],"set_headers":{"x-tenant":"static-b"}},
        {"name":"c","models":["c-*"],"client_headers":{"mode":"allowlist","forward":["x-shared"]},"set_headers":{"x-k":"static-c"}}],
      "fallbacks":[
        {"name":"abc","models":["*"],"attempts":[{"provider":"a"},{"provider":"b","model":"b-1"},{"provider":"c"}]},
        {"name":"cb","models":["cb"],"attempts":[{"provider":"c"},{"provider":"b"}]}]}"#,
];

pub fn chain_policies() -> &'static [Policy] {
    static P: OnceLock<Vec<Policy>> = OnceLock::new();
    P.get_or_init(|| CHAIN_POLICIES.iter().filter_map(|c| Policy::from_json(c.as_bytes()).ok()).collect())
}

const NAMES: &[&str] = &[
    "authorization",
    "Authorization",
    "x-api-key",
    "api-key",
    "x-gateway",
    "x-tenant",
    "x-k",
    "x-shared",
    "x-maas-tier",
    "x-debug",
    "x-custom",
    "x-stainless-os",
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "cookie",
    "x-envoy-retry-on",
    "x-llm-provider",
    "x-llm-model",
    "x-route",
    "x-internal-trace",
    "user-agent",
];
const VALUES: &[&str] = &["client-secret", "Bearer client", "v1", "", "2024-01-01", "ha2", "vllm"];
const MODELS: &[&str] = &["llama-3-70b", "ha3/x", "strict-then-byok", "cb", "a-1", "gpt-4o"];
const KEYS: &[&str] = &[
    "vllm_api_token",
    "openai_api_key",
    "anthropic_api_key",
    "tenant",
    "k",
    "vllm_extra_headers",
    "openai_extra_headers",
    "anthropic_extra_headers",
    "a_extra_headers",
    "b_extra_headers",
    "extra_headers",
];

/// A chain request: configuration, client headers, model, and the order in which attempts reach
/// providers (any order, repeats included: "whatever earlier attempts did").
#[derive(Debug, Clone)]
pub struct ChainCase {
    pub policy: usize,
    pub headers: Vec<(String, Vec<u8>)>,
    pub model: String,
    /// Indexes into the chain's attempts.
    pub order: Vec<usize>,
    /// Whether the upstream role's record of earlier attempts survives between attempts.
    pub keep_record: bool,
}

impl ChainCase {
    pub fn from_bytes(data: &[u8]) -> ChainCase {
        let mut b = Bytes::new(data);
        let policy = b.below(chain_policies().len());
        let mut headers = vec![
            (":method".to_string(), b"POST".to_vec()),
            (":path".to_string(), b"/v1/chat/completions".to_vec()),
            ("content-type".to_string(), b"application/json".to_vec()),
        ];
        for _ in 0..b.below(10) {
            let name = b.pick(NAMES).to_ascii_lowercase();
            let value = if b.below(4) == 0 {
                let n = b.below(12);
                String::from_utf8_lossy(b.take(n)).into_owned()
            } else {
                b.pick(VALUES).to_string()
            };
            headers.push((name, value.into_bytes()));
        }
        if b.below(2) == 0 {
            // One content-length, as Envoy allows (an attempt that rewrites the model changes it).
            headers.push(("content-length".to_string(), b.below(1000).to_string().into_bytes()));
        }
        if b.below(5) != 0 {
            let mut map = Map::new();
            for _ in 0..b.below(6) {
                let key = b.pick(KEYS);
                let value = if key.ends_with("extra_headers") {
                    let mut extra = Map::new();
                    for _ in 0..b.below(4) {
                        extra.insert(b.pick(NAMES).to_string(), json!(b.pick(VALUES)));
                    }
                    Value::Object(extra)
                } else {
                    json!(b.pick(VALUES))
                };
                map.insert(key.to_string(), value);
            }
            let header = match policy {
                0 => "x-llamastack-provider-data",
                _ => "x-ogx-provider-data",
            };
            headers.push((header.to_string(), Value::Object(map).to_string().into_bytes()));
        }
        let model = b.pick(MODELS).to_string();
        let order = (0..1 + b.below(4)).map(|_| b.below(3)).collect();
        let keep_record = b.below(4) != 0;
        ChainCase { policy, headers, model, order, keep_record }
    }
}

/// The shared header map after each attempt, next to what the attempt's provider alone would get.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub provider: String,
    pub map: Vec<(String, Vec<u8>)>,
    pub expected: Vec<(String, Vec<u8>)>,
    pub model: Option<String>,
}

// Test support: a refused attempt or a provider refusing what the downstream role accepted is a
// finding, reported by panicking like an assertion.
#[allow(clippy::panic)]
/// Runs a chain request: `None` when it is not a chain request or is rejected downstream (then no
/// attempt happens). Panics when an attempt is refused or a decision is not a chain decision.
pub fn run_chain(policy: &Policy, case: &ChainCase) -> Option<Vec<AttemptResult>> {
    let body = json!({"model": case.model, "messages": []}).to_string();
    let Decision::Forward(downstream) = decide_complete(policy, &case.headers, Some([body.as_bytes()])) else {
        return None;
    };
    let chain = policy.chain_index(downstream.chain?).and_then(|i| policy.chains.get(i))?;
    let handover = downstream.handover.clone();
    let mut map = downstream.apply_to(&case.headers);
    let mut earlier: Vec<String> = Vec::new();
    let mut results = Vec::new();
    let provider_data = provider_data_header(policy, &case.headers).ok().flatten();
    for &i in &case.order {
        let Some(attempt) = chain.attempts.get(i % chain.attempts.len()) else { continue };
        let provider = &policy.providers[attempt.provider];
        let plan = match decide_attempt(policy, handover.as_deref(), &map, Some(provider.name.as_bytes()), &earlier) {
            Attempt::Apply(plan) => plan,
            other => panic!("attempt for {} not applied: {other:?}", provider.name),
        };
        map = plan.apply_to(&map);
        earlier = if case.keep_record { plan.set_names() } else { Vec::new() };
        let model = attempt.model.clone().unwrap_or_else(|| case.model.clone());
        let single = rewrite_for(policy, Some(provider), Some(model), &case.headers, provider_data)
            .unwrap_or_else(|r| panic!("accepted downstream but {} rejects: {r:?}", provider.name));
        results.push(AttemptResult {
            provider: provider.name.clone(),
            map: map.clone(),
            expected: single.apply_to(&case.headers),
            model: plan.model.map(str::to_string),
        });
    }
    Some(results)
}

/// Every way an attempt's headers differ from what its own provider's rules produce.
pub fn attempt_violations(r: &AttemptResult) -> Vec<String> {
    let norm = |h: &Headers| {
        let mut v: Vec<(String, Vec<u8>)> = h.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
        v.sort();
        v
    };
    let (got, want) = (norm(&r.map), norm(&r.expected));
    let mut v = Vec::new();
    for h in &got {
        if !want.contains(h) {
            v.push(format!("{} received {:?}, which its own rules do not produce", r.provider, h.0));
        }
    }
    for h in &want {
        if !got.contains(h) {
            v.push(format!("{} did not receive {:?}", r.provider, h.0));
        }
    }
    if got.len() != want.len() && v.is_empty() {
        v.push(format!("{} received a header a different number of times", r.provider));
    }
    v
}

/// Fuzz/property entry point: panics (with the evidence) when an attempt carries anything but
/// what its own provider's rules produce.
pub fn check_attempts(data: &[u8]) {
    let case = ChainCase::from_bytes(data);
    let policy = &chain_policies()[case.policy];
    let Some(results) = run_chain(policy, &case) else { return };
    for r in &results {
        let v = attempt_violations(r);
        assert!(v.is_empty(), "{v:?}\n{case:?}\nattempts: {results:#?}");
    }
}
