//! Carrying out a [`Decision`] on a host: the order of the header changes, when the route cache is
//! cleared, what a rejection reply looks like, which counters move (also on a fallback chain's final
//! response). Both glues (proxy-wasm in `wasm/`, the Envoy dynamic module in `native/`) implement
//! [`Host`] with their host's calls and nothing else, so one test here covers both.

use crate::counters;
use crate::decision::{Decision, Headers, Rewrite};
use crate::policy::Policy;
use crate::policy::Target;
use crate::rejection::Rejection;
use crate::request_trailers;

/// Header carrying the rejection's code, for clients and access logs.
pub const ERROR_HEADER: &str = "x-llm-header-forward-error";

/// What every role needs from its host to answer a client locally and count: the downstream role
/// ([`Host`]) and the upstream role ([`crate::attempt_outcome::AttemptHost`]) refuse through
/// [`reject`] alike.
pub trait Reply {
    /// Answers the client locally; the request goes no further.
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &str) -> bool;
    /// Adds `by` to the counter in `slot` ([`counters::names`]).
    fn count(&mut self, slot: usize, by: u64);
}

/// The few things a host does for the filter. Failures are reported as `false` and only logged:
/// the decision is already made.
pub trait Host: Reply {
    /// Removes every value of a request header.
    fn remove_header(&mut self, name: &str) -> bool;
    /// Removes every value of a request trailer.
    fn remove_trailer(&mut self, name: &str) -> bool;
    /// Sets a request header, replacing every value.
    fn set_header(&mut self, name: &str, value: &str) -> bool;
    /// Stores a fallback chain's handover ([`crate::handover`]) where the upstream role of every
    /// attempt reads it (Envoy filter state; never a header, which all attempts share).
    fn hand_over(&mut self, handover: &[u8]) -> bool;
    /// Lets the host match its routes again on the rewritten headers.
    fn clear_route_cache(&mut self);
    /// One response header's value (the first, if several); only [`response_started`] reads them.
    fn response_header(&mut self, name: &str) -> Option<Vec<u8>>;
}

/// What the glue tells its host after the decision was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let the (rewritten) request go on, to this provider or chain (`None`: unrouted); its
    /// rules also judge the request's trailers ([`filter_trailers`]).
    Forwarded(Option<Target>),
    /// A local reply was sent: stop the request here.
    Replied,
}

/// Counts a new request. Called once per request, before anything else.
pub fn request_seen(host: &mut impl Host) {
    host.count(counters::request(), 1);
}

/// Carries out `decision`.
pub fn carry_out(policy: &Policy, decision: Decision, host: &mut impl Host) -> Outcome {
    match decision {
        Decision::Reject(rejection) => reject(Some(policy), rejection, host),
        Decision::Forward(rewrite) => {
            // Without the handover every attempt of a chain would be refused upstream: fail now.
            if let Some(handover) = &rewrite.handover
                && !host.hand_over(handover)
            {
                let what = "cannot hand the fallback chain's state to the upstream filter";
                return reject(Some(policy), Rejection::internal(what), host);
            }
            rewrite_headers(&rewrite, host);
            let target = request_trailers::target_of(policy, &rewrite);
            counters::forwarded(policy, target, &rewrite, |slot, by| host.count(slot, by));
            if log::log_enabled!(log::Level::Debug) {
                log::debug!("{}", rewrite.summary());
            }
            Outcome::Forwarded(target)
        }
    }
}

/// Answers with `rejection` (counted when there is a configuration to count with).
pub fn reject(policy: Option<&Policy>, rejection: Rejection, host: &mut impl Reply) -> Outcome {
    if let Some(slot) = policy.and_then(|p| counters::rejected(p, rejection.code)) {
        host.count(slot, 1);
    }
    log::debug!("rejected with {} ({}): {}", rejection.status(), rejection.code.as_str(), rejection.message);
    let headers = [("content-type", "application/json"), (ERROR_HEADER, rejection.code.as_str())];
    if !host.send_reply(rejection.status(), &headers, &rejection.body()) {
        log::error!("could not send the {} reply", rejection.code.as_str());
    }
    Outcome::Replied
}

/// Removes the request trailers the rules of the request's provider or chain do not allow.
pub fn filter_trailers(policy: &Policy, target: Option<Target>, trailers: &Headers, host: &mut impl Host) {
    let removals = request_trailers::removals(policy, target, trailers);
    for removal in &removals {
        if !host.remove_trailer(&removal.name) {
            log::warn!("could not remove trailer {:?}", removal.name);
        }
    }
    if !removals.is_empty() && log::log_enabled!(log::Level::Debug) {
        let names: Vec<String> = removals.iter().map(|r| format!("-{:?}({})", r.name, r.rule)).collect();
        log::debug!("trailers: {}", names.join(" "));
    }
}

/// The response to a request forwarded to `target` began. Only a fallback chain's is read (other
/// requests cost no host call): answered ≥ 500 after Envoy's retries, every provider it was tried on
/// failed, and the chain counts as exhausted. The upstream role's refusals carry [`ERROR_HEADER`]
/// and were counted as rejections already.
pub fn response_started(policy: &Policy, target: Option<Target>, host: &mut impl Host) {
    let Some(Target::Chain(chain)) = target else { return };
    let failed = host.response_header(":status").is_some_and(|s| is_server_error(&s));
    if failed
        && host.response_header(ERROR_HEADER).is_none()
        && let Some(slot) = counters::chain_exhausted(policy, chain)
    {
        host.count(slot, 1);
    }
}

/// A `:status` of 500 or more.
fn is_server_error(status: &[u8]) -> bool {
    std::str::from_utf8(status).ok().and_then(|s| s.trim().parse::<u32>().ok()).is_some_and(|s| s >= 500)
}

/// Removals first (skipping names that are set anyway: the set replaces every value), then sets,
/// then one route-cache clear if anything changed.
fn rewrite_headers(rewrite: &Rewrite, host: &mut impl Host) {
    for removal in &rewrite.remove {
        if rewrite.set.iter().any(|a| a.name == removal.name) {
            continue;
        }
        if !host.remove_header(&removal.name) {
            log::warn!("could not remove header {:?}", removal.name);
        }
    }
    for set in &rewrite.set {
        if !host.set_header(&set.name, &set.value) {
            log::warn!("could not set header {:?}", set.name);
        }
    }
    if !rewrite.remove.is_empty() || !rewrite.set.is_empty() {
        host.clear_route_cache();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flow;

    /// A host that records every call, in order (also the upstream role's, `attempt_outcome`).
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) calls: Vec<String>,
        pub(crate) counts: Vec<(usize, u64)>,
        /// The response headers [`Host::response_header`] finds.
        response: Vec<(&'static str, &'static str)>,
    }

    impl Host for Recorder {
        fn remove_header(&mut self, name: &str) -> bool {
            self.calls.push(format!("remove {name}"));
            true
        }
        fn remove_trailer(&mut self, name: &str) -> bool {
            self.calls.push(format!("remove trailer {name}"));
            true
        }
        fn set_header(&mut self, name: &str, value: &str) -> bool {
            self.calls.push(format!("set {name}={value}"));
            true
        }
        fn hand_over(&mut self, handover: &[u8]) -> bool {
            self.calls.push(format!("hand_over {} bytes", handover.len()));
            true
        }
        fn clear_route_cache(&mut self) {
            self.calls.push("clear_route_cache".into());
        }
        fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
            self.calls.push(format!("response_header {name}"));
            self.response.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes().to_vec())
        }
    }

    impl Reply for Recorder {
        fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &str) -> bool {
            self.calls.push(format!("reply {status} {headers:?} {body}"));
            true
        }
        fn count(&mut self, slot: usize, by: u64) {
            self.counts.push((slot, by));
        }
    }

    fn policy() -> Policy {
        Policy::from_json(
            br#"{"providers":[{"name":"vllm","models":["llama-*"],
                 "forward_headers":{"t":{"header":"authorization","prefix":"Bearer "}}}]}"#,
        )
        .expect("config")
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn removals_then_sets_then_one_route_cache_clear() {
        let policy = policy();
        let h = headers(&[
            ("content-type", "application/json"),
            ("x-llamastack-provider-data", r#"{"t":"k"}"#),
            ("authorization", "Bearer client"),
            ("x-llm-provider", "spoofed"),
            ("cookie", "c"),
        ]);
        let body: &[u8] = br#"{"model":"llama-3"}"#;
        let decision = flow::decide_complete(&policy, &h, Some([body]));
        let mut host = Recorder::default();
        assert_eq!(carry_out(&policy, decision, &mut host), Outcome::Forwarded(Some(Target::Provider(0))));
        let sets = host.calls.iter().position(|c| c.starts_with("set ")).expect("a set");
        assert!(host.calls[..sets].iter().all(|c| c.starts_with("remove ")), "{:?}", host.calls);
        assert!(host.calls.contains(&"remove cookie".to_string()));
        // Set anyway, so never removed first (a removal then a set would be two changes).
        assert!(!host.calls.contains(&"remove authorization".to_string()), "{:?}", host.calls);
        assert!(!host.calls.contains(&"remove x-llm-provider".to_string()), "{:?}", host.calls);
        assert!(host.calls.contains(&"set authorization=Bearer k".to_string()));
        assert!(host.calls.contains(&"set x-llm-provider=vllm".to_string()));
        assert_eq!(host.calls.last().map(String::as_str), Some("clear_route_cache"));
        assert_eq!(host.calls.iter().filter(|c| *c == "clear_route_cache").count(), 1);
        let names = counters::names(&policy);
        let counted: Vec<&str> = host.counts.iter().map(|(s, _)| names[*s].as_str()).collect();
        assert!(counted.contains(&"llm_header_forward.provider.vllm.requests"), "{counted:?}");
        assert!(counted.contains(&"llm_header_forward.headers_forwarded"), "{counted:?}");
    }

    #[test]
    fn a_rejection_is_one_reply_with_the_code_and_is_counted() {
        let policy = policy();
        let h = headers(&[("content-type", "application/json")]);
        let body: &[u8] = br#"{"model":"unknown"}"#;
        let mut host = Recorder::default();
        let outcome = carry_out(&policy, flow::decide_complete(&policy, &h, Some([body])), &mut host);
        assert_eq!(outcome, Outcome::Replied);
        assert_eq!(host.calls.len(), 1, "{:?}", host.calls);
        assert!(host.calls[0].starts_with("reply 404 "), "{:?}", host.calls);
        assert!(host.calls[0].contains(r#"("x-llm-header-forward-error", "model_not_found")"#));
        let names = counters::names(&policy);
        assert_eq!(host.counts.len(), 1);
        assert_eq!(names[host.counts[0].0], "llm_header_forward.rejected.model_not_found");
    }

    #[test]
    fn nothing_to_change_does_not_clear_the_route_cache() {
        let policy = Policy::from_json(br#"{"providers":[]}"#).expect("config");
        let h = headers(&[("accept", "*/*")]);
        let mut host = Recorder::default();
        let decision = flow::decide_complete(&policy, &h, None::<[&[u8]; 0]>);
        assert_eq!(carry_out(&policy, decision, &mut host), Outcome::Forwarded(None));
        assert!(host.calls.is_empty(), "{:?}", host.calls);
    }

    /// Each count the host received, as `<counter name>+<amount>`.
    pub(crate) fn counted(policy: &Policy, host: &Recorder) -> Vec<String> {
        let names = counters::names(policy);
        host.counts.iter().map(|(s, by)| format!("{}+{by}", names[*s])).collect()
    }

    #[test]
    fn a_chain_request_counts_as_the_chains_not_as_unrouted() {
        let policy = &crate::attempt_testkit::chain_policies()[1];
        let h = headers(&[("content-type", "application/json")]);
        let body: &[u8] = br#"{"model":"cb"}"#;
        let mut host = Recorder::default();
        let outcome = carry_out(policy, flow::decide_complete(policy, &h, Some([body])), &mut host);
        assert_eq!(outcome, Outcome::Forwarded(Some(Target::Chain(1))));
        assert!(host.calls[0].starts_with("hand_over "), "the handover first: {:?}", host.calls);
        assert_eq!(counted(policy, &host), ["llm_header_forward.chain.cb.requests+1"]);
    }

    #[test]
    fn a_chain_answered_5xx_without_the_error_header_is_exhausted() {
        let policy = &crate::attempt_testkit::chain_policies()[1];
        let chain = Some(Target::Chain(1));
        let exhausted = |response: Vec<(&'static str, &'static str)>| {
            let mut host = Recorder { response, ..Recorder::default() };
            response_started(policy, chain, &mut host);
            counted(policy, &host)
        };
        assert_eq!(exhausted(vec![(":status", "503")]), ["llm_header_forward.chain.cb.exhausted+1"]);
        assert_eq!(exhausted(vec![(":status", "500")]), ["llm_header_forward.chain.cb.exhausted+1"]);
        // Refused by the upstream role: a rejection, counted as such already.
        assert!(exhausted(vec![(":status", "502"), (ERROR_HEADER, "fallback_misconfigured")]).is_empty());
        assert!(exhausted(vec![(":status", "200")]).is_empty());
        assert!(exhausted(vec![(":status", "499")]).is_empty());
        assert!(exhausted(vec![(":status", "5xx")]).is_empty());
        assert!(exhausted(vec![]).is_empty());
    }

    #[test]
    fn only_a_chains_response_is_read() {
        let policy = &crate::attempt_testkit::chain_policies()[1];
        for target in [None, Some(Target::Provider(0))] {
            let mut host = Recorder { response: vec![(":status", "503")], ..Recorder::default() };
            response_started(policy, target, &mut host);
            assert!(host.calls.is_empty() && host.counts.is_empty(), "{target:?}: {:?}", host.calls);
        }
        // A success is not looked at further.
        let mut host = Recorder { response: vec![(":status", "200")], ..Recorder::default() };
        response_started(policy, Some(Target::Chain(0)), &mut host);
        assert_eq!(host.calls, ["response_header :status"]);
    }
}
