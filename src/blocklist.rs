//! Which header names provider data may never set, override or smuggle (SPEC §4), and which names
//! are the client's own credentials.

use crate::header_syntax::{Pattern, first_match};

/// Core blocklist, exact names. Pseudo-headers (`:…`) and the prefixes below are blocked too.
pub const CORE_NAMES: &[&str] = &[
    // Framing and connection handling.
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "max-forwards",
    "via",
    // Session and proxy credentials.
    "cookie",
    "set-cookie",
    "proxy-authorization",
    // Who the client is: set by Envoy or by a trusted proxy, never by the client.
    "forwarded",
    "x-forwarded",
    "x-real-ip",
    "cf-connecting-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-request-id",
    // What the backend should do instead of what the request line says: REQUEST_OVERRIDE_NAMES.
];

/// Core blocklist, prefixes: the forwarding headers Envoy maintains and Envoy's control headers.
pub const CORE_PREFIXES: &[&str] = &["x-forwarded-", "x-envoy-"];

/// Client-sent headers that claim who the client is and that Envoy does not manage: removed from
/// every request, like `cookie` (Envoy owns `x-forwarded-*` and `x-request-id`).
pub const CLIENT_IDENTITY_NAMES: &[&str] =
    &["forwarded", "x-forwarded", "x-real-ip", "true-client-ip", "cf-connecting-ip", "x-client-ip", "client-ip"];

/// Core blocklist too. Client-sent headers that tell a backend (or a framework in front of it) to use another method
/// or URL than the request line, or to skip its middleware (Next.js `x-middleware-subrequest`):
/// removed from every request, like `cookie`. The default allowlist `x-*` would otherwise forward
/// them, although provider data may never set them (core blocklist).
pub const REQUEST_OVERRIDE_NAMES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-middleware-subrequest",
];

/// Headers that carry the client's own credentials (LiteLLM's list). `client_auth: strip` removes
/// them; provider data can set `authorization` only through an explicit `forward_headers` mapping.
pub const CLIENT_AUTH_NAMES: &[&str] =
    &["authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key"];

/// `name` must be lowercase. Underscore spellings count (`x_api_key`): CGI/WSGI-style servers
/// read `_` and `-` alike.
pub fn is_client_auth(name: &str) -> bool {
    CLIENT_AUTH_NAMES.contains(&name) || (name.contains('_') && CLIENT_AUTH_NAMES.contains(&dashed(name).as_str()))
}

/// `name` with every `_` read as `-`, the way CGI/WSGI-style servers (and Envoy's
/// `headers_with_underscores_action` concerns) treat header names.
fn dashed(name: &str) -> String {
    name.replace('_', "-")
}

/// Why a (lowercased) name is blocked: the rule a reader can look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedBy<'p> {
    PseudoHeader,
    /// A core name or prefix (SPEC §4).
    Core(&'static str),
    /// One of the configured provider-data headers.
    ProviderDataHeader,
    /// One of the two routing headers.
    RoutingHeader,
    /// An operator `blocked_headers` pattern.
    Operator(&'p str),
}

impl std::fmt::Display for BlockedBy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockedBy::PseudoHeader => write!(f, "pseudo-header"),
            BlockedBy::Core(n) => write!(f, "core blocklist ({n})"),
            BlockedBy::ProviderDataHeader => write!(f, "provider-data header"),
            BlockedBy::RoutingHeader => write!(f, "routing header"),
            BlockedBy::Operator(p) => write!(f, "blocked_headers ({p})"),
        }
    }
}

/// The core blocklist plus the configured provider-data headers, routing headers and
/// `blocked_headers`; built once at configuration time.
#[derive(Debug, Clone)]
pub struct Blocklist {
    provider_data_headers: Vec<String>,
    routing_headers: [String; 2],
    operator: Vec<Pattern>,
}

impl Blocklist {
    /// All names must already be lowercase.
    pub fn new(provider_data_headers: Vec<String>, routing_headers: [String; 2], operator: Vec<Pattern>) -> Self {
        Blocklist { provider_data_headers, routing_headers, operator }
    }

    /// The core part only (SPEC §4 without the configured names). Underscore spellings are
    /// blocked like the dashed name (`x_forwarded_for`): CGI/WSGI-style servers read them alike.
    pub fn core(name: &str) -> Option<BlockedBy<'static>> {
        Self::core_exact(name).or_else(|| name.contains('_').then(|| Self::core_exact(&dashed(name))).flatten())
    }

    fn core_exact(name: &str) -> Option<BlockedBy<'static>> {
        if name.starts_with(':') {
            return Some(BlockedBy::PseudoHeader);
        }
        if let Some(n) = CORE_NAMES.iter().chain(REQUEST_OVERRIDE_NAMES).find(|n| **n == name) {
            return Some(BlockedBy::Core(n));
        }
        CORE_PREFIXES.iter().find(|p| name.starts_with(**p)).map(|p| BlockedBy::Core(p))
    }

    /// One of the two routing headers (`name` lowercase).
    pub fn is_routing_header(&self, name: &str) -> bool {
        self.routing_headers.iter().any(|h| h == name)
    }

    /// The operator's `blocked_headers` pattern that matches `name` (lowercase): such a header is
    /// also removed from what the client itself sends (a blocked name any client could simply
    /// send would not be blocked).
    /// Underscore spellings count, as in [`Blocklist::check`].
    pub fn operator_match(&self, name: &str) -> Option<&Pattern> {
        first_match(&self.operator, name)
            .or_else(|| name.contains('_').then(|| first_match(&self.operator, &dashed(name))).flatten())
    }

    /// `name` must be lowercase. Underscore spellings are blocked like the dashed name.
    pub fn check(&self, name: &str) -> Option<BlockedBy<'_>> {
        self.check_exact(name).or_else(|| name.contains('_').then(|| self.check_exact(&dashed(name))).flatten())
    }

    fn check_exact(&self, name: &str) -> Option<BlockedBy<'_>> {
        if let Some(b) = Self::core_exact(name) {
            return Some(b);
        }
        if self.provider_data_headers.iter().any(|h| h == name) {
            return Some(BlockedBy::ProviderDataHeader);
        }
        if self.routing_headers.iter().any(|h| h == name) {
            return Some(BlockedBy::RoutingHeader);
        }
        first_match(&self.operator, name).map(|p| BlockedBy::Operator(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Blocklist {
        Blocklist::new(
            vec!["x-llamastack-provider-data".into()],
            ["x-llm-provider".into(), "x-llm-model".into()],
            vec![Pattern::header("X-Internal-*")],
        )
    }

    #[test]
    fn core_names_prefixes_and_pseudo_headers() {
        let b = list();
        assert_eq!(b.check(":authority"), Some(BlockedBy::PseudoHeader));
        assert_eq!(b.check("host"), Some(BlockedBy::Core("host")));
        assert_eq!(b.check("x-forwarded-for"), Some(BlockedBy::Core("x-forwarded-")));
        assert_eq!(b.check("x-envoy-upstream-rq-timeout-ms"), Some(BlockedBy::Core("x-envoy-")));
        assert_eq!(b.check("proxy-authorization"), Some(BlockedBy::Core("proxy-authorization")));
        assert_eq!(b.check("x-forwarded"), Some(BlockedBy::Core("x-forwarded")), "the x-forwarded- prefix misses it");
        for n in CORE_NAMES.iter().chain(CLIENT_IDENTITY_NAMES).chain(REQUEST_OVERRIDE_NAMES) {
            assert!(b.check(n).is_some(), "{n}");
        }
    }

    /// SPEC §4, name by name: each one is blocked.
    #[test]
    fn every_spec_name_is_blocked() {
        for name in [
            "host",
            "content-type",
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "te",
            "trailer",
            "expect",
            "cookie",
            "set-cookie",
            "forwarded",
            "proxy-authorization",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded",
            "x-real-ip",
            "cf-connecting-ip",
            "true-client-ip",
            "x-client-ip",
            "client-ip",
            "x-envoy-original-path",
            "content-encoding",
            "via",
            "max-forwards",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-rewrite-url",
            "x-request-id",
            "x-middleware-subrequest",
            ":path",
        ] {
            assert!(Blocklist::core(name).is_some(), "{name}");
        }
        for allowed in ["x-forwardedx", "vias", "x-request", "x-http", "content-language", "x-client"] {
            assert_eq!(Blocklist::core(allowed), None, "{allowed}");
        }
    }

    #[test]
    fn underscore_spellings_are_blocked_like_the_dashed_names() {
        let b = list();
        assert_eq!(b.check("x_forwarded_for"), Some(BlockedBy::Core("x-forwarded-")));
        assert_eq!(b.check("x_real_ip"), Some(BlockedBy::Core("x-real-ip")));
        assert_eq!(b.check("content_length"), Some(BlockedBy::Core("content-length")));
        assert_eq!(b.check("x_envoy_retry_on"), Some(BlockedBy::Core("x-envoy-")));
        assert_eq!(b.check("x_llamastack_provider_data"), Some(BlockedBy::ProviderDataHeader));
        assert_eq!(b.check("x_llm_provider"), Some(BlockedBy::RoutingHeader));
        assert_eq!(b.check("x_internal_debug"), Some(BlockedBy::Operator("x-internal-*")));
        assert!(is_client_auth("x_api_key") && is_client_auth("api_key") && is_client_auth("x_goog_api_key"));
        assert_eq!(b.check("x_maas_tier"), None);
        assert!(!is_client_auth("x_custom"));
    }

    #[test]
    fn configured_names() {
        let b = list();
        assert_eq!(b.check("x-llamastack-provider-data"), Some(BlockedBy::ProviderDataHeader));
        assert_eq!(b.check("x-llm-model"), Some(BlockedBy::RoutingHeader));
        assert_eq!(b.check("x-internal-debug"), Some(BlockedBy::Operator("x-internal-*")));
        assert_eq!(b.check("authorization"), None, "authorization is governed by forward_headers");
        assert_eq!(b.check("x-maas-subscription"), None);
    }
}
