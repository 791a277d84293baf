//! The configuration compiled into a ready-to-run policy: names lowercased, patterns compiled,
//! providers indexed by exact model name. Built once in `on_configure`; every semantic problem is
//! collected, so an operator sees them all in one log line.

use crate::blocklist::{Blocklist, is_client_auth};
use crate::client_headers::{only_always_removed, only_left_to_envoy};
use crate::config::{
    self, ClientAuth, ClientHeaderMode, FallbackConfig, OnInvalid, PluginConfig, ProviderConfig, Role,
};
use crate::header_syntax::{Pattern, check_value, is_header_pattern, is_token};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Policy {
    /// Lowercased provider-data header names, in order of preference.
    pub provider_data_headers: Vec<String>,
    pub strip_provider_data: bool,
    pub provider_data_max_bytes: usize,
    pub body_max_bytes: usize,
    pub provider_header: String,
    pub model_header: String,
    /// Index of the provider serving unknown models; `None` means reject them.
    pub default_provider: Option<usize>,
    pub on_invalid: OnInvalid,
    pub blocklist: Blocklist,
    pub providers: Vec<Provider>,
    exact_models: BTreeMap<String, usize>,
    /// Wildcard model patterns in provider order.
    model_patterns: Vec<(Pattern, usize)>,
    /// Where this instance runs (SPEC §8).
    pub role: Role,
    /// Fallback chains, matched before providers.
    pub chains: Vec<Chain>,
    chain_exact_models: BTreeMap<String, usize>,
    chain_model_patterns: Vec<(Pattern, usize)>,
}

/// A fallback chain (SPEC §8): the providers Envoy's retries try, in order.
#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    pub attempts: Vec<ChainAttempt>,
}

#[derive(Debug, Clone)]
pub struct ChainAttempt {
    /// Index into [`Policy::providers`].
    pub provider: usize,
    /// Replaces the body's top-level `model` for this attempt.
    pub model: Option<String>,
}

/// What serves a model: one provider, or a fallback chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Provider(usize),
    Chain(usize),
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// `<name>_extra_headers`: the only extra-headers map this provider reads.
    pub extra_headers_key: String,
    pub forward_headers: Vec<ForwardRule>,
    pub extra_headers: Vec<Pattern>,
    pub generic_extra_headers: bool,
    pub client_mode: ClientHeaderMode,
    pub client_forward: Vec<Pattern>,
    pub client_drop: Vec<Pattern>,
    pub client_auth: ClientAuth,
    /// Lowercased name → value.
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<Pattern>,
}

/// One `forward_headers` entry: provider-data `key` → `header` (lowercased), value prefixed.
#[derive(Debug, Clone)]
pub struct ForwardRule {
    pub key: String,
    pub header: String,
    pub prefix: String,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        write!(f, "{n} configuration problem{}: {}", if n == 1 { "" } else { "s" }, self.0.join("; "))
    }
}

impl Policy {
    /// Parses and compiles a configuration. Schema problems (unknown fields, wrong types) and
    /// semantic ones are reported together.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigErrors> {
        let (config, mut errors) = config::parse_partial(bytes);
        let Some(config) = config else { return Err(ConfigErrors(errors)) };
        match Policy::try_from(config) {
            Ok(policy) if errors.is_empty() => Ok(policy),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(ConfigErrors(more)) => {
                errors.extend(more);
                Err(ConfigErrors(errors))
            }
        }
    }

    /// The provider that serves `model`: an exact name anywhere beats any pattern; among patterns
    /// the first provider (in configuration order) wins. `None` when nothing matches.
    pub fn provider_for_model(&self, model: &str) -> Option<usize> {
        if let Some(&i) = self.exact_models.get(model) {
            return Some(i);
        }
        self.model_patterns.iter().find(|(p, _)| p.matches(model)).map(|&(_, i)| i)
    }

    /// What serves `model`: a chain first (an exact name in any chain beats any chain pattern; then
    /// the first chain in order), then a provider as [`Policy::provider_for_model`] says.
    pub fn target_for_model(&self, model: &str) -> Option<Target> {
        if let Some(&i) = self.chain_exact_models.get(model) {
            return Some(Target::Chain(i));
        }
        if let Some(&(_, i)) = self.chain_model_patterns.iter().find(|(p, _)| p.matches(model)) {
            return Some(Target::Chain(i));
        }
        self.provider_for_model(model).map(Target::Provider)
    }

    /// Index of the chain called `name`.
    pub fn chain_index(&self, name: &str) -> Option<usize> {
        self.chains.iter().position(|c| c.name == name)
    }

    /// Whether any rule depends on the body's model. With no providers every request is handled
    /// the same way, so the body is never read.
    pub fn needs_model(&self) -> bool {
        !self.providers.is_empty()
    }

    /// Index of the provider called `name` (the name a [`crate::decision::Rewrite`] carries).
    pub fn provider_index(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == name)
    }

    pub fn is_provider_data_header(&self, name: &str) -> bool {
        self.provider_data_headers.iter().any(|h| h == name)
    }

    pub fn is_routing_header(&self, name: &str) -> bool {
        name == self.provider_header || name == self.model_header
    }
}

impl TryFrom<PluginConfig> for Policy {
    type Error = ConfigErrors;

    fn try_from(c: PluginConfig) -> Result<Policy, ConfigErrors> {
        let mut errors = Vec::new();

        let provider_data_headers = lowercase_names(&c.provider_data.headers, "provider_data.headers", &mut errors);
        let provider_header = c.routing.provider_header.to_ascii_lowercase();
        let model_header = c.routing.model_header.to_ascii_lowercase();
        for (field, name) in [("provider_header", &provider_header), ("model_header", &model_header)] {
            if !is_token(name) {
                errors.push(format!("routing.{field}: {name:?} is not a valid header name"));
            } else if let Some(b) = Blocklist::core(name) {
                errors.push(format!("routing.{field}: {name:?} is on the {b}"));
            } else if provider_data_headers.contains(name) {
                errors.push(format!("routing.{field}: {name:?} is also a provider-data header"));
            }
        }
        if provider_header == model_header {
            errors.push(format!("routing: provider_header and model_header are both {provider_header:?}"));
        }
        for name in &provider_data_headers {
            if let Some(b) = Blocklist::core(name) {
                errors.push(format!("provider_data.headers: {name:?} is on the {b}"));
            }
        }
        if c.body.max_bytes == 0 {
            errors.push("body.max_bytes: must be greater than 0".into());
        }
        if c.provider_data.max_bytes == 0 {
            errors.push("provider_data.max_bytes: must be greater than 0".into());
        }

        let operator = header_patterns(&c.blocked_headers, "blocked_headers", &mut errors);
        let blocklist =
            Blocklist::new(provider_data_headers.clone(), [provider_header.clone(), model_header.clone()], operator);

        let mut providers: Vec<Provider> = Vec::new();
        let mut exact_models = BTreeMap::new();
        let mut model_patterns = Vec::new();
        for (i, p) in c.providers.iter().enumerate() {
            let path = format!("providers[{i}] ({:?})", p.name);
            if providers.iter().any(|q| q.name == p.name) {
                errors.push(format!("{path}: duplicate provider name"));
            }
            for (j, m) in p.models.iter().enumerate() {
                if m.is_empty() {
                    errors.push(format!("{path}.models[{j}]: empty model pattern"));
                    continue;
                }
                let pattern = Pattern::new(m);
                if pattern.is_exact() {
                    exact_models.entry(m.clone()).or_insert(i);
                } else {
                    model_patterns.push((pattern, i));
                }
            }
            providers.push(compile_provider(p, &path, &blocklist, &mut errors));
        }

        let default_provider = match c.routing.unknown_model.as_str() {
            "reject" => None,
            name => {
                let found = providers.iter().position(|p| p.name == name);
                if found.is_none() {
                    errors.push(format!("routing.unknown_model: {name:?} is neither \"reject\" nor a provider name"));
                }
                found
            }
        };

        let (chains, chain_exact_models, chain_model_patterns) = compile_chains(&c.fallbacks, &providers, &mut errors);

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Policy {
            provider_data_headers,
            strip_provider_data: c.provider_data.strip,
            provider_data_max_bytes: c.provider_data.max_bytes,
            body_max_bytes: c.body.max_bytes,
            provider_header,
            model_header,
            default_provider,
            on_invalid: c.on_invalid,
            blocklist,
            providers,
            exact_models,
            model_patterns,
            role: c.role,
            chains,
            chain_exact_models,
            chain_model_patterns,
        })
    }
}

type CompiledChains = (Vec<Chain>, BTreeMap<String, usize>, Vec<(Pattern, usize)>);

/// Fallback chains (SPEC §8): 2+ attempts naming configured providers, none twice; names share
/// the providers' namespace.
fn compile_chains(fallbacks: &[FallbackConfig], providers: &[Provider], errors: &mut Vec<String>) -> CompiledChains {
    let mut chains: Vec<Chain> = Vec::new();
    let mut exact = BTreeMap::new();
    let mut patterns = Vec::new();
    for (i, f) in fallbacks.iter().enumerate() {
        let path = format!("fallbacks[{i}] ({:?})", f.name);
        if !valid_name(&f.name) {
            errors.push(format!("{path}.name: must be 1-64 characters of letters, digits, '-' and '_'"));
        }
        if f.name == "reject" {
            errors.push(format!("{path}.name: \"reject\" is reserved (routing.unknown_model)"));
        }
        if providers.iter().any(|p| p.name == f.name) {
            errors
                .push(format!("{path}.name: a provider has the same name (chains and providers share one namespace)"));
        }
        if chains.iter().any(|c| c.name == f.name) {
            errors.push(format!("{path}: duplicate chain name"));
        }
        for (j, m) in f.models.iter().enumerate() {
            if m.is_empty() {
                errors.push(format!("{path}.models[{j}]: empty model pattern"));
                continue;
            }
            let pattern = Pattern::new(m);
            if pattern.is_exact() {
                exact.entry(m.clone()).or_insert(i);
            } else {
                patterns.push((pattern, i));
            }
        }
        if f.attempts.len() < 2 {
            errors.push(format!("{path}.attempts: a chain needs 2 or more attempts"));
        }
        let mut attempts: Vec<ChainAttempt> = Vec::new();
        for (j, a) in f.attempts.iter().enumerate() {
            let at = format!("{path}.attempts[{j}]");
            let Some(provider) = providers.iter().position(|p| p.name == a.provider) else {
                errors.push(format!("{at}.provider: {:?} is not a configured provider", a.provider));
                continue;
            };
            if attempts.iter().any(|x| x.provider == provider) {
                errors.push(format!("{at}.provider: {:?} appears twice in the chain", a.provider));
            }
            if let Some(model) = &a.model
                && (model.is_empty() || check_value(model.as_bytes()).is_err())
            {
                errors.push(format!("{at}.model: must be non-empty, without control characters, at most 8192 bytes"));
            }
            attempts.push(ChainAttempt { provider, model: a.model.clone() });
        }
        chains.push(Chain { name: f.name.clone(), attempts });
    }
    (chains, exact, patterns)
}

/// A provider or chain name: it is sent as a header value and used in metric names.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn compile_provider(p: &ProviderConfig, path: &str, blocklist: &Blocklist, errors: &mut Vec<String>) -> Provider {
    if !valid_name(&p.name) {
        errors.push(format!(
            "{path}.name: must be 1-64 characters of letters, digits, '-' and '_' (it is sent as a header value and used in metric names)"
        ));
    }
    if p.name == "reject" {
        errors.push(format!("{path}.name: \"reject\" is reserved (routing.unknown_model)"));
    }

    let mut forward_headers = Vec::new();
    let mut targets: BTreeMap<String, &str> = BTreeMap::new();
    for (key, target) in &p.forward_headers {
        let at = format!("{path}.forward_headers.{key:?}");
        if key.is_empty() {
            errors.push(format!("{at}: empty provider-data key"));
        }
        if key.starts_with("__") {
            errors.push(format!("{at}: keys beginning with \"__\" are reserved"));
        }
        let header = target.header().to_ascii_lowercase();
        if !is_token(&header) {
            errors.push(format!("{at}: {header:?} is not a valid header name"));
        } else if let Some(b) = blocklist.check(&header) {
            errors.push(format!("{at}: target {header:?} is on the {b}"));
        }
        if check_value(target.prefix().as_bytes()).is_err() {
            errors.push(format!("{at}: prefix has a control character or is too long"));
        }
        if let Some(other) = targets.insert(header.clone(), key) {
            errors.push(format!("{at}: {other:?} also maps to {header:?}"));
        }
        forward_headers.push(ForwardRule { key: key.clone(), header, prefix: target.prefix().to_string() });
    }

    let mut set_headers = Vec::new();
    for (name, value) in &p.set_headers {
        let at = format!("{path}.set_headers.{name:?}");
        let lname = name.to_ascii_lowercase();
        if !is_token(&lname) {
            errors.push(format!("{at}: not a valid header name"));
        } else if let Some(b) = blocklist.check(&lname) {
            errors.push(format!("{at}: {lname:?} is on the {b}"));
        }
        if check_value(value.as_bytes()).is_err() {
            errors.push(format!("{at}: value has CR, LF, NUL or another control character, or is over 8192 bytes"));
        }
        set_headers.push((lname, value.clone()));
    }

    let remove_headers = header_patterns(&p.remove_headers, &format!("{path}.remove_headers"), errors);
    let client_forward = header_patterns(&p.client_headers.forward, &format!("{path}.client_headers.forward"), errors);
    let client_drop = header_patterns(&p.client_headers.drop, &format!("{path}.client_headers.drop"), errors);
    // A rule the filter would never apply is an error, not a silent no-op.
    for (field, patterns) in [
        ("remove_headers", &remove_headers),
        ("client_headers.drop", &client_drop),
        ("client_headers.forward", &client_forward),
    ] {
        for pattern in patterns {
            if only_left_to_envoy(pattern) {
                errors.push(format!(
                    "{path}.{field}: {:?} names a header Envoy owns (framing, host, x-forwarded-*, x-request-id); \
                     the filter never touches it: configure Envoy instead",
                    pattern.as_str()
                ));
            }
        }
    }
    for pattern in &client_forward {
        let name = pattern.as_str();
        if only_always_removed(pattern) || blocklist.is_routing_header(name) {
            errors.push(format!(
                "{path}.client_headers.forward: {name:?} is always removed from the client's headers; it is never forwarded"
            ));
        } else if is_client_auth(name) {
            errors.push(format!(
                "{path}.client_headers.forward: {name:?} is a client credential: client_auth alone decides whether it is forwarded"
            ));
        }
    }
    for (name, _) in &set_headers {
        if let Some(r) = remove_headers.iter().find(|r| r.matches(name)) {
            errors.push(format!("{path}: {name:?} is in set_headers and matches remove_headers {:?}", r.as_str()));
        }
    }

    Provider {
        name: p.name.clone(),
        extra_headers_key: format!("{}_extra_headers", p.name),
        forward_headers,
        extra_headers: header_patterns(&p.extra_headers, &format!("{path}.extra_headers"), errors),
        generic_extra_headers: p.generic_extra_headers,
        client_mode: p.client_headers.mode,
        client_forward,
        client_drop,
        client_auth: p.client_auth,
        set_headers,
        remove_headers,
    }
}

fn lowercase_names(names: &[String], at: &str, errors: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let lname = name.to_ascii_lowercase();
        if !is_token(&lname) {
            errors.push(format!("{at}: {name:?} is not a valid header name"));
        } else if out.contains(&lname) {
            errors.push(format!("{at}: {name:?} is listed twice"));
        } else {
            out.push(lname);
        }
    }
    out
}

fn header_patterns(patterns: &[String], at: &str, errors: &mut Vec<String>) -> Vec<Pattern> {
    let mut out = Vec::new();
    for p in patterns {
        if is_header_pattern(p) {
            out.push(Pattern::header(p));
        } else {
            errors.push(format!("{at}: {p:?} is not a valid header name pattern"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        Policy::from_json(json.as_bytes()).expect("valid config")
    }

    fn problems(json: &str) -> String {
        Policy::from_json(json.as_bytes()).expect_err("invalid config").to_string()
    }

    #[test]
    fn exact_model_beats_an_earlier_pattern_and_first_pattern_wins() {
        let p = policy(
            r#"{"providers":[
                {"name":"a","models":["gpt-*"]},
                {"name":"b","models":["gpt-4o","gpt-*"]},
                {"name":"c","models":["*"]}
            ]}"#,
        );
        assert_eq!(p.provider_for_model("gpt-4o"), Some(1));
        assert_eq!(p.provider_for_model("gpt-3.5"), Some(0));
        assert_eq!(p.provider_for_model("claude"), Some(2));
        assert_eq!(p.provider_for_model("GPT-4O"), Some(2), "case-sensitive");
    }

    #[test]
    fn unknown_model_names_a_provider() {
        let p = policy(
            r#"{"routing":{"unknown_model":"b"},"providers":[{"name":"a","models":["x"]},{"name":"b","models":[]}]}"#,
        );
        assert_eq!(p.default_provider, Some(1));
        assert!(problems(r#"{"routing":{"unknown_model":"zz"},"providers":[]}"#).contains("unknown_model"));
    }

    #[test]
    fn all_semantic_problems_are_reported_together() {
        let msg = problems(
            r#"{
              "provider_data": {"headers": ["x-pd", "bad name"]},
              "routing": {"provider_header": "x-pd", "model_header": "Host"},
              "blocked_headers": ["x-secret-*"],
              "providers": [
                {"name": "a", "models": ["", "m"],
                 "forward_headers": {
                    "__internal": "x-a",
                    "t1": "Cookie",
                    "t2": "x-secret-thing",
                    "t3": {"header": "authorization", "prefix": "Bearer\n"}
                 },
                 "set_headers": {"x-forwarded-for": "1.2.3.4", "x-ok": "a\r\nb", "bad name": "v"},
                 "extra_headers": ["x y"]},
                {"name": "a", "models": ["n"]},
                {"name": "has.dot", "models": ["o"]}
              ]
            }"#,
        );
        for needle in [
            "\"bad name\" is not a valid header name",
            "provider_header: \"x-pd\" is also a provider-data header",
            "model_header: \"host\" is on the core blocklist",
            "models[0]: empty model pattern",
            "reserved",
            "target \"cookie\" is on the core blocklist",
            "target \"x-secret-thing\" is on the blocked_headers",
            "prefix has a control character",
            "set_headers.\"x-forwarded-for\": \"x-forwarded-for\" is on the core blocklist",
            "set_headers.\"x-ok\": value has CR",
            "set_headers.\"bad name\": not a valid header name",
            "extra_headers: \"x y\" is not a valid header name pattern",
            "duplicate provider name",
            "providers[2] (\"has.dot\").name",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
        assert!(msg.starts_with("14 configuration problems: "), "{msg}");
    }

    #[test]
    fn schema_and_semantic_problems_are_reported_together() {
        let msg = problems(
            r#"{"bogus":1,"routing":{"unknown_model":"nobody"},"providers":[
                {"name":"a","models":[""],"colour":"red"},
                {"name":"b","models":["m"],"set_headers":{"host":"x"}}
            ]}"#,
        );
        for needle in [
            "bogus: unknown field",
            "colour: unknown field",
            "\"nobody\" is neither",
            "\"host\" is on the core blocklist",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
    }

    #[test]
    fn authorization_may_be_a_forward_target_and_a_set_header() {
        let p = policy(
            r#"{"providers":[{"name":"a","models":["m"],
               "forward_headers":{"tok":{"header":"Authorization","prefix":"Bearer "}},
               "set_headers":{"Authorization":"Bearer gateway"}}]}"#,
        );
        assert_eq!(p.providers[0].forward_headers[0].header, "authorization");
        assert_eq!(p.providers[0].set_headers[0].0, "authorization");
        assert!(
            problems(r#"{"providers":[{"name":"a","models":["m"],"set_headers":{"proxy-authorization":"x"}}]}"#)
                .contains("core blocklist")
        );
    }

    #[test]
    fn rules_the_filter_would_never_apply_are_errors() {
        let msg = problems(
            r#"{"providers":[{"name":"a","models":["m"],
                "remove_headers":["X-Forwarded-For","x-ok"],
                "client_headers":{"mode":"allowlist","drop":["x-request-id","x-forwarded-*"],
                                  "forward":["host","cookie","x-real-ip","x-envoy-*","x-llm-provider","authorization","x-*"]}}]}"#,
        );
        for needle in [
            "remove_headers: \"x-forwarded-for\" names a header Envoy owns",
            "client_headers.drop: \"x-request-id\" names a header Envoy owns",
            "client_headers.drop: \"x-forwarded-*\" names a header Envoy owns",
            "client_headers.forward: \"host\" names a header Envoy owns",
            "forward: \"cookie\" is always removed",
            "forward: \"x-real-ip\" is always removed",
            "forward: \"x-envoy-*\" is always removed",
            "forward: \"x-llm-provider\" is always removed",
            "forward: \"authorization\" is a client credential",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
        assert!(msg.starts_with("9 configuration problems"), "{msg}");
        // Patterns that also cover headers the filter does decide are fine.
        policy(
            r#"{"providers":[{"name":"a","models":["m"],"remove_headers":["x-forward*"],
                "client_headers":{"mode":"allowlist","forward":["x-*","*"],"drop":["x-*"]}}]}"#,
        );
    }

    #[test]
    fn two_keys_to_one_header_and_set_plus_remove_are_errors() {
        let msg = problems(
            r#"{"providers":[{"name":"a","models":["m"],
                "forward_headers":{"k1":"x-t","k2":"X-T"},
                "set_headers":{"x-g":"1"},"remove_headers":["x-*"]}]}"#,
        );
        assert!(msg.contains("\"k1\" also maps to \"x-t\""), "{msg}");
        assert!(msg.contains("matches remove_headers"), "{msg}");
    }
}
