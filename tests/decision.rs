//! The whole decision, driven the way Envoy drives the filter (headers, body chunks, end), natively.
//! Each test states what the upstream would receive or what the client would get.

use llm_header_forward::decision::{Decision, Rewrite, SetRule};
use llm_header_forward::flow::{AfterHeaders, decide_complete, on_request_headers};
use llm_header_forward::policy::Policy;
use llm_header_forward::rejection::ErrorCode;

const CONFIG: &str = r#"{
  "blocked_headers": ["x-internal-*"],
  "providers": [
    {"name": "vllm", "models": ["llama-*"],
     "forward_headers": {"vllm_api_token": {"header": "authorization", "prefix": "Bearer "}, "tenant_id": "x-tenant-id"},
     "extra_headers": ["x-maas-*"], "set_headers": {"x-gateway": "llm"}},
    {"name": "openai", "models": ["gpt-*", "llama-3-special"],
     "forward_headers": {"openai_api_key": {"header": "authorization", "prefix": "Bearer "}}},
    {"name": "fallback", "models": [], "client_auth": "forward",
     "forward_headers": {"fallback_key": "x-api-key"}}
  ]
}"#;

fn policy(extra: &str) -> Policy {
    let json = if extra.is_empty() { CONFIG.to_string() } else { CONFIG.replacen('{', &format!("{{{extra},"), 1) };
    Policy::from_json(json.as_bytes()).expect("valid config")
}

type Headers = Vec<(String, Vec<u8>)>;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
}

fn json_request(extra: &[(&str, &str)]) -> Headers {
    let mut h =
        headers(&[(":method", "POST"), (":path", "/v1/chat/completions"), ("content-type", "application/json")]);
    h.extend(headers(extra));
    h
}

/// Runs a request through the flow, feeding the body in `chunk`-byte pieces.
fn run<'p>(p: &'p Policy, h: &Headers, body: Option<&str>, chunk: usize) -> Decision<'p> {
    decide_complete(p, h, body.map(|b| b.as_bytes().chunks(chunk.max(1))))
}

fn forwarded<'p>(d: Decision<'p>) -> Rewrite<'p> {
    match d {
        Decision::Forward(r) => r,
        Decision::Reject(r) => panic!("rejected: {} {}", r.code.as_str(), r.message),
    }
}

fn rejected(d: Decision) -> ErrorCode {
    match d {
        Decision::Reject(r) => r.code,
        Decision::Forward(r) => panic!("forwarded: {}", r.summary()),
    }
}

/// What the upstream receives.
fn upstream(h: &Headers, r: &Rewrite) -> Vec<(String, String)> {
    r.apply_to(h).into_iter().map(|(n, v)| (n, String::from_utf8(v).expect("utf8"))).collect()
}

fn get<'a>(up: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    up.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn model_in_body_selects_provider_whatever_the_chunking() {
    let p = policy("");
    let body = r#"{"messages":[{"role":"user","content":"hello \"model\": x"}],"model":"llama-3-8b"}"#;
    let h = json_request(&[("x-llm-provider", "openai"), ("x-llamastack-provider-data", r#"{"vllm_api_token":"k1"}"#)]);
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let r = forwarded(run(&p, &h, Some(body), chunk));
        let up = upstream(&h, &r);
        assert_eq!(get(&up, "x-llm-provider"), ["vllm"], "chunk {chunk}");
        assert_eq!(get(&up, "x-llm-model"), ["llama-3-8b"]);
        assert_eq!(get(&up, "authorization"), ["Bearer k1"]);
        assert_eq!(get(&up, "x-gateway"), ["llm"]);
        assert!(get(&up, "x-llamastack-provider-data").is_empty());
    }
}

#[test]
fn exact_model_name_beats_an_earlier_pattern() {
    let p = policy("");
    let h = json_request(&[]);
    let r = forwarded(run(&p, &h, Some(r#"{"model":"llama-3-special"}"#), 4096));
    assert_eq!(r.provider, Some("openai"));
}

#[test]
fn request_without_body_is_not_rejected_and_sets_no_routing_header() {
    let p = policy("");
    let h = headers(&[
        (":method", "GET"),
        (":path", "/v1/models"),
        ("x-llm-provider", "openai"),
        ("x-llamastack-provider-data", "not even json"),
        ("authorization", "Bearer gateway-secret"),
        ("x-envoy-retry-on", "5xx"),
        ("cookie", "c=1"),
        ("x-custom", "kept"),
    ]);
    let r = forwarded(run(&p, &h, None, 0));
    let up = upstream(&h, &r);
    assert_eq!(r.provider, None);
    let names: Vec<&str> = up.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [":method", ":path", "x-custom"]);
}

#[test]
fn request_without_body_uses_the_default_providers_rules() {
    let p = policy(r#""routing":{"unknown_model":"fallback"}"#);
    let h = headers(&[
        (":method", "GET"),
        ("authorization", "Bearer byok"),
        ("x-llamastack-provider-data", r#"{"fallback_key":"fk","vllm_api_token":"no"}"#),
    ]);
    let r = forwarded(run(&p, &h, None, 0));
    let up = upstream(&h, &r);
    assert_eq!(get(&up, "x-llm-provider"), ["fallback"]);
    assert!(get(&up, "x-llm-model").is_empty());
    assert_eq!(get(&up, "authorization"), ["Bearer byok"], "fallback forwards client auth");
    assert_eq!(get(&up, "x-api-key"), ["fk"]);
}

#[test]
fn unknown_or_missing_model() {
    let p = policy("");
    let h = json_request(&[]);
    assert_eq!(rejected(run(&p, &h, Some(r#"{"model":"mistral"}"#), 9)), ErrorCode::ModelNotFound);
    assert_eq!(rejected(run(&p, &h, Some(r#"{"messages":[]}"#), 9)), ErrorCode::ModelNotFound);
    let p = policy(r#""routing":{"unknown_model":"fallback"}"#);
    let r = forwarded(run(&p, &h, Some(r#"{"model":"mistral"}"#), 9));
    assert_eq!((r.provider, r.model.as_deref()), (Some("fallback"), Some("mistral")));
}

#[test]
fn body_problems_have_their_codes() {
    let p = policy(r#""body":{"max_bytes":64}"#);
    let h = json_request(&[]);
    let cases = [
        (r#"{"model":"llama-3","model":"gpt-4"}"#, ErrorCode::DuplicateModel),
        (r#"{"model":7}"#, ErrorCode::InvalidModel),
        (r#"{"model":"llama\r\nx: y"}"#, ErrorCode::InvalidModel),
        (r#"{"model":"llama-3""#, ErrorCode::InvalidJson),
        (r#"{"model":"llama-3"} {}"#, ErrorCode::InvalidJson),
    ];
    for (body, code) in cases {
        assert_eq!(rejected(run(&p, &h, Some(body), 5)), code, "{body}");
    }
    let big = format!(r#"{{"model":"llama-3","pad":"{}"}}"#, "x".repeat(64));
    assert_eq!(rejected(run(&p, &h, Some(&big), 16)), ErrorCode::RequestTooLarge);
}

#[test]
fn decided_in_the_headers_phase_when_the_body_cannot_help() {
    let p = policy(r#""body":{"max_bytes":64}"#);
    let too_long = json_request(&[("content-length", "65")]);
    assert!(
        matches!(on_request_headers(&p, &too_long, false), AfterHeaders::Decided(Decision::Reject(r)) if r.code == ErrorCode::RequestTooLarge)
    );
    let gzip = json_request(&[("content-encoding", "gzip")]);
    assert!(
        matches!(on_request_headers(&p, &gzip, false), AfterHeaders::Decided(Decision::Reject(r)) if r.code == ErrorCode::UnsupportedContentEncoding)
    );
    let identity = json_request(&[("content-encoding", "identity")]);
    assert!(matches!(on_request_headers(&p, &identity, false), AfterHeaders::ReadBody(_)));
    let text = headers(&[("content-type", "text/plain")]);
    assert!(matches!(on_request_headers(&p, &text, false), AfterHeaders::Decided(Decision::Forward(_))));
    let empty = json_request(&[("content-length", "0")]);
    assert!(matches!(on_request_headers(&p, &empty, false), AfterHeaders::Decided(Decision::Forward(_))));
}

#[test]
fn no_providers_means_the_body_is_never_read() {
    let p = Policy::from_json(br#"{"providers":[]}"#).expect("valid");
    let h = json_request(&[("x-llamastack-provider-data", "{}"), ("x-api-key", "k")]);
    let AfterHeaders::Decided(d) = on_request_headers(&p, &h, false) else { panic!("body read") };
    let up = upstream(&h, &forwarded(d));
    assert!(get(&up, "x-llamastack-provider-data").is_empty() && get(&up, "x-api-key").is_empty());
}

#[test]
fn provider_data_problems_have_their_codes() {
    let p = policy("");
    let body = r#"{"model":"llama-3"}"#;
    let cases: [(&[(&str, &str)], ErrorCode); 6] = [
        (&[("x-llamastack-provider-data", "{}"), ("x-ogx-provider-data", "{}")], ErrorCode::ConflictingProviderData),
        (
            &[("x-llamastack-provider-data", "{}"), ("x-llamastack-provider-data", "{}")],
            ErrorCode::ConflictingProviderData,
        ),
        (&[("x-llamastack-provider-data", "nope")], ErrorCode::InvalidProviderData),
        (&[("x-llamastack-provider-data", "[]")], ErrorCode::InvalidProviderData),
        (
            &[("x-llamastack-provider-data", r#"{"vllm_extra_headers":{"X-Internal-Trace":"1"}}"#)],
            ErrorCode::BlockedHeader,
        ),
        (&[("x-llamastack-provider-data", r#"{"vllm_api_token":"a\u0000"}"#)], ErrorCode::InvalidHeaderValue),
    ];
    for (extra, code) in cases {
        assert_eq!(rejected(run(&p, &json_request(extra), Some(body), 100)), code, "{extra:?}");
    }
    let big = format!(r#"{{"pad":"{}"}}"#, "p".repeat(16384));
    assert_eq!(
        rejected(run(&p, &json_request(&[("x-ogx-provider-data", &big)]), Some(body), 100)),
        ErrorCode::ProviderDataTooLarge
    );
}

#[test]
fn another_providers_data_never_reaches_this_provider() {
    let p = policy("");
    let data = r#"{"vllm_api_token":"v","openai_api_key":"o","vllm_extra_headers":{"x-maas-t":"1"},"openai_extra_headers":{"x-maas-o":"2"}}"#;
    let h = json_request(&[("x-llamastack-provider-data", data)]);
    let r = forwarded(run(&p, &h, Some(r#"{"model":"gpt-4o"}"#), 100));
    let up = upstream(&h, &r);
    assert_eq!(get(&up, "authorization"), ["Bearer o"]);
    assert!(get(&up, "x-maas-t").is_empty() && get(&up, "x-maas-o").is_empty());
}

#[test]
fn every_header_change_names_its_rule() {
    let p = policy("");
    let h = json_request(&[(
        "x-llamastack-provider-data",
        r#"{"vllm_api_token":"k","tenant_id":"t","vllm_extra_headers":{"x-maas-a":"1"}}"#,
    )]);
    let r = forwarded(run(&p, &h, Some(r#"{"model":"llama-3"}"#), 100));
    let rules: Vec<String> = r.set.iter().map(|a| format!("{}={}", a.name, a.rule)).collect();
    assert_eq!(
        rules,
        [
            r#"x-tenant-id=forward_headers "tenant_id""#,
            r#"authorization=forward_headers "vllm_api_token""#,
            r#"x-maas-a=vllm_extra_headers allowed by extra_headers "x-maas-*""#,
            "x-gateway=set_headers",
            "x-llm-provider=routing.provider_header",
            "x-llm-model=routing.model_header",
        ]
    );
    assert!(matches!(r.set[4].rule, SetRule::ProviderHeader));
    let summary = r.summary();
    assert!(summary.contains("x-maas-a") && !summary.contains("Bearer k"), "{summary}");
}

const RENAMING: &str = r#"{"providers": [
  {"name": "maas", "models": ["llama-*"],
   "forward_headers": {"tenant": "x-tenant-id"},
   "client_headers": {"rename": {"X-Customer-Id": "x-maas-customer", "x-team": "x-tenant-id", "x-a": "x-b", "x-b": "x-c"}},
   "set_headers": {"x-gateway": "llm"},
   "default_headers": {"x-maas-customer": "anonymous", "x-tier": "free"}},
  {"name": "anthropic", "models": ["claude-*"],
   "client_headers": {"forward": ["anthropic-*"]},
   "default_headers": {"anthropic-version": "2023-06-01"}}
]}"#;

#[test]
fn rename_sends_the_clients_header_under_the_new_name_and_records_the_rule() {
    let p = Policy::from_json(RENAMING.as_bytes()).expect("valid");
    let h = json_request(&[("X-Customer-Id", "c-1"), ("x-customer-id", "c-2"), ("x-kept", "k")]);
    let r = forwarded(run(&p, &h, Some(r#"{"model":"llama-3"}"#), 7));
    let up = upstream(&h, &r);
    assert_eq!(get(&up, "x-maas-customer"), ["c-1, c-2"], "both values, under the new name");
    assert!(get(&up, "x-customer-id").is_empty() && get(&up, "X-Customer-Id").is_empty());
    assert_eq!(get(&up, "x-kept"), ["k"]);
    assert_eq!(get(&up, "x-tier"), ["free"], "default: nothing else supplied it");
    let rules: Vec<String> = r.set.iter().map(|a| format!("{}={}", a.name, a.rule)).collect();
    assert!(rules.contains(&r#"x-maas-customer=client_headers.rename from "x-customer-id""#.to_string()), "{rules:?}");
    assert!(rules.contains(&"x-tier=default_headers".to_string()), "{rules:?}");
    let removed: Vec<String> = r.remove.iter().map(|x| format!("{}={}", x.name, x.rule)).collect();
    assert_eq!(removed, [r#"x-customer-id=client_headers.rename to "x-maas-customer""#]);
    assert!(r.summary().contains(r#"+"x-maas-customer"(client_headers.rename from "x-customer-id")"#));
    assert!(!r.summary().contains("c-1"), "logs never show values");
}

#[test]
fn provider_data_and_set_headers_win_over_a_renamed_header() {
    let p = Policy::from_json(RENAMING.as_bytes()).expect("valid");
    let h = json_request(&[("x-team", "from-client"), ("x-llamastack-provider-data", r#"{"tenant":"from-pd"}"#)]);
    let up = upstream(&h, &forwarded(run(&p, &h, Some(r#"{"model":"llama-3"}"#), 100)));
    assert_eq!(get(&up, "x-tenant-id"), ["from-pd"]);
    assert!(get(&up, "x-team").is_empty(), "the source is still removed");
    let h = json_request(&[("x-team", "from-client")]);
    let up = upstream(&h, &forwarded(run(&p, &h, Some(r#"{"model":"llama-3"}"#), 100)));
    assert_eq!(get(&up, "x-tenant-id"), ["from-client"]);
}

#[test]
fn renames_apply_to_the_clients_names_not_to_each_others_results() {
    let p = Policy::from_json(RENAMING.as_bytes()).expect("valid");
    let h = json_request(&[("x-a", "1"), ("x-b", "2")]);
    let up = upstream(&h, &forwarded(run(&p, &h, Some(r#"{"model":"llama-3"}"#), 100)));
    assert_eq!((get(&up, "x-b"), get(&up, "x-c")), (vec!["1"], vec!["2"]));
    assert!(get(&up, "x-a").is_empty());
}

#[test]
fn default_headers_never_override_what_the_request_has() {
    let p = Policy::from_json(RENAMING.as_bytes()).expect("valid");
    let claude = Some(r#"{"model":"claude-3"}"#);
    // The SDK's newer anthropic-version is kept; without one, the default fills in.
    let h = json_request(&[("anthropic-version", "2025-01-01")]);
    let r = forwarded(run(&p, &h, claude, 100));
    assert_eq!(get(&upstream(&h, &r), "anthropic-version"), ["2025-01-01"]);
    assert!(!r.set.iter().any(|a| a.name == "anthropic-version"));
    let h = json_request(&[]);
    assert_eq!(get(&upstream(&h, &forwarded(run(&p, &h, claude, 100))), "anthropic-version"), ["2023-06-01"]);
    // A renamed header counts as supplied; a client header the rules removed does not.
    let h = json_request(&[("x-customer-id", "c-1")]);
    assert_eq!(
        get(&upstream(&h, &forwarded(run(&p, &h, Some(r#"{"model":"llama-3"}"#), 100))), "x-maas-customer"),
        ["c-1"]
    );
    let p2 = Policy::from_json(
        br#"{"providers":[{"name":"a","models":["m"],"default_headers":{"anthropic-version":"2023-06-01"}}]}"#,
    )
    .expect("valid");
    let h = json_request(&[("anthropic-version", "2025-01-01")]);
    let r = forwarded(run(&p2, &h, Some(r#"{"model":"m"}"#), 100));
    assert_eq!(get(&upstream(&h, &r), "anthropic-version"), ["2023-06-01"], "not allowlisted: removed, then defaulted");
}

#[test]
fn a_renamed_value_is_checked_like_every_value_the_filter_sets() {
    let p = Policy::from_json(RENAMING.as_bytes()).expect("valid");
    let llama = Some(r#"{"model":"llama-3"}"#);
    let h = json_request(&[("x-customer-id", "a\u{1}b")]);
    assert_eq!(rejected(run(&p, &h, llama, 100)), ErrorCode::InvalidHeaderValue);
    let mut h = json_request(&[]);
    h.push(("x-customer-id".into(), vec![0xff, b'a']));
    assert_eq!(rejected(run(&p, &h, llama, 100)), ErrorCode::InvalidHeaderValue);
    let h = json_request(&[("x-customer-id", &"v".repeat(8193))]);
    assert_eq!(rejected(run(&p, &h, llama, 100)), ErrorCode::HeaderValueTooLong);
    // A request for another provider is not affected by this provider's renames.
    let h = json_request(&[("x-customer-id", "a\u{1}b")]);
    forwarded(run(&p, &h, Some(r#"{"model":"claude-3"}"#), 100));
}
