//! Carrying out an [`Attempt`] of the upstream role (SPEC §8) on a host: the order of the header
//! changes, the record left for the next attempt, the attempt counter and the refusal. Both glues
//! (proxy-wasm in `wasm/upstream.rs`, the Envoy dynamic module in `native/upstream.rs`) implement
//! [`AttemptHost`] with their host's calls and nothing else, so one test here covers both. Like
//! [`crate::outcome`] for the downstream role; a refusal is [`outcome::reject`] itself.

use crate::attempt::{Attempt, AttemptPlan};
use crate::counters;
use crate::handover::encode_names;
use crate::outcome::{self, Reply};
use crate::policy::Policy;
use crate::rejection::{ErrorCode, Rejection};

/// What the upstream role needs from its host besides answering and counting ([`Reply`]).
/// Failures are reported as `false` and only logged: the decision is already made.
pub trait AttemptHost: Reply {
    /// Removes every value of a request header from the map all attempts share.
    fn remove_header(&mut self, name: &str) -> bool;
    /// Sets a request header, replacing every value.
    fn set_header(&mut self, name: &str, value: &[u8]) -> bool;
    /// Adds one more value to a request header.
    fn add_header(&mut self, name: &str, value: &[u8]) -> bool;
    /// Leaves `names` (the header names this attempt set, [`encode_names`]) in Envoy filter state
    /// under [`crate::handover::ATTEMPTS_KEY`] for the attempts after it, replacing the last record.
    fn record_attempt(&mut self, names: &[u8]) -> bool;
}

/// What the glue does after the attempt's headers were carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome<'p> {
    /// Not a chain request, or fitted to its provider: let it go on. `model`: the body's `model`
    /// must be replaced with this before the body goes on ([`crate::model_rewrite`]);
    /// `original_length` is the client's `content-length`, if it sent one.
    Forwarded { model: Option<&'p str>, original_length: Option<usize> },
    /// A local reply was sent (never retried by Envoy): stop the attempt here.
    Replied,
}

/// Carries out `attempt`.
pub fn carry_out<'p>(policy: &'p Policy, attempt: Attempt<'p>, host: &mut impl AttemptHost) -> AttemptOutcome<'p> {
    match attempt {
        Attempt::Untouched => AttemptOutcome::Forwarded { model: None, original_length: None },
        Attempt::Refuse(rejection) => refuse(policy, rejection, host),
        Attempt::Apply(plan) => {
            if let Some(slot) = counters::chain_attempt(policy, plan.chain_index, plan.attempt_index) {
                host.count(slot, 1);
            }
            if log::log_enabled!(log::Level::Debug) {
                log::debug!("{}", plan.summary());
            }
            apply(&plan, host);
            if !host.record_attempt(&encode_names(&plan.set_names())) {
                log::warn!("could not record the attempt's headers");
            }
            AttemptOutcome::Forwarded { model: plan.model, original_length: plan.original_length }
        }
    }
}

/// Fails the attempt closed: a local reply with `rejection` (502 `fallback_misconfigured` for
/// anything wrong with the chain's wiring), counted like the downstream role's rejections.
pub fn refuse(policy: &Policy, rejection: Rejection, host: &mut impl AttemptHost) -> AttemptOutcome<'static> {
    log::warn!("fallback attempt refused: {}", rejection.message);
    outcome::reject(Some(policy), rejection, host);
    AttemptOutcome::Replied
}

/// The refusal of an attempt that must replace the body's model when the body has none (the
/// downstream role never hands such a request to a chain: its state or wiring is wrong).
pub fn no_model_to_replace() -> Rejection {
    Rejection::new(ErrorCode::FallbackMisconfigured, "The request body has no model to replace")
}

/// Removals first, then the sets in order: the first value of a name replaces every value the
/// shared map holds, later values of the same name are added.
fn apply(plan: &AttemptPlan, host: &mut impl AttemptHost) {
    for name in &plan.remove {
        if !host.remove_header(name) {
            log::warn!("could not remove header {name:?}");
        }
    }
    let mut done: Vec<&str> = Vec::new();
    for (name, value) in &plan.set {
        let ok = if done.contains(&name.as_str()) {
            host.add_header(name, value)
        } else {
            done.push(name);
            host.set_header(name, value)
        };
        if !ok {
            log::warn!("could not set header {name:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::decide_attempt;
    use crate::handover::{Handover, decode_names};
    use crate::outcome::tests::{Recorder, counted};

    impl AttemptHost for Recorder {
        fn remove_header(&mut self, name: &str) -> bool {
            self.calls.push(format!("remove {name}"));
            true
        }
        fn set_header(&mut self, name: &str, value: &[u8]) -> bool {
            self.calls.push(format!("set {name}={}", String::from_utf8_lossy(value)));
            true
        }
        fn add_header(&mut self, name: &str, value: &[u8]) -> bool {
            self.calls.push(format!("add {name}={}", String::from_utf8_lossy(value)));
            true
        }
        fn record_attempt(&mut self, names: &[u8]) -> bool {
            self.calls.push(format!("record {:?}", decode_names(names).unwrap_or_default()));
            true
        }
    }

    fn policy() -> Policy {
        Policy::from_json(
            br#"{"providers":[
                 {"name":"vllm","models":["llama-*"],"forward_headers":{"t":{"header":"authorization","prefix":"Bearer "}},
                  "set_headers":{"x-gateway":"gw"}},
                 {"name":"openai","models":["gpt-*"],"client_auth":"forward"}],
                 "fallbacks":[{"name":"ha","models":["llama-3-70b"],
                   "attempts":[{"provider":"vllm"},{"provider":"openai","model":"gpt-4o-mini"}]}]}"#,
        )
        .expect("config")
    }

    fn handover() -> Vec<u8> {
        Handover {
            chain: "ha".into(),
            model: "llama-3-70b".into(),
            provider_data: Some(("x-llamastack-provider-data".into(), br#"{"t":"k"}"#.to_vec())),
            content_length: Some(b"42".to_vec()),
            withheld: vec![("authorization".into(), b"Bearer client".to_vec()), ("x-a".into(), b"1".to_vec())],
            managed: vec!["authorization".into(), "x-gateway".into()],
        }
        .encode()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn removals_then_the_first_value_of_a_name_set_and_later_ones_added() {
        let policy = policy();
        let plan = AttemptPlan {
            chain: "ha",
            provider: "vllm",
            chain_index: 0,
            attempt_index: 1,
            remove: vec!["x-old".into(), "authorization".into()],
            set: vec![
                ("x-a".into(), b"1".to_vec()),
                ("authorization".into(), b"Bearer k".to_vec()),
                ("x-a".into(), b"2".to_vec()),
            ],
            model: Some("m"),
            original_length: Some(42),
        };
        let mut host = Recorder::default();
        let outcome = carry_out(&policy, Attempt::Apply(plan), &mut host);
        assert_eq!(outcome, AttemptOutcome::Forwarded { model: Some("m"), original_length: Some(42) });
        assert_eq!(
            host.calls,
            [
                "remove x-old",
                "remove authorization",
                "set x-a=1",
                "set authorization=Bearer k",
                "add x-a=2",
                r#"record ["x-a", "authorization"]"#
            ]
        );
        assert_eq!(counted(&policy, &host), ["llm_header_forward.chain.ha.attempts.openai+1"]);
    }

    #[test]
    fn a_decided_attempt_is_fitted_to_its_provider_and_counted() {
        let policy = policy();
        let current = headers(&[("content-type", "application/json"), ("x-llm-provider", "ha")]);
        let handover = handover();
        let attempt = decide_attempt(&policy, Some(&handover), &current, Some(b"openai"), &[]);
        let mut host = Recorder::default();
        let outcome = carry_out(&policy, attempt, &mut host);
        assert_eq!(outcome, AttemptOutcome::Forwarded { model: Some("gpt-4o-mini"), original_length: Some(42) });
        let first_set = host.calls.iter().position(|c| !c.starts_with("remove ")).expect("a set");
        assert!(host.calls[first_set..].iter().all(|c| !c.starts_with("remove ")), "{:?}", host.calls);
        assert!(host.calls.last().is_some_and(|c| c.starts_with("record ")), "{:?}", host.calls);
        assert!(host.calls.contains(&"set authorization=Bearer client".to_string()), "{:?}", host.calls);
        assert!(host.calls.contains(&"set x-llm-provider=openai".to_string()), "{:?}", host.calls);
        assert!(!host.calls.iter().any(|c| c.contains("x-gateway=")), "{:?}", host.calls);
        assert_eq!(host.counts.len(), 1);
    }

    #[test]
    fn a_refused_attempt_is_one_502_reply_counted_as_a_rejection() {
        let policy = policy();
        let current = headers(&[("x-llm-provider", "ha")]);
        let handover = handover();
        let attempt = decide_attempt(&policy, Some(&handover), &current, None, &[]);
        let mut host = Recorder::default();
        assert_eq!(carry_out(&policy, attempt, &mut host), AttemptOutcome::Replied);
        assert_eq!(host.calls.len(), 1, "{:?}", host.calls);
        assert!(host.calls[0].starts_with("reply 502 "), "{:?}", host.calls);
        assert!(host.calls[0].contains(r#"("x-llm-header-forward-error", "fallback_misconfigured")"#));
        assert_eq!(counted(&policy, &host), ["llm_header_forward.rejected.fallback_misconfigured+1"]);
    }

    #[test]
    fn a_request_outside_any_chain_is_untouched() {
        let policy = policy();
        let current = headers(&[("x-llm-provider", "vllm")]);
        let mut host = Recorder::default();
        let outcome = carry_out(&policy, decide_attempt(&policy, None, &current, Some(b"vllm"), &[]), &mut host);
        assert_eq!(outcome, AttemptOutcome::Forwarded { model: None, original_length: None });
        assert!(host.calls.is_empty() && host.counts.is_empty());
    }
}
