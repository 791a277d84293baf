//! The downstream role's judgement of a request resolved to a fallback chain (SPEC §8): everything
//! that can be refused is refused here, before the first attempt (an upstream filter's local reply
//! is never retried), so the request is judged against every provider of the chain.
//!
//! What leaves the downstream role is what every provider may receive: the always-removed headers
//! are gone, and so is every client header that some provider of the chain removes or sets itself;
//! those are handed to the upstream role ([`crate::handover`]), which restores them per attempt.

use crate::client_headers::ClientRule;
use crate::decision::{Assignment, Headers, Removal, Rewrite, SetRule, rewrite_for};
use crate::handover::Handover;
use crate::policy::{Chain, ChainAttempt, Policy};
use crate::rejection::{ErrorCode, Rejection};
use std::borrow::Cow;

/// The model an attempt sends: its override, or the one the client asked for.
pub fn attempt_model<'a>(attempt: &'a ChainAttempt, requested: &'a str) -> &'a str {
    attempt.model.as_deref().unwrap_or(requested)
}

/// The single-provider rewrite of the request for each attempt of `chain` (the first rejection
/// for any of them is the answer).
pub(crate) fn per_attempt<'p>(
    policy: &'p Policy,
    chain: &'p Chain,
    model: &str,
    headers: &Headers,
    provider_data: Option<(&str, &[u8])>,
) -> Result<Vec<Rewrite<'p>>, Rejection> {
    chain
        .attempts
        .iter()
        .map(|a| {
            let provider = policy.providers.get(a.provider).ok_or_else(|| {
                Rejection::new(ErrorCode::FallbackMisconfigured, "The fallback chain names an unknown provider")
            })?;
            rewrite_for(policy, Some(provider), Some(attempt_model(a, model).to_string()), headers, provider_data)
        })
        .collect()
}

/// Judges a request for `chain`: rejected if any provider of the chain would reject it; otherwise
/// the rewrite every attempt starts from, with the handover for the upstream role.
pub(crate) fn judge<'p>(
    policy: &'p Policy,
    chain: &'p Chain,
    model: Option<String>,
    headers: &Headers,
    provider_data: Option<(&str, &[u8])>,
) -> Result<Rewrite<'p>, Rejection> {
    let model = model.unwrap_or_default();
    let attempts = per_attempt(policy, chain, &model, headers, provider_data)?;
    let mut rewrite = Rewrite { chain: Some(&chain.name), model: Some(model.clone()), ..Rewrite::default() };
    let mut withheld = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let rule = match rewrite.remove.iter().find(|r| r.name == name) {
            Some(r) => Some(r.rule),
            None => {
                let rule = held_rule(&attempts, &name);
                if let Some(rule) = rule {
                    rewrite.remove.push(Removal { name: name.clone(), rule });
                }
                rule
            }
        };
        if rule == Some(ClientRule::HeldForAttempts) {
            withheld.push((name, value.clone()));
        }
    }
    rewrite.set.push(Assignment {
        name: Cow::Borrowed(&policy.provider_header),
        value: Cow::Borrowed(&chain.name),
        rule: SetRule::ProviderHeader,
    });
    rewrite.set.push(Assignment {
        name: Cow::Borrowed(&policy.model_header),
        value: Cow::Owned(model.clone()),
        rule: SetRule::ModelHeader,
    });
    let mut managed: Vec<String> = Vec::new();
    for a in attempts.iter().flat_map(|rw| &rw.set) {
        if !policy.is_routing_header(&a.name) && !managed.iter().any(|m| *m == a.name) {
            managed.push(a.name.to_string());
        }
    }
    let content_length = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.clone());
    let handover = Handover {
        chain: chain.name.clone(),
        model,
        provider_data: provider_data.map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec())),
        content_length,
        withheld,
        managed,
    };
    rewrite.handover = Some(handover.encode());
    Ok(rewrite)
}

/// Why the client header `name` does not stay in the shared header map: removed for every
/// provider alike, or held for the attempts whose provider accepts it. `None`: every provider of
/// the chain receives it unchanged.
fn held_rule<'p>(attempts: &[Rewrite<'p>], name: &str) -> Option<ClientRule<'p>> {
    let mut held = false;
    for rw in attempts {
        if let Some(r) = rw.remove.iter().find(|r| r.name == name) {
            if r.rule.is_always() {
                return Some(r.rule);
            }
            held = true;
        }
        held |= rw.set.iter().any(|a| a.name == name);
    }
    held.then_some(ClientRule::HeldForAttempts)
}
