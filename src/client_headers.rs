//! Which headers the client itself sent are removed before the request goes upstream
//! (SPEC §2 `client_headers`, `client_auth`, `remove_headers`, §3 for requests without a provider).

use crate::blocklist::{CLIENT_IDENTITY_NAMES, REQUEST_OVERRIDE_NAMES, is_client_auth};
use crate::config::{ClientAuth, ClientHeaderMode};
use crate::header_syntax::{Pattern, first_match};
use crate::policy::{Policy, Provider};

/// The rule that removed a client header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRule<'p> {
    /// A provider-data header (`provider_data.strip`).
    ProviderData,
    /// A routing header: only the filter sets these.
    Routing,
    /// `x-envoy-*`: Envoy's control headers (timeouts, retries).
    EnvoyControl,
    /// `cookie` and `proxy-authorization`: never forwarded.
    AlwaysRemoved,
    /// A header claiming who the client is that Envoy does not manage (`forwarded`, `x-real-ip`, …).
    ClientIdentity,
    /// A header asking the backend for another method or URL than the request line's, or to skip
    /// its middleware (`x-http-method-override`, `x-original-url`, …).
    RequestOverride,
    /// The client's own credentials (`client_auth: strip`, or no provider resolved).
    ClientAuth,
    /// The operator's `blocked_headers` pattern: blocked from provider data and from the client.
    Blocked(&'p str),
    /// The provider's `remove_headers` pattern.
    RemoveHeaders(&'p str),
    /// A `client_headers.drop` pattern.
    Drop(&'p str),
    /// `client_headers.mode: allowlist` and the name is neither essential nor in `forward`.
    NotAllowlisted,
    /// A fallback chain: some provider of the chain does not receive this header (or sets it
    /// itself), so it is held back and restored only for the attempts whose provider accepts it.
    HeldForAttempts,
    /// `client_headers.rename`: kept, but reaches the provider under the name `to`.
    Renamed { to: &'p str },
    /// A request trailer with a name Envoy manages only as a header (framing, host, hop-by-hop,
    /// `x-forwarded-*`, `x-request-id`): as a trailer nothing checks it, so it never passes.
    NotATrailer,
    /// A request trailer with a name the provider's rules set or rename as a header: the header's
    /// value wins, so the trailer never follows it.
    SetAsHeader,
}

impl ClientRule<'_> {
    /// Rules that remove a header for every provider alike (SPEC §2 "always removes").
    pub fn is_always(&self) -> bool {
        matches!(
            self,
            ClientRule::ProviderData
                | ClientRule::Routing
                | ClientRule::EnvoyControl
                | ClientRule::AlwaysRemoved
                | ClientRule::ClientIdentity
                | ClientRule::RequestOverride
                | ClientRule::Blocked(_)
        )
    }
}

impl std::fmt::Display for ClientRule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientRule::ProviderData => write!(f, "provider_data.strip"),
            ClientRule::Routing => write!(f, "routing header (set only by the filter)"),
            ClientRule::EnvoyControl => write!(f, "x-envoy-* (Envoy control header)"),
            ClientRule::AlwaysRemoved => write!(f, "always removed"),
            ClientRule::ClientIdentity => write!(f, "client identity header (always removed)"),
            ClientRule::RequestOverride => write!(f, "method or URL override header (always removed)"),
            ClientRule::ClientAuth => write!(f, "client_auth: strip"),
            ClientRule::Blocked(p) => write!(f, "blocked_headers {p:?}"),
            ClientRule::RemoveHeaders(p) => write!(f, "remove_headers {p:?}"),
            ClientRule::Drop(p) => write!(f, "client_headers.drop {p:?}"),
            ClientRule::NotAllowlisted => write!(f, "client_headers.mode: allowlist"),
            ClientRule::HeldForAttempts => {
                write!(f, "fallback chain: restored only for attempts whose provider accepts it")
            }
            ClientRule::Renamed { to } => write!(f, "client_headers.rename to {to:?}"),
            ClientRule::NotATrailer => write!(f, "managed by Envoy as a header, never accepted as a trailer"),
            ClientRule::SetAsHeader => {
                write!(f, "set or renamed by the filter as a header, never accepted as a trailer")
            }
        }
    }
}

/// Names the filter leaves to Envoy: framing, host, the forwarding headers Envoy maintains and
/// the hop-by-hop headers Envoy's codecs handle.
pub fn left_to_envoy(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("x-forwarded-")
        || matches!(
            name,
            "host"
                | "content-type"
                | "content-length"
                | "transfer-encoding"
                | "x-request-id"
                | "connection"
                | "upgrade"
                | "te"
                | "keep-alive"
                | "proxy-connection"
                | "trailer"
                | "expect"
        )
}

/// Whether every name `pattern` (lowercase) can match is [`left_to_envoy`]: a
/// `remove_headers`, `client_headers.drop` or `client_headers.forward` entry like that would never
/// be applied, so it is a configuration error.
pub fn only_left_to_envoy(pattern: &Pattern) -> bool {
    let text = pattern.as_str();
    match text.find(['*', '?']) {
        None => left_to_envoy(text),
        Some(wildcard) => {
            let literal = &text[..wildcard];
            literal.starts_with(':') || literal.starts_with("x-forwarded-")
        }
    }
}

/// Whether every name `pattern` (lowercase) can match is removed from the client's headers
/// whatever the provider says (routing and provider-data headers aside, which the caller knows):
/// a `client_headers.forward` entry like that would never be applied.
pub fn only_always_removed(pattern: &Pattern) -> bool {
    let text = pattern.as_str();
    match text.find(['*', '?']) {
        None => text.starts_with("x-envoy-") || always_removed(text).is_some(),
        Some(wildcard) => text[..wildcard].starts_with("x-envoy-"),
    }
}

/// `cookie`, `proxy-authorization`, the client identity headers and the method/URL overrides:
/// removed in every mode, with or without a provider.
fn always_removed(name: &str) -> Option<ClientRule<'static>> {
    if name == "cookie" || name == "proxy-authorization" {
        return Some(ClientRule::AlwaysRemoved);
    }
    if REQUEST_OVERRIDE_NAMES.contains(&name) {
        return Some(ClientRule::RequestOverride);
    }
    CLIENT_IDENTITY_NAMES.contains(&name).then_some(ClientRule::ClientIdentity)
}

/// Kept in `allowlist` mode without being listed in `forward` (unless a `drop` pattern matches).
fn allowlist_essential(name: &str) -> bool {
    matches!(name, "accept" | "accept-encoding" | "user-agent" | "traceparent" | "tracestate")
}

/// The rule that removes the client header `name` (lowercase), or `None` to keep it.
/// `provider` is `None` when no provider was resolved (SPEC §3): only the safety rules apply.
pub fn removal_rule<'p>(policy: &'p Policy, provider: Option<&'p Provider>, name: &str) -> Option<ClientRule<'p>> {
    if policy.is_provider_data_header(name) {
        return policy.strip_provider_data.then_some(ClientRule::ProviderData);
    }
    if policy.is_routing_header(name) {
        return Some(ClientRule::Routing);
    }
    if name.starts_with("x-envoy-") {
        return Some(ClientRule::EnvoyControl);
    }
    if let Some(rule) = always_removed(name) {
        return Some(rule);
    }
    if left_to_envoy(name) {
        return None;
    }
    let blocked = || policy.blocklist.operator_match(name).map(|b| ClientRule::Blocked(b.as_str()));
    let Some(p) = provider else {
        return if is_client_auth(name) { Some(ClientRule::ClientAuth) } else { blocked() };
    };
    // `client_auth` alone decides the client's credentials, in both modes: `drop`, `forward`,
    // `remove_headers` and `blocked_headers` patterns (`x-*` matches `x-api-key`) never change
    // what it says.
    if is_client_auth(name) {
        return (p.client_auth == ClientAuth::Strip).then_some(ClientRule::ClientAuth);
    }
    if let Some(rule) = blocked() {
        return Some(rule);
    }
    if let Some(pattern) = first_match(&p.remove_headers, name) {
        return Some(ClientRule::RemoveHeaders(pattern.as_str()));
    }
    if let Some(pattern) = first_match(&p.client_drop, name) {
        return Some(ClientRule::Drop(pattern.as_str()));
    }
    let kept = match p.client_mode {
        ClientHeaderMode::All => true,
        ClientHeaderMode::Allowlist => allowlist_essential(name) || first_match(&p.client_forward, name).is_some(),
    };
    (!kept).then_some(ClientRule::NotAllowlisted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_json(
            br#"{"providers":[
                {"name":"all","models":["a"],"remove_headers":["x-secret"],"client_headers":{"mode":"all"}},
                {"name":"allow","models":["b"],"client_headers":{"mode":"allowlist","forward":["x-*","anthropic-beta"],"drop":["x-stainless-*","user-agent"]}},
                {"name":"byok","models":["c"],"client_auth":"forward","client_headers":{"mode":"allowlist","drop":["x-*"]},"remove_headers":["*-key"]},
                {"name":"default","models":["d"]}
            ]}"#,
        )
        .expect("valid")
    }

    fn rule<'p>(p: &'p Policy, provider: Option<usize>, name: &str) -> Option<ClientRule<'p>> {
        removal_rule(p, provider.map(|i| &p.providers[i]), name)
    }

    #[test]
    fn safety_rules_apply_in_every_mode_and_without_a_provider() {
        let p = policy();
        for provider in [None, Some(0), Some(1), Some(2)] {
            assert_eq!(rule(&p, provider, "x-llamastack-provider-data"), Some(ClientRule::ProviderData));
            assert_eq!(rule(&p, provider, "x-ogx-provider-data"), Some(ClientRule::ProviderData));
            assert_eq!(rule(&p, provider, "x-llm-provider"), Some(ClientRule::Routing));
            assert_eq!(rule(&p, provider, "x-llm-model"), Some(ClientRule::Routing));
            assert_eq!(rule(&p, provider, "x-envoy-upstream-rq-timeout-ms"), Some(ClientRule::EnvoyControl));
            assert_eq!(rule(&p, provider, "cookie"), Some(ClientRule::AlwaysRemoved));
            assert_eq!(rule(&p, provider, "proxy-authorization"), Some(ClientRule::AlwaysRemoved));
            for identity in CLIENT_IDENTITY_NAMES {
                assert_eq!(rule(&p, provider, identity), Some(ClientRule::ClientIdentity), "{identity} {provider:?}");
            }
            for name in REQUEST_OVERRIDE_NAMES {
                assert_eq!(rule(&p, provider, name), Some(ClientRule::RequestOverride), "{name} {provider:?}");
            }
            assert_eq!(
                rule(&p, provider, "x-forwarded"),
                Some(ClientRule::ClientIdentity),
                "the x-forwarded- prefix misses it"
            );
            for kept in [":path", "host", "content-type", "content-length", "x-forwarded-for", "x-request-id"] {
                assert_eq!(rule(&p, provider, kept), None, "{kept} {provider:?}");
            }
        }
        assert_eq!(rule(&p, None, "authorization"), Some(ClientRule::ClientAuth));
        assert_eq!(rule(&p, None, "x-api-key"), Some(ClientRule::ClientAuth));
        assert_eq!(rule(&p, None, "x-anything"), None);
    }

    #[test]
    fn blocked_headers_are_removed_from_the_client_too_credentials_and_envoys_headers_aside() {
        let p = Policy::from_json(
            br#"{"blocked_headers":["x-internal-*","x-*-key","x-forwarded-*"],"providers":[
                {"name":"all","models":["a"],"client_headers":{"mode":"all"}},
                {"name":"byok","models":["b"],"client_auth":"forward"}]}"#,
        )
        .expect("valid");
        for provider in [None, Some(0), Some(1)] {
            assert_eq!(
                rule(&p, provider, "x-internal-debug"),
                Some(ClientRule::Blocked("x-internal-*")),
                "{provider:?}"
            );
            assert_eq!(rule(&p, provider, "x-forwarded-for"), None, "Envoy's, {provider:?}");
            assert_eq!(rule(&p, provider, "x-custom"), None, "{provider:?}");
        }
        assert_eq!(rule(&p, Some(0), "x-api-key"), Some(ClientRule::ClientAuth));
        assert_eq!(rule(&p, Some(1), "x-api-key"), None, "client_auth alone decides credentials");
        assert_eq!(rule(&p, Some(1), "x-other-key"), Some(ClientRule::Blocked("x-*-key")));
        assert_eq!(
            rule(&p, Some(0), "x_internal_debug"),
            Some(ClientRule::Blocked("x-internal-*")),
            "underscore spelling"
        );
    }

    #[test]
    fn patterns_that_could_never_apply() {
        for p in ["x-forwarded-for", "X-Forwarded-*", "x-forwarded-?", "x-request-id", "host", ":path", ":*", "te"] {
            assert!(only_left_to_envoy(&Pattern::header(p)), "{p}");
        }
        for p in ["x-*", "*", "x-forwarded", "x-forward*", "x-request-*", "x-stainless-*", "hos?"] {
            assert!(!only_left_to_envoy(&Pattern::header(p)), "{p}");
        }
        for p in ["cookie", "proxy-authorization", "x-real-ip", "forwarded", "x-envoy-*", "X-Envoy-Retry-On"] {
            assert!(only_always_removed(&Pattern::header(p)), "{p}");
        }
        for p in ["x-*", "x-env*", "cookies", "authorization"] {
            assert!(!only_always_removed(&Pattern::header(p)), "{p}");
        }
    }

    #[test]
    fn mode_all_keeps_everything_but_drop_and_remove_patterns() {
        let p = policy();
        assert_eq!(rule(&p, Some(0), "x-custom"), None);
        assert_eq!(rule(&p, Some(0), "x-stainless-lang"), Some(ClientRule::Drop("x-stainless-*")));
        assert_eq!(rule(&p, Some(0), "x-secret"), Some(ClientRule::RemoveHeaders("x-secret")));
        for auth in ["authorization", "api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key"] {
            assert_eq!(rule(&p, Some(0), auth), Some(ClientRule::ClientAuth), "{auth}");
        }
    }

    #[test]
    fn allowlist_keeps_essentials_and_forward_patterns_minus_drop() {
        let p = policy();
        assert_eq!(rule(&p, Some(1), "accept"), None);
        assert_eq!(rule(&p, Some(1), "traceparent"), None);
        assert_eq!(rule(&p, Some(1), "x-custom"), None);
        assert_eq!(rule(&p, Some(1), "anthropic-beta"), None);
        assert_eq!(rule(&p, Some(1), "openai-organization"), Some(ClientRule::NotAllowlisted));
        assert_eq!(rule(&p, Some(1), "x-stainless-os"), Some(ClientRule::Drop("x-stainless-*")));
        assert_eq!(rule(&p, Some(1), "user-agent"), Some(ClientRule::Drop("user-agent")));
        assert_eq!(rule(&p, Some(1), "authorization"), Some(ClientRule::ClientAuth));
    }

    #[test]
    fn bring_your_own_key_keeps_client_credentials() {
        let p = policy();
        assert_eq!(rule(&p, Some(2), "authorization"), None);
        assert_eq!(rule(&p, Some(2), "x-api-key"), None);
        assert_eq!(rule(&p, Some(2), "proxy-authorization"), Some(ClientRule::AlwaysRemoved));
        assert_eq!(rule(&p, Some(2), "x-api-key"), None, "client_auth alone decides, not drop \"x-*\"");
        assert_eq!(rule(&p, Some(2), "api-key"), None, "client_auth alone decides, not remove_headers \"*-key\"");
        assert_eq!(rule(&p, Some(2), "x-custom"), Some(ClientRule::Drop("x-*")));
        assert_eq!(rule(&p, Some(2), "openai-organization"), Some(ClientRule::NotAllowlisted));
    }

    #[test]
    fn the_default_is_litellms_rule_x_headers_only_never_stainless_or_vendor_headers() {
        let p = policy();
        assert_eq!(rule(&p, Some(3), "x-custom"), None);
        assert_eq!(rule(&p, Some(3), "X-Trace-Id".to_ascii_lowercase().as_str()), None);
        assert_eq!(rule(&p, Some(3), "x-stainless-retry-count"), Some(ClientRule::Drop("x-stainless-*")));
        for vendor in ["openai-organization", "openai-project", "anthropic-version", "anthropic-beta", "openai-beta"] {
            assert_eq!(rule(&p, Some(3), vendor), Some(ClientRule::NotAllowlisted), "{vendor}");
        }
        for essential in ["accept", "accept-encoding", "user-agent", "traceparent", "tracestate"] {
            assert_eq!(rule(&p, Some(3), essential), None, "{essential}");
        }
        for auth in ["authorization", "x-api-key", "x-goog-api-key", "api-key", "ocp-apim-subscription-key"] {
            assert_eq!(rule(&p, Some(3), auth), Some(ClientRule::ClientAuth), "{auth}");
        }
    }
}
