//! Which counters a request moves (SPEC §6). The names and their slots are decided here, once, so
//! both hosts publish the same metrics; each host's glue only hands the increments to its host's
//! metrics API (proxy-wasm: prefixed `wasmcustom.`; dynamic module: see the README).

use crate::decision::{Rewrite, SetRule};
use crate::forwarding::DropReason;
use crate::policy::{Policy, Target};
use crate::rejection::ErrorCode;

pub const PREFIX: &str = "llm_header_forward";

// Slots of the fixed counters; the per-provider, per-reason, per-code and per-chain ones follow.
const REQUESTS: usize = 0;
const UNROUTED: usize = 1;
const FORWARDED: usize = 2;
const PROVIDERS: usize = 3;

/// Every counter's name, by slot. A host defines them all at configuration time, so `/stats`
/// lists them from the start.
pub fn names(policy: &Policy) -> Vec<String> {
    let mut names =
        vec![format!("{PREFIX}.requests"), format!("{PREFIX}.unrouted"), format!("{PREFIX}.headers_forwarded")];
    names.extend(policy.providers.iter().map(|p| format!("{PREFIX}.provider.{}.requests", p.name)));
    names.extend(DropReason::ALL.iter().map(|r| format!("{PREFIX}.headers_dropped.{r}")));
    names.extend(ErrorCode::ALL.iter().map(|c| format!("{PREFIX}.rejected.{}", c.as_str())));
    // Per chain: `requests`, `exhausted`, then one per attempt (see `chain_base`).
    for chain in &policy.chains {
        names.push(format!("{PREFIX}.chain.{}.requests", chain.name));
        names.push(format!("{PREFIX}.chain.{}.exhausted", chain.name));
        for a in &chain.attempts {
            let provider = policy.providers.get(a.provider).map_or("-", |p| p.name.as_str());
            names.push(format!("{PREFIX}.chain.{}.attempts.{provider}", chain.name));
        }
    }
    names
}

/// A request was seen.
pub fn request() -> usize {
    REQUESTS
}

/// The slot of a rejection's code.
pub fn rejected(policy: &Policy, code: ErrorCode) -> Option<usize> {
    let i = ErrorCode::ALL.iter().position(|c| *c == code)?;
    Some(codes(policy) + i)
}

/// Hands `count` the increments a forwarded request makes: `(slot, by)`. `target`: the provider or
/// fallback chain it was forwarded to (`None`: unrouted); a chain's attempts count upstream
/// ([`chain_attempt`]).
pub fn forwarded(policy: &Policy, target: Option<Target>, rewrite: &Rewrite, mut count: impl FnMut(usize, u64)) {
    match target {
        Some(Target::Provider(i)) => count(PROVIDERS + i, 1),
        Some(Target::Chain(c)) => {
            if let Some(base) = chain_base(policy, c) {
                count(base, 1);
            }
        }
        None => count(UNROUTED, 1),
    }
    let from_provider_data = rewrite.set.iter().filter(|a| matches!(a.rule, SetRule::ProviderData(_))).count();
    if from_provider_data > 0 {
        count(FORWARDED, from_provider_data as u64);
    }
    for d in &rewrite.dropped {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == d.reason.as_str()) {
            count(PROVIDERS + policy.providers.len() + i, 1);
        }
    }
}

/// The slot counting requests of `chain` that every provider failed (see
/// [`crate::outcome::response_started`]).
pub fn chain_exhausted(policy: &Policy, chain: usize) -> Option<usize> {
    chain_base(policy, chain).map(|base| base + 1)
}

/// The slot counting attempts of `chain` fitted to its `attempt`-th provider (the upstream role).
pub fn chain_attempt(policy: &Policy, chain: usize, attempt: usize) -> Option<usize> {
    let attempts = policy.chains.get(chain)?.attempts.len();
    if attempt >= attempts {
        return None;
    }
    chain_base(policy, chain).map(|base| base + 2 + attempt)
}

/// First slot of the rejection codes.
fn codes(policy: &Policy) -> usize {
    PROVIDERS + policy.providers.len() + DropReason::ALL.len()
}

/// First slot of `chain`'s counters: its `requests`.
fn chain_base(policy: &Policy, chain: usize) -> Option<usize> {
    if chain >= policy.chains.len() {
        return None;
    }
    let earlier: usize = policy.chains.iter().take(chain).map(|c| 2 + c.attempts.len()).sum();
    Some(codes(policy) + ErrorCode::ALL.len() + earlier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn increments(policy: &Policy, target: Option<Target>, rewrite: &Rewrite) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        forwarded(policy, target, rewrite, |slot, by| out.push((slot, by)));
        out
    }

    #[test]
    fn slots_name_the_right_counters() {
        let policy = Policy::from_json(br#"{"providers":[{"name":"vllm","models":["llama-*"]}]}"#).expect("config");
        let names = names(&policy);
        assert_eq!(names[request()], "llm_header_forward.requests");
        let slot = rejected(&policy, ErrorCode::ModelNotFound).expect("slot");
        assert_eq!(names[slot], "llm_header_forward.rejected.model_not_found");
        let rewrite = Rewrite { provider: Some("vllm"), ..Default::default() };
        assert_eq!(increments(&policy, Some(Target::Provider(0)), &rewrite), vec![(3, 1)]);
        assert_eq!(names[3], "llm_header_forward.provider.vllm.requests");
        assert_eq!(increments(&policy, None, &Rewrite::default()), vec![(1, 1)]);
        assert_eq!(names[1], "llm_header_forward.unrouted");
    }

    #[test]
    fn chain_slots_name_the_right_counters() {
        // Chains `abc` (providers a, b, c) and `cb` (c, b).
        let policy = &crate::attempt_testkit::chain_policies()[1];
        let names = names(policy);
        let name = |slot: Option<usize>| slot.map(|s| names[s].as_str());
        let rewrite = Rewrite { chain: Some("cb"), ..Default::default() };
        let [(slot, 1)] = increments(policy, Some(Target::Chain(1)), &rewrite)[..] else { panic!("one increment") };
        assert_eq!(names[slot], "llm_header_forward.chain.cb.requests", "a chain request is not unrouted");
        assert_eq!(name(chain_exhausted(policy, 1)), Some("llm_header_forward.chain.cb.exhausted"));
        assert_eq!(name(chain_exhausted(policy, 0)), Some("llm_header_forward.chain.abc.exhausted"));
        assert_eq!(name(chain_attempt(policy, 0, 2)), Some("llm_header_forward.chain.abc.attempts.c"));
        assert_eq!(name(chain_attempt(policy, 1, 1)), Some("llm_header_forward.chain.cb.attempts.b"));
        assert_eq!(chain_attempt(policy, 1, 2), None);
        assert_eq!(chain_exhausted(policy, 2), None);
        assert_eq!(chain_attempt(policy, 1, 1), Some(names.len() - 1), "the last slot");
    }
}
