//! The guarantees every decision keeps, whatever the request (SECURITY.md). Fuzz targets and
//! property tests check each decision against them; the filter itself never calls this.

use crate::blocklist::{CLIENT_IDENTITY_NAMES, REQUEST_OVERRIDE_NAMES, is_client_auth};
use crate::client_headers::left_to_envoy;
use crate::config::ClientAuth;
use crate::decision::{BodyModel, Decision, Headers, Rewrite, SetRule};
use crate::forwarding::{MAX_FORWARDED, Source};
use crate::header_syntax::{check_value, is_token};
use crate::policy::{Policy, Provider, Target};
use crate::provider_data;
use serde_json::Value;

/// Every way `decision` breaks a guarantee for this request (empty when it keeps them all).
pub fn violations(policy: &Policy, headers: &Headers, body: &BodyModel, decision: &Decision) -> Vec<String> {
    let Decision::Forward(rewrite) = decision else { return Vec::new() };
    let mut v = Vec::new();
    check_set_headers(policy, headers, rewrite, &mut v);
    check_routing(policy, body, rewrite, &mut v);
    check_upstream(policy, headers, rewrite, &mut v);
    v
}

fn check_set_headers(policy: &Policy, headers: &Headers, rewrite: &Rewrite, v: &mut Vec<String>) {
    let provider = provider_of(policy, rewrite);
    let data = provider_data_of(policy, headers);
    let mut from_provider_data = 0;
    for a in &rewrite.set {
        let name = a.name.as_ref();
        if !is_token(name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
            v.push(format!("set header name {name:?} is not a lowercase token"));
        }
        if check_value(a.value.as_bytes()).is_err() {
            v.push(format!("set header {name:?} has an invalid value"));
        }
        if rewrite.set.iter().filter(|b| b.name == name).count() > 1 {
            v.push(format!("{name:?} is set more than once (the last {} would win)", a.rule));
        }
        let routing = matches!(a.rule, SetRule::ProviderHeader | SetRule::ModelHeader);
        if !routing && policy.blocklist.check(name).is_some() {
            v.push(format!("set header {name:?} is on the blocklist ({})", a.rule));
        }
        match a.rule {
            SetRule::Rename { from } => check_rename(provider, headers, from, name, &a.value, v),
            SetRule::DefaultHeaders => {
                if !provider.is_some_and(|p| p.default_headers.iter().any(|(n, val)| n == name && *val == a.value)) {
                    v.push(format!("{name:?} set by default_headers, which do not say so"));
                }
                let client_kept = headers.iter().any(|(n, _)| {
                    n.eq_ignore_ascii_case(name) && !rewrite.remove.iter().any(|r| r.name.eq_ignore_ascii_case(n))
                });
                if client_kept {
                    v.push(format!("default {name:?} replaced a value the request already had"));
                }
            }
            _ => {}
        }
        let SetRule::ProviderData(source) = a.rule else { continue };
        from_provider_data += 1;
        let Some(p) = provider else {
            v.push(format!("{name:?} forwarded from provider data without a provider"));
            continue;
        };
        match source {
            Source::ForwardHeaders { key } => {
                if !p.forward_headers.iter().any(|r| r.key == key && r.header == name) {
                    v.push(format!("{name:?} from key {key:?}, which is not in {}'s forward_headers", p.name));
                }
            }
            Source::ExtraHeaders { map, .. } => {
                let own = map == p.extra_headers_key || (p.generic_extra_headers && map == "extra_headers");
                if !own {
                    v.push(format!("{name:?} for {} came from another namespace, {map:?}", p.name));
                }
                if is_client_auth(name) {
                    v.push(format!("credential {name:?} set through an extra-headers map"));
                }
                let sent = data.as_ref().and_then(|d| d.get(map)).and_then(Value::as_object).is_some_and(|m| {
                    m.iter().any(|(k, val)| {
                        k.eq_ignore_ascii_case(name) && provider_data::scalar_text(val).as_deref() == Some(&*a.value)
                    })
                });
                if !sent {
                    v.push(format!("{name:?} has a value that is not in the provider data map {map:?}"));
                }
            }
        }
    }
    if from_provider_data > MAX_FORWARDED {
        v.push(format!("{from_provider_data} headers forwarded from provider data (limit {MAX_FORWARDED})"));
    }
}

/// A renamed header carries exactly the client's values of `from`, only where the provider renames
/// it, and never a credential the provider strips.
fn check_rename(
    provider: Option<&Provider>,
    headers: &Headers,
    from: &str,
    name: &str,
    value: &str,
    v: &mut Vec<String>,
) {
    let Some(p) = provider else {
        v.push(format!("{name:?} renamed without a provider"));
        return;
    };
    if !p.client_rename.iter().any(|(f, t)| f == from && t == name) {
        v.push(format!("{name:?} renamed from {from:?}, which {} does not rename", p.name));
    }
    if p.client_auth == ClientAuth::Strip && is_client_auth(name) {
        v.push(format!("client credential {name:?} reached upstream through a rename"));
    }
    let sent: Vec<&[u8]> =
        headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(from)).map(|(_, val)| val.as_slice()).collect();
    if sent.join(&b", "[..]) != value.as_bytes() {
        v.push(format!("{name:?} renamed from {from:?} with a value the client did not send"));
    }
}

fn check_routing(policy: &Policy, body: &BodyModel, rewrite: &Rewrite, v: &mut Vec<String>) {
    let model = match body {
        BodyModel::Model(m) => Some(m.as_str()),
        BodyModel::NotRead | BodyModel::Absent => None,
    };
    let expected_chain = match body {
        BodyModel::Model(m) => match policy.target_for_model(m) {
            Some(Target::Chain(i)) => policy.chains.get(i).map(|c| c.name.as_str()),
            _ => None,
        },
        BodyModel::NotRead | BodyModel::Absent => None,
    };
    if rewrite.chain != expected_chain {
        v.push(format!("chain {:?}, expected {expected_chain:?}", rewrite.chain));
    }
    if rewrite.chain.is_some() != rewrite.handover.is_some() {
        v.push("a chain decision without a handover, or a handover without a chain".into());
    }
    let expected_provider = match body {
        _ if expected_chain.is_some() => None,
        BodyModel::Model(m) => policy.provider_for_model(m).or(policy.default_provider),
        BodyModel::NotRead | BodyModel::Absent => policy.default_provider,
    }
    .and_then(|i| policy.providers.get(i))
    .map(|p| p.name.as_str());
    if rewrite.provider != expected_provider {
        v.push(format!("provider {:?}, expected {expected_provider:?}", rewrite.provider));
    }
    let values = |header: &str| -> Vec<&str> {
        rewrite.set.iter().filter(|a| a.name == header).map(|a| a.value.as_ref()).collect()
    };
    let provider_values = values(&policy.provider_header);
    let model_values = values(&policy.model_header);
    match rewrite.provider.or(rewrite.chain) {
        Some(p) => {
            if provider_values != [p] {
                v.push(format!("provider header set to {provider_values:?}, resolved {p:?}"));
            }
            let expected: Vec<&str> = model.into_iter().collect();
            if model_values != expected {
                v.push(format!("model header set to {model_values:?}, body model {model:?}"));
            }
        }
        None => {
            if !provider_values.is_empty() || !model_values.is_empty() {
                v.push("routing headers set without a provider".into());
            }
        }
    }
}

/// What reaches the upstream: no client-steered routing, control or credential headers.
fn check_upstream(policy: &Policy, headers: &Headers, rewrite: &Rewrite, v: &mut Vec<String>) {
    let chain = rewrite.chain.and_then(|c| policy.chain_index(c)).and_then(|i| policy.chains.get(i));
    let strips_credentials = match chain {
        Some(c) => c
            .attempts
            .iter()
            .any(|a| policy.providers.get(a.provider).is_none_or(|p| p.client_auth == ClientAuth::Strip)),
        None => provider_of(policy, rewrite).is_none_or(|p| p.client_auth == ClientAuth::Strip),
    };
    for (name, value) in rewrite.apply_to(headers) {
        let lname = name.to_ascii_lowercase();
        let set_by_filter = rewrite.set.iter().any(|a| a.name == lname);
        if set_by_filter {
            continue;
        }
        let client_sent = headers.iter().any(|(n, val)| n.eq_ignore_ascii_case(&name) && *val == value);
        if !client_sent {
            v.push(format!("{name:?} reached upstream from nowhere"));
        }
        if policy.is_routing_header(&lname) {
            v.push(format!("client's routing header {name:?} reached upstream"));
        }
        if lname.starts_with("x-envoy-")
            || lname == "cookie"
            || lname == "proxy-authorization"
            || CLIENT_IDENTITY_NAMES.contains(&lname.as_str())
            || REQUEST_OVERRIDE_NAMES.contains(&lname.as_str())
        {
            v.push(format!("client's {name:?} reached upstream"));
        }
        if policy.blocklist.operator_match(&lname).is_some() && !left_to_envoy(&lname) && !is_client_auth(&lname) {
            v.push(format!("client's {name:?} on blocked_headers reached upstream"));
        }
        if policy.strip_provider_data && policy.is_provider_data_header(&lname) {
            v.push(format!("provider data header {name:?} reached upstream"));
        }
        if strips_credentials && is_client_auth(&lname) {
            v.push(format!("client credential {name:?} reached upstream"));
        }
    }
}

fn provider_of<'p>(policy: &'p Policy, rewrite: &Rewrite) -> Option<&'p Provider> {
    rewrite.provider.and_then(|name| policy.provider_index(name)).and_then(|i| policy.providers.get(i))
}

fn provider_data_of(policy: &Policy, headers: &Headers) -> Option<provider_data::ProviderData> {
    let (_, raw) = headers.iter().find(|(n, _)| policy.is_provider_data_header(&n.to_ascii_lowercase()))?;
    provider_data::parse(raw, policy.provider_data_max_bytes).ok()
}
