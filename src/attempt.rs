//! The upstream role (SPEC §8): Envoy runs it once per attempt of a request, on the header map all
//! attempts share. [`decide_attempt`] fits that map to the attempt's provider: it undoes whatever
//! an earlier attempt set or restored, restores the held-back client headers this provider
//! accepts, and applies this provider's rules exactly as for a request resolved to it.

use crate::chain::per_attempt;
use crate::decision::{Headers, Rewrite};
use crate::handover::Handover;
use crate::policy::{Chain, Policy};
use crate::rejection::{ErrorCode, Rejection};

/// What the upstream role does with one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<'p> {
    /// Not a chain request: nothing changes.
    Untouched,
    Apply(AttemptPlan<'p>),
    /// Fail closed: a local reply (never retried by Envoy).
    Refuse(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPlan<'p> {
    pub chain: &'p str,
    pub provider: &'p str,
    /// Index of the chain in [`Policy::chains`], and of this attempt in the chain (metrics).
    pub chain_index: usize,
    pub attempt_index: usize,
    /// Removed from the shared map first: every header an earlier attempt may have set or restored.
    pub remove: Vec<String>,
    /// Then set, in order: the first value of a name replaces, later ones are added.
    pub set: Vec<(String, Vec<u8>)>,
    /// Replaces the body's top-level `model` ([`crate::model_rewrite`]); `content-length` follows.
    pub model: Option<&'p str>,
    /// With `model`: the client's `content-length` (the body every attempt is sent is the
    /// original; the shared map may hold an earlier attempt's rewritten length).
    pub original_length: Option<usize>,
}

impl AttemptPlan<'_> {
    /// Every name this attempt sets (each once): what the next attempt is told to undo.
    pub fn set_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (n, _) in &self.set {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    /// The shared header map after this plan: what the glue does to Envoy's map, on a plain list.
    pub fn apply_to(&self, headers: &Headers) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = headers
            .iter()
            .filter(|(n, _)| {
                !self.remove.iter().any(|r| r.eq_ignore_ascii_case(n))
                    && !self.set.iter().any(|(s, _)| s.eq_ignore_ascii_case(n))
            })
            .cloned()
            .collect();
        out.extend(self.set.iter().cloned());
        out
    }

    /// One line for logs: names, never values.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.set.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            "chain={} provider={} model_override={} removed={:?} set={:?}",
            self.chain,
            self.provider,
            self.model.is_some(),
            self.remove,
            names
        )
    }
}

fn refuse(message: &str) -> Attempt<'static> {
    Attempt::Refuse(Rejection::new(ErrorCode::FallbackMisconfigured, message.to_string()))
}

/// Decides one attempt.
///
/// - `handover`: the downstream role's filter state for this request (`None` when absent);
/// - `current`: the shared request header map as this attempt finds it;
/// - `endpoint_provider`: the chosen endpoint's `filter_metadata.llm_header_forward.provider`;
/// - `earlier`: the names earlier attempts set (their filter state; empty on the first attempt).
///
/// The decision never trusts the header map for what it must do: a request is a chain request
/// when the handover says so. Without a handover, a routing header naming a chain means the
/// downstream role did not run (or its state was lost): refused, since the client's own headers
/// would otherwise reach the provider unfiltered.
pub fn decide_attempt<'p>(
    policy: &'p Policy,
    handover: Option<&[u8]>,
    current: &Headers,
    endpoint_provider: Option<&[u8]>,
    earlier: &[String],
) -> Attempt<'p> {
    let Some(raw) = handover else {
        let names_chain = current.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case(&policy.provider_header)
                && std::str::from_utf8(v).is_ok_and(|v| policy.chain_index(v.trim()).is_some())
        });
        return if names_chain { refuse("The fallback chain's request state is missing") } else { Attempt::Untouched };
    };
    if !earlier.is_empty() && log::log_enabled!(log::Level::Debug) {
        log::debug!("earlier attempts set {earlier:?}");
    }
    let Some(handover) = Handover::decode(raw) else {
        return refuse("The fallback chain's request state is unreadable");
    };
    let Some((chain_index, chain)) = policy.chain_index(&handover.chain).and_then(|i| Some((i, policy.chains.get(i)?)))
    else {
        return refuse("The request's fallback chain is not configured in the upstream filter");
    };
    let Some(endpoint_provider) = endpoint_provider.and_then(|v| std::str::from_utf8(v).ok()) else {
        return refuse("The chosen endpoint has no llm_header_forward provider metadata");
    };
    let Some(index) = chain
        .attempts
        .iter()
        .position(|a| policy.providers.get(a.provider).is_some_and(|p| p.name == endpoint_provider))
    else {
        return refuse("The chosen endpoint's provider is not part of the request's fallback chain");
    };
    plan(policy, (chain_index, chain), index, &handover, current, earlier).unwrap_or_else(Attempt::Refuse)
}

fn plan<'p>(
    policy: &'p Policy,
    (chain_index, chain): (usize, &'p Chain),
    index: usize,
    handover: &Handover,
    current: &Headers,
    earlier: &[String],
) -> Result<Attempt<'p>, Rejection> {
    let withheld_name = |n: &str| handover.withheld.iter().any(|(w, _)| w == n);
    let earlier_name =
        |n: &str| earlier.iter().any(|e| e.eq_ignore_ascii_case(n)) || handover.managed.iter().any(|m| m == n);
    // The client's request as every attempt's rules see it: what the downstream role left in the
    // map (minus what earlier attempts set: their record, and every name some provider sets) and
    // the held-back headers.
    let mut original: Vec<(String, Vec<u8>)> = current
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            !earlier_name(&n) && !withheld_name(&n) && !policy.is_routing_header(&n)
        })
        .cloned()
        .collect();
    original.extend(handover.withheld.iter().cloned());
    let provider_data = handover.provider_data.as_ref().map(|(n, v)| (n.as_str(), v.as_slice()));
    let rewrites = per_attempt(policy, chain, &handover.model, &original, provider_data).map_err(|r| {
        Rejection::new(
            ErrorCode::FallbackMisconfigured,
            format!("The upstream filter's rules refuse what the downstream filter accepted ({})", r.code.as_str()),
        )
    })?;
    let (Some(attempt), Some(mine)) = (chain.attempts.get(index), rewrites.get(index)) else {
        return Err(Rejection::new(ErrorCode::FallbackMisconfigured, "attempt out of range"));
    };
    let provider = mine.provider.unwrap_or_default();

    let mut remove: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        let n = n.to_ascii_lowercase();
        if n != "content-length" && !policy.is_routing_header(&n) && !remove.contains(&n) {
            remove.push(n);
        }
    };
    earlier.iter().for_each(|n| add(n));
    handover.managed.iter().for_each(|n| add(n));
    handover.withheld.iter().for_each(|(n, _)| add(n));
    for rw in &rewrites {
        rw.set.iter().for_each(|a| add(&a.name));
    }
    mine.remove.iter().for_each(|r| add(&r.name));

    let mut set: Vec<(String, Vec<u8>)> = handover
        .withheld
        .iter()
        .filter(|(n, _)| !removes(mine, n) && !mine.set.iter().any(|a| a.name == *n))
        .cloned()
        .collect();
    set.extend(mine.set.iter().map(|a| (a.name.to_string(), a.value.as_bytes().to_vec())));
    let model = attempt.model.as_deref();
    let original_length = model
        .and(handover.content_length.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    if model.is_none()
        && let Some(length) = &handover.content_length
    {
        // An earlier attempt may have rewritten the model; this one is sent the original body.
        set.push(("content-length".into(), length.clone()));
    }
    Ok(Attempt::Apply(AttemptPlan {
        chain: &chain.name,
        provider,
        chain_index,
        attempt_index: index,
        remove,
        set,
        model,
        original_length,
    }))
}

fn removes(rewrite: &Rewrite, name: &str) -> bool {
    rewrite.remove.iter().any(|r| r.name == name)
}
