//! Which counters a request moves (SPEC §6). The names and their slots are decided here, once, so
//! both hosts publish the same metrics; each host's glue only hands the increments to its host's
//! metrics API (proxy-wasm: prefixed `wasmcustom.`; dynamic module: see the README).

use crate::decision::{Rewrite, SetRule};
use crate::forwarding::DropReason;
use crate::policy::Policy;
use crate::rejection::ErrorCode;

pub const PREFIX: &str = "llm_header_forward";

// Slots of the fixed counters; the per-provider, per-reason and per-code ones follow.
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
    names
}

/// A request was seen.
pub fn request() -> usize {
    REQUESTS
}

/// The slot of a rejection's code.
pub fn rejected(policy: &Policy, code: ErrorCode) -> Option<usize> {
    let i = ErrorCode::ALL.iter().position(|c| *c == code)?;
    Some(PROVIDERS + policy.providers.len() + DropReason::ALL.len() + i)
}

/// The increments a forwarded request makes: `(slot, by)`. `provider`: the index of the provider it
/// was forwarded to (`None`: unrouted, or a fallback chain, whose attempts count upstream).
pub fn forwarded(policy: &Policy, provider: Option<usize>, rewrite: &Rewrite) -> Vec<(usize, u64)> {
    let mut out = Vec::with_capacity(2 + rewrite.dropped.len());
    match provider {
        Some(i) => out.push((PROVIDERS + i, 1)),
        None => out.push((UNROUTED, 1)),
    }
    let from_provider_data = rewrite.set.iter().filter(|a| matches!(a.rule, SetRule::ProviderData(_))).count();
    if from_provider_data > 0 {
        out.push((FORWARDED, from_provider_data as u64));
    }
    for d in &rewrite.dropped {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == d.reason.as_str()) {
            out.push((PROVIDERS + policy.providers.len() + i, 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_name_the_right_counters() {
        let policy = Policy::from_json(br#"{"providers":[{"name":"vllm","models":["llama-*"]}]}"#).expect("config");
        let names = names(&policy);
        assert_eq!(names[request()], "llm_header_forward.requests");
        let slot = rejected(&policy, ErrorCode::ModelNotFound).expect("slot");
        assert_eq!(names[slot], "llm_header_forward.rejected.model_not_found");
        let rewrite = Rewrite { provider: Some("vllm"), ..Default::default() };
        assert_eq!(forwarded(&policy, Some(0), &rewrite), vec![(3, 1)]);
        assert_eq!(names[3], "llm_header_forward.provider.vllm.requests");
    }
}
