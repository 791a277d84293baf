//! Fallback chains (SPEC §8): the downstream judgement and the per-attempt decision on one shared
//! header map, natively. Each test states what a provider receives or what the client gets.

use llm_header_forward::attempt::{Attempt, decide_attempt};
use llm_header_forward::attempt_testkit::{ChainCase, attempt_violations, chain_policies, check_attempts, run_chain};
use llm_header_forward::decision::{Decision, Rewrite};
use llm_header_forward::flow::decide_complete;
use llm_header_forward::handover::Handover;
use llm_header_forward::policy::Policy;
use llm_header_forward::rejection::ErrorCode;
use proptest::prelude::*;

type Headers = Vec<(String, Vec<u8>)>;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut h: Headers = vec![
        (":method".into(), b"POST".to_vec()),
        (":path".into(), b"/v1/chat/completions".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
    ];
    h.extend(pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())));
    h
}

fn policy() -> &'static Policy {
    &chain_policies()[0]
}

fn downstream<'p>(p: &'p Policy, h: &Headers, model: &str) -> Decision<'p> {
    let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
    decide_complete(p, h, Some([body.as_bytes()]))
}

fn forwarded<'p>(d: Decision<'p>) -> Rewrite<'p> {
    match d {
        Decision::Forward(r) => r,
        Decision::Reject(r) => panic!("rejected: {} {}", r.code.as_str(), r.message),
    }
}

fn get<'h>(h: &'h Headers, name: &str) -> Vec<&'h str> {
    h.iter().filter(|(n, _)| n == name).map(|(_, v)| std::str::from_utf8(v).unwrap_or("?")).collect()
}

#[test]
fn every_chain_test_configuration_is_valid() {
    use llm_header_forward::attempt_testkit::CHAIN_POLICIES;
    for c in CHAIN_POLICIES {
        assert!(Policy::from_json(c.as_bytes()).is_ok(), "{:?}", Policy::from_json(c.as_bytes()).err());
    }
    assert_eq!(chain_policies().len(), CHAIN_POLICIES.len());
}

#[test]
fn a_chain_model_beats_a_provider_pattern_and_exact_beats_pattern() {
    let p = Policy::from_json(
        br#"{"providers":[{"name":"vllm","models":["llama-*"]},{"name":"openai","models":["gpt-*"]}],
            "fallbacks":[{"name":"any","models":["llama-*"],"attempts":[{"provider":"vllm"},{"provider":"openai"}]},
                         {"name":"exact","models":["llama-3-70b"],"attempts":[{"provider":"openai"},{"provider":"vllm"}]}]}"#,
    )
    .expect("valid");
    let rw = forwarded(downstream(&p, &headers(&[]), "llama-3-70b"));
    assert_eq!((rw.chain, rw.provider), (Some("exact"), None));
    assert_eq!(forwarded(downstream(&p, &headers(&[]), "llama-3-8b")).chain, Some("any"));
    assert_eq!(forwarded(downstream(&p, &headers(&[]), "gpt-4o")).provider, Some("openai"));
}

#[test]
fn chain_config_problems_are_all_reported() {
    let e = Policy::from_json(
        br#"{"providers":[{"name":"vllm","models":[]},{"name":"openai","models":[]}],
            "fallbacks":[{"name":"vllm","models":[""],"attempts":[{"provider":"vllm"}]},
                         {"name":"dup","models":["m"],"attempts":[{"provider":"openai"},{"provider":"openai"},{"provider":"nope","model":"a\nb"}]},
                         {"name":"dup","models":["n"],"attempts":[{"provider":"vllm"},{"provider":"openai"}],"colour":1}],
            "role":"sideways"}"#,
    )
    .expect_err("invalid")
    .to_string();
    for needle in [
        "role:",
        "fallbacks[2]:",
        "a provider has the same name",
        "empty model pattern",
        "needs 2 or more attempts",
        "\"openai\" appears twice",
        "\"nope\" is not a configured provider",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in {e}");
    }
}

#[test]
fn downstream_routes_to_the_chain_and_holds_back_what_some_provider_must_not_get() {
    let p = policy();
    let h = headers(&[
        ("authorization", "Bearer client-key"),
        ("x-llm-provider", "openai"),
        ("cookie", "s=1"),
        ("x-other", "kept-by-vllm-and-openai"),
        ("x-llamastack-provider-data", r#"{"vllm_api_token":"sk-vllm","openai_api_key":"sk-openai"}"#),
    ]);
    let rw = forwarded(downstream(p, &h, "llama-3-70b"));
    let map = rw.apply_to(&h);
    assert_eq!(get(&map, "x-llm-provider"), ["ha2"]);
    assert_eq!(get(&map, "x-llm-model"), ["llama-3-70b"]);
    for gone in ["authorization", "cookie", "x-llamastack-provider-data"] {
        assert!(get(&map, gone).is_empty(), "{gone} left downstream");
    }
    assert_eq!(get(&map, "x-other"), ["kept-by-vllm-and-openai"]);
    let handover = Handover::decode(rw.handover.as_deref().expect("handover")).expect("decodes");
    assert_eq!(handover.chain, "ha2");
    assert_eq!(handover.withheld, [("authorization".to_string(), b"Bearer client-key".to_vec())]);
    assert!(!handover.withheld.iter().any(|(n, _)| n == "cookie" || n == "x-llm-provider"));
}

#[test]
fn provider_data_invalid_for_a_later_provider_is_rejected_before_any_attempt() {
    // vllm accepts this provider data; openai (the second attempt) has tenant-free rules but
    // anthropic (first in ha3) refuses an object for a forward_headers key.
    let p = policy();
    let h = headers(&[("x-llamastack-provider-data", r#"{"anthropic_api_key":{"not":"a string"}}"#)]);
    let Decision::Reject(r) = downstream(p, &h, "ha3/x") else { panic!("accepted") };
    assert_eq!(r.code, ErrorCode::InvalidProviderData);
    let h = headers(&[("x-llamastack-provider-data", r#"{"openai_extra_headers":{"x-forwarded-for":"6.6.6.6"}}"#)]);
    let Decision::Reject(r) = downstream(p, &h, "llama-3-70b") else { panic!("accepted") };
    assert_eq!(r.code, ErrorCode::BlockedHeader, "openai, the second attempt, refuses it");
}

#[test]
fn strict_then_byok_restores_the_clients_credential_only_for_the_second() {
    let p = policy();
    let case = ChainCase {
        policy: 0,
        headers: headers(&[
            ("authorization", "Bearer client-own"),
            ("x-llamastack-provider-data", r#"{"vllm_api_token":"sk-gateway"}"#),
        ]),
        model: "strict-then-byok".into(),
        order: vec![0, 1],
        keep_record: true,
    };
    let results = run_chain(p, &case).expect("chain");
    assert_eq!(get(&results[0].map, "authorization"), ["Bearer sk-gateway"]);
    assert_eq!(get(&results[0].map, "x-llm-provider"), ["vllm"]);
    assert_eq!(get(&results[0].map, "x-gateway"), ["vllm"]);
    assert_eq!(get(&results[1].map, "authorization"), ["Bearer client-own"]);
    assert_eq!(get(&results[1].map, "x-llm-provider"), ["byok"]);
    assert!(get(&results[1].map, "x-gateway").is_empty(), "vllm's set_headers undone");
    for r in &results {
        assert_eq!(attempt_violations(r), Vec::<String>::new());
    }
}

#[test]
fn the_override_model_is_the_attempts_body_and_model_header() {
    let p = policy();
    let case = ChainCase {
        policy: 0,
        headers: headers(&[("content-length", "42")]),
        model: "llama-3-70b".into(),
        order: vec![0, 1, 0],
        keep_record: false,
    };
    let results = run_chain(p, &case).expect("chain");
    assert_eq!(results[0].model, None);
    assert_eq!(results[1].model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(get(&results[1].map, "x-llm-model"), ["gpt-4o-mini"]);
    assert_eq!(get(&results[2].map, "x-llm-model"), ["llama-3-70b"]);
    assert_eq!(get(&results[2].map, "content-length"), ["42"], "the original body's length is put back");
}

#[test]
fn the_upstream_role_fails_closed() {
    let p = policy();
    let h = headers(&[]);
    let rw = forwarded(downstream(p, &h, "llama-3-70b"));
    let map = rw.apply_to(&h);
    let handover = rw.handover.as_deref();
    let refused = |a: Attempt| match a {
        Attempt::Refuse(r) => r.code,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(refused(decide_attempt(p, handover, &map, None, &[])), ErrorCode::FallbackMisconfigured);
    assert_eq!(refused(decide_attempt(p, handover, &map, Some(b"anthropic"), &[])), ErrorCode::FallbackMisconfigured);
    assert_eq!(refused(decide_attempt(p, handover, &map, Some(b"nobody"), &[])), ErrorCode::FallbackMisconfigured);
    assert_eq!(
        refused(decide_attempt(p, Some(b"\x01garbage"), &map, Some(b"vllm"), &[])),
        ErrorCode::FallbackMisconfigured
    );
    // No handover, but the routing header names a chain: the downstream role did not run.
    assert_eq!(refused(decide_attempt(p, None, &map, Some(b"vllm"), &[])), ErrorCode::FallbackMisconfigured);
    // No handover and not a chain: untouched.
    let plain = headers(&[("x-llm-provider", "vllm")]);
    assert_eq!(decide_attempt(p, None, &plain, Some(b"vllm"), &[]), Attempt::Untouched);
    assert_eq!(decide_attempt(p, None, &headers(&[]), None, &[]), Attempt::Untouched);
}

#[test]
fn a_client_naming_the_chain_in_the_routing_header_gets_nothing_special() {
    let p = policy();
    // A model served by one provider, the chain's name in the routing header: routed by the model.
    let h = headers(&[("x-llm-provider", "ha2")]);
    let rw = forwarded(downstream(p, &h, "gpt-4o"));
    assert_eq!((rw.provider, rw.chain, rw.handover.is_none()), (Some("openai"), None, true));
    assert_eq!(get(&rw.apply_to(&h), "x-llm-provider"), ["openai"]);
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// One shared header map driven through attempts of 2- and 3-provider chains with overlapping
    /// header names: each attempt ends with exactly what its own provider's rules produce.
    #[test]
    fn every_attempt_carries_only_its_own_providers_headers(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_attempts(&data);
    }
}
