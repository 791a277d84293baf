//! Which request trailers are removed before the request goes upstream (SPEC §4: request trailers
//! get the same removals as headers). An HTTP/2 or chunked HTTP/1.1 client can send header fields
//! after the body; a backend that merges them into the request would otherwise read provider data,
//! cookies, credentials or routing headers the filter removed from the headers.

use crate::client_headers::{ClientRule, left_to_envoy, removal_rule};
use crate::decision::{Headers, Removal, Rewrite};
use crate::policy::{Policy, Provider, Target};

/// What a forwarded request was resolved to (`None`: no provider), by index: all the glue keeps
/// between the headers and the trailers.
pub fn target_of(policy: &Policy, rewrite: &Rewrite) -> Option<Target> {
    match (rewrite.chain, rewrite.provider) {
        (Some(chain), _) => policy.chain_index(chain).map(Target::Chain),
        (None, Some(provider)) => policy.provider_index(provider).map(Target::Provider),
        (None, None) => None,
    }
}

/// The trailers to remove (each name once, lowercase) for a request forwarded to `target`.
/// Every trailer the header rules would remove for that provider is removed (for a fallback
/// chain: that any provider of the chain would remove, since trailers are not restored per
/// attempt), and so is every name Envoy manages only in the headers (framing, host, hop-by-hop,
/// `x-forwarded-*`, `x-request-id`): Envoy checks none of them in trailers.
pub fn removals<'p>(policy: &'p Policy, target: Option<Target>, trailers: &Headers) -> Vec<Removal<'p>> {
    let mut out: Vec<Removal<'p>> = Vec::new();
    for (name, _) in trailers {
        let name = name.to_ascii_lowercase();
        if out.iter().any(|r| r.name == name) {
            continue;
        }
        let rule =
            header_rule(policy, target, &name).or_else(|| left_to_envoy(&name).then_some(ClientRule::NotATrailer));
        if let Some(rule) = rule {
            out.push(Removal { name, rule });
        }
    }
    out
}

fn header_rule<'p>(policy: &'p Policy, target: Option<Target>, name: &str) -> Option<ClientRule<'p>> {
    match target {
        None => removal_rule(policy, None, name),
        Some(Target::Provider(i)) => provider_rule(policy, policy.providers.get(i)?, name),
        Some(Target::Chain(c)) => {
            let chain = policy.chains.get(c)?;
            // Judged for every provider of the chain; a chain without providers keeps only the
            // rules that hold without a provider.
            chain
                .attempts
                .iter()
                .filter_map(|a| policy.providers.get(a.provider))
                .find_map(|p| provider_rule(policy, p, name))
                .or_else(|| removal_rule(policy, None, name))
        }
    }
}

/// The header rules for `provider`, and one more: a name its rules set or rename as a header
/// (`set_headers`, `default_headers`, `forward_headers` targets, `client_headers.rename` sources and
/// targets) never passes as a trailer. The filter's value (or the renamed one) wins in the
/// headers; a trailer of that name would follow it to a backend that merges trailers.
fn provider_rule<'p>(policy: &'p Policy, provider: &'p Provider, name: &str) -> Option<ClientRule<'p>> {
    removal_rule(policy, Some(provider), name).or_else(|| {
        let set = provider.set_headers.iter().chain(&provider.default_headers).any(|(n, _)| n == name)
            || provider.forward_headers.iter().any(|f| f.header == name)
            || provider.client_rename.iter().any(|(from, to)| from == name || to == name);
        set.then_some(ClientRule::SetAsHeader)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{BodyModel, Decision, Request, decide};

    fn policy() -> Policy {
        Policy::from_json(
            br#"{"providers":[
                {"name":"vllm","models":["llama-*"],"remove_headers":["x-secret"]},
                {"name":"byok","models":["byok"],"client_auth":"forward","client_headers":{"mode":"allowlist","forward":["x-keep"]}}
            ]}"#,
        )
        .expect("valid")
    }

    fn pairs(names: &[&str]) -> Vec<(String, Vec<u8>)> {
        names.iter().map(|n| (n.to_string(), b"v".to_vec())).collect()
    }

    fn removed(p: &Policy, provider: Option<usize>, names: &[&str]) -> Vec<String> {
        removals(p, provider.map(Target::Provider), &pairs(names)).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn every_name_the_header_rules_remove_is_removed_from_trailers() {
        let p = policy();
        let hostile = [
            "x-llamastack-provider-data",
            "X-OGX-Provider-Data",
            "x-llm-provider",
            "x-llm-model",
            "x-envoy-upstream-rq-timeout-ms",
            "cookie",
            "proxy-authorization",
            "authorization",
            "x-api-key",
            "x-secret",
        ];
        for name in hostile {
            let trailers = pairs(&[name]);
            // The trailer rule agrees with what the header rules do to the same name.
            let request = [(name.to_string(), b"{}".to_vec()), (":path".into(), b"/".to_vec())];
            let Decision::Forward(rewrite) =
                decide(&p, &Request { headers: &request, body: BodyModel::Model("llama-3".into()) })
            else {
                panic!("forwarded")
            };
            let lower = name.to_ascii_lowercase();
            assert!(rewrite.remove.iter().any(|r| r.name == lower), "{name} is removed from headers");
            assert_eq!(removals(&p, target_of(&p, &rewrite), &trailers).len(), 1, "{name} removed from trailers");
        }
    }

    #[test]
    fn names_envoy_manages_only_as_headers_never_pass_as_trailers() {
        let p = policy();
        for name in
            ["host", "content-length", "transfer-encoding", "x-forwarded-for", "x-forwarded-host", "x-request-id", "te"]
        {
            for provider in [None, Some(0), Some(1)] {
                assert_eq!(removed(&p, provider, &[name]), vec![name.to_string()], "{name} {provider:?}");
            }
        }
    }

    #[test]
    fn provider_rules_decide_the_rest() {
        let p = policy();
        // The default client-header rule: only `x-*` names pass.
        assert_eq!(removed(&p, Some(0), &["x-checksum", "grpc-status"]), vec!["grpc-status".to_string()]);
        // Allowlist: only the listed names survive; bring-your-own-key keeps the client's key.
        assert_eq!(removed(&p, Some(1), &["x-keep", "x-other", "authorization"]), vec!["x-other".to_string()]);
        // No provider: client credentials are removed, other names pass.
        assert_eq!(removed(&p, None, &["authorization", "x-checksum"]), vec!["authorization".to_string()]);
    }

    #[test]
    fn a_chain_removes_what_any_of_its_providers_would() {
        let p = Policy::from_json(
            br#"{"providers":[
                {"name":"a","models":[],"client_auth":"forward"},
                {"name":"b","models":[],"client_headers":{"mode":"allowlist","forward":["x-keep"]}}
            ],"fallbacks":[{"name":"ab","models":["m"],"attempts":[{"provider":"a"},{"provider":"b"}]}]}"#,
        )
        .expect("valid");
        let Decision::Forward(rewrite) =
            decide(&p, &Request { headers: &pairs(&[":path"]), body: BodyModel::Model("m".into()) })
        else {
            panic!("forwarded")
        };
        let target = target_of(&p, &rewrite);
        assert_eq!(target, Some(Target::Chain(0)));
        let removed: Vec<String> = removals(&p, target, &pairs(&["x-keep", "x-other", "authorization", "cookie"]))
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(removed, vec!["x-other".to_string(), "authorization".to_string(), "cookie".to_string()]);
    }

    #[test]
    fn names_the_provider_sets_or_renames_never_pass_as_trailers() {
        let p = Policy::from_json(
            br#"{"providers":[{"name":"a","models":["m"],"client_auth":"forward",
                "forward_headers":{"tenant":"x-tenant-id"},"set_headers":{"authorization":"Bearer gw","x-gateway":"g"},
                "default_headers":{"x-tier":"free"},"client_headers":{"rename":{"x-customer-id":"x-maas-customer"}}}]}"#,
        )
        .expect("valid");
        let sent =
            ["authorization", "x-gateway", "x-tenant-id", "x-tier", "x-customer-id", "x-maas-customer", "x-api-key"];
        let got = removed(&p, Some(0), &sent);
        assert_eq!(got, sent[..6].iter().map(|n| n.to_string()).collect::<Vec<_>>(), "bring-your-own x-api-key passes");
        assert!(
            removals(&p, Some(Target::Provider(0)), &pairs(&["x-tier"]))
                .iter()
                .all(|r| r.rule == ClientRule::SetAsHeader)
        );
    }

    #[test]
    fn each_name_once_whatever_its_case() {
        let p = policy();
        assert_eq!(removed(&p, Some(0), &["Cookie", "cookie", "COOKIE"]), vec!["cookie".to_string()]);
    }
}
