//! The configuration compiled into a ready-to-run policy: names lowercased, patterns compiled,
//! providers indexed by exact model name. Built once in `on_configure`; every semantic problem is
//! collected, so an operator sees them all in one log line.

use crate::blocklist::{Blocklist, is_client_auth};
use crate::client_headers::{left_to_envoy, only_always_removed, only_left_to_envoy, removal_rule};
use crate::config::{
    self, ClientAuth, ClientHeaderMode, FallbackConfig, OnInvalid, PluginConfig, ProviderConfig, Role,
};
use crate::header_syntax::{Pattern, check_value, first_match, is_header_pattern, is_token};
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
    provider_models: ModelIndex,
    /// Where this instance runs (SPEC §8).
    pub role: Role,
    /// Fallback chains, matched before providers.
    pub chains: Vec<Chain>,
    chain_models: ModelIndex,
}

/// Model names and patterns of providers (or chains), by index: an exact name beats any pattern;
/// among patterns the first in configuration order wins.
#[derive(Debug, Clone, Default)]
struct ModelIndex {
    exact: BTreeMap<String, usize>,
    /// Wildcard patterns in configuration order.
    patterns: Vec<(Pattern, usize)>,
}

impl ModelIndex {
    /// Adds the `models` of entry `i` (`path` names it in errors).
    fn add(&mut self, models: &[String], i: usize, path: &str, errors: &mut Vec<String>) {
        for (j, m) in models.iter().enumerate() {
            if m.is_empty() {
                errors.push(format!("{path}.models[{j}]: empty model pattern"));
                continue;
            }
            let pattern = Pattern::new(m);
            if pattern.is_exact() {
                self.exact.entry(m.clone()).or_insert(i);
            } else {
                self.patterns.push((pattern, i));
            }
        }
    }

    fn find(&self, model: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(model) {
            return Some(i);
        }
        self.patterns.iter().find(|(p, _)| p.matches(model)).map(|&(_, i)| i)
    }
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
    /// `client_headers.rename`: lowercased client header → lowercased backend header.
    pub client_rename: Vec<(String, String)>,
    pub client_auth: ClientAuth,
    /// Lowercased name → value.
    pub set_headers: Vec<(String, String)>,
    /// Lowercased name → value, set only when nothing else supplied the header.
    pub default_headers: Vec<(String, String)>,
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

    /// The plugin configuration a host hands over, as both glues load it: logs what it configured,
    /// or every problem at once (`None`: the host refuses to start the filter).
    pub fn load(bytes: &[u8]) -> Option<Policy> {
        match Policy::from_json(bytes) {
            Ok(policy) => {
                log::info!(
                    "configured {} provider(s): {}",
                    policy.providers.len(),
                    policy.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                );
                Some(policy)
            }
            Err(errors) => {
                log::error!("invalid plugin configuration, refusing to start: {errors}");
                None
            }
        }
    }

    /// The provider that serves `model`: an exact name anywhere beats any pattern; among patterns
    /// the first provider (in configuration order) wins. `None` when nothing matches.
    pub fn provider_for_model(&self, model: &str) -> Option<usize> {
        self.provider_models.find(model)
    }

    /// What serves `model`: a chain first (an exact name in any chain beats any chain pattern; then
    /// the first chain in order), then a provider as [`Policy::provider_for_model`] says.
    pub fn target_for_model(&self, model: &str) -> Option<Target> {
        match self.chain_models.find(model) {
            Some(i) => Some(Target::Chain(i)),
            None => self.provider_for_model(model).map(Target::Provider),
        }
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
        let mut provider_models = ModelIndex::default();
        for (i, p) in c.providers.iter().enumerate() {
            let path = format!("providers[{i}] ({:?})", p.name);
            if providers.iter().any(|q| q.name == p.name) {
                errors.push(format!("{path}: duplicate provider name"));
            }
            provider_models.add(&p.models, i, &path, &mut errors);
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

        let (chains, chain_models) = compile_chains(&c.fallbacks, &providers, &mut errors);

        let policy = Policy {
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
            provider_models,
            role: c.role,
            chains,
            chain_models,
        };
        unreachable_renames(&policy, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(policy)
    }
}

/// Fallback chains (SPEC §8): 2+ attempts naming configured providers, none twice; names share
/// the providers' namespace.
fn compile_chains(
    fallbacks: &[FallbackConfig],
    providers: &[Provider],
    errors: &mut Vec<String>,
) -> (Vec<Chain>, ModelIndex) {
    let mut chains: Vec<Chain> = Vec::new();
    let mut models = ModelIndex::default();
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
        models.add(&f.models, i, &path, errors);
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
    (chains, models)
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

    let set_headers = static_headers(&p.set_headers, &format!("{path}.set_headers"), blocklist, errors);
    let default_headers = static_headers(&p.default_headers, &format!("{path}.default_headers"), blocklist, errors);
    for (name, _) in &default_headers {
        if set_headers.iter().any(|(n, _)| n == name) {
            errors.push(format!("{path}.default_headers.{name:?}: also in set_headers, so the default never applies"));
        }
    }
    let client_rename = renames(p, path, blocklist, errors);

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
        if only_always_removed(pattern)
            || blocklist.is_routing_header(name)
            || (pattern.is_exact() && !is_client_auth(name) && blocklist.operator_match(name).is_some())
        {
            errors.push(format!(
                "{path}.client_headers.forward: {name:?} is always removed from the client's headers; it is never forwarded"
            ));
        }
    }
    // Credentials are decided by client_auth alone: naming one in another client-header rule would
    // be silently overruled, so it is an error (patterns such as "x-*" merely skip them).
    for (field, patterns) in [
        ("remove_headers", &remove_headers),
        ("client_headers.drop", &client_drop),
        ("client_headers.forward", &client_forward),
    ] {
        for pattern in patterns.iter().filter(|p| p.is_exact() && is_client_auth(p.as_str())) {
            errors.push(format!(
                "{path}.{field}: {:?} is a client credential: client_auth alone decides whether it is forwarded",
                pattern.as_str()
            ));
        }
    }
    // `remove_headers` applies to what provider data adds too, so a `forward_headers` target it
    // matches would never be forwarded.
    let targets = set_headers.iter().map(|(n, _)| ("set_headers", n));
    let targets = targets.chain(default_headers.iter().map(|(n, _)| ("default_headers", n)));
    let targets = targets.chain(forward_headers.iter().map(|f: &ForwardRule| ("forward_headers", &f.header)));
    for (field, name) in targets.chain(client_rename.iter().map(|(_, to)| ("client_headers.rename", to))) {
        if let Some(r) = remove_headers.iter().find(|r| r.matches(name)) {
            errors.push(format!("{path}: {name:?} is in {field} and matches remove_headers {:?}", r.as_str()));
        }
    }
    // `set_headers` wins over a renamed header: the rename would only make the client's header
    // disappear.
    for (from, to) in &client_rename {
        if set_headers.iter().any(|(n, _)| n == to) {
            errors.push(format!(
                "{path}.client_headers.rename.{from:?}: target {to:?} is also in set_headers, so the rename never applies"
            ));
        }
    }
    // Mode "all" keeps every client header: a `forward` list there restricts nothing, although an
    // operator who wrote one expects it to.
    if p.client_headers.mode == ClientHeaderMode::All
        && p.client_headers.forward != config::ClientHeadersConfig::default().forward
    {
        errors.push(format!(
            "{path}.client_headers.forward: only used in mode \"allowlist\"; mode \"all\" keeps every client header \
             (use mode \"allowlist\" to forward only these)"
        ));
    }
    // An exact `client_headers.forward` name that `drop` or `remove_headers` also matches is never
    // forwarded.
    if p.client_headers.mode == ClientHeaderMode::Allowlist {
        for name in client_forward.iter().filter(|f| f.is_exact()).map(Pattern::as_str) {
            let by = first_match(&client_drop, name)
                .map(|d| ("client_headers.drop", d))
                .or_else(|| first_match(&remove_headers, name).map(|r| ("remove_headers", r)));
            if let Some((field, pattern)) = by {
                errors.push(format!(
                    "{path}.client_headers.forward: {name:?} matches {field} {:?}, so it is never forwarded",
                    pattern.as_str()
                ));
            }
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
        client_rename,
        client_auth: p.client_auth,
        set_headers,
        default_headers,
        remove_headers,
    }
}

/// `set_headers` / `default_headers`: lowercased names, not on the blocklist, values without
/// control characters.
fn static_headers(
    headers: &BTreeMap<String, String>,
    at: &str,
    blocklist: &Blocklist,
    errors: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let at = format!("{at}.{name:?}");
        let lname = name.to_ascii_lowercase();
        if !is_token(&lname) {
            errors.push(format!("{at}: not a valid header name"));
        } else if let Some(b) = blocklist.check(&lname) {
            errors.push(format!("{at}: {lname:?} is on the {b}"));
        } else if out.iter().any(|(n, _)| *n == lname) {
            errors.push(format!("{at}: listed twice (header names are case-insensitive)"));
        }
        if check_value(value.as_bytes()).is_err() {
            errors.push(format!("{at}: value has CR, LF, NUL or another control character, or is over 8192 bytes"));
        }
        out.push((lname, value.clone()));
    }
    out
}

/// `client_headers.rename`: the source must be a client header the filter could keep, the target
/// obeys the `set_headers` rules, and no two sources share a target. Whether the provider's own
/// rules keep the source is checked once the policy exists ([`unreachable_renames`]).
fn renames(p: &ProviderConfig, path: &str, blocklist: &Blocklist, errors: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (from, to) in &p.client_headers.rename {
        let at = format!("{path}.client_headers.rename.{from:?}");
        let (from, to) = (from.to_ascii_lowercase(), to.to_ascii_lowercase());
        if !is_token(&from) {
            errors.push(format!("{at}: not a valid header name"));
        } else if let Some(b) = blocklist.check(&from) {
            errors.push(format!("{at}: {from:?} is on the {b} and never reaches a provider"));
        }
        if !is_token(&to) {
            errors.push(format!("{at}: target {to:?} is not a valid header name"));
        } else if let Some(b) = blocklist.check(&to) {
            errors.push(format!("{at}: target {to:?} is on the {b}"));
        } else if is_client_auth(&to) && p.client_auth == ClientAuth::Strip {
            errors.push(format!(
                "{at}: target {to:?} is a client credential header and client_auth is \"strip\" (use client_auth: forward)"
            ));
        }
        if from == to {
            errors.push(format!("{at}: renames the header to itself"));
        }
        if out.iter().any(|(f, _)| *f == from) {
            errors.push(format!("{at}: listed twice (header names are case-insensitive)"));
        } else if let Some((other, _)) = out.iter().find(|(_, t)| *t == to) {
            errors.push(format!("{at}: {other:?} is also renamed to {to:?}"));
        }
        out.push((from, to));
    }
    out
}

/// Renames whose source the provider's own client-header rules remove (`client_headers.drop`,
/// the allowlist, `client_auth: strip`, `remove_headers`): a rule that never applies is an error.
fn unreachable_renames(policy: &Policy, errors: &mut Vec<String>) {
    for (i, p) in policy.providers.iter().enumerate() {
        for (from, _) in &p.client_rename {
            if policy.blocklist.check(from).is_some() || !is_token(from) {
                continue; // already reported
            }
            if left_to_envoy(from) {
                errors.push(format!(
                    "providers[{i}] ({:?}).client_headers.rename.{from:?}: Envoy manages this header; it cannot be renamed",
                    p.name
                ));
                continue;
            }
            if let Some(rule) = removal_rule(policy, Some(p), from) {
                errors.push(format!(
                    "providers[{i}] ({:?}).client_headers.rename.{from:?}: the client header is removed by {rule}, so it is never renamed",
                    p.name
                ));
            }
        }
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
                "remove_headers":["X-Forwarded-For","x-ok","x-api-key"],
                "client_headers":{"mode":"allowlist","drop":["x-request-id","x-forwarded-*","Api-Key"],
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
            "remove_headers: \"x-api-key\" is a client credential",
            "client_headers.drop: \"api-key\" is a client credential",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
        assert!(msg.starts_with("11 configuration problems"), "{msg}");
        // Patterns that also cover headers the filter does decide are fine.
        policy(
            r#"{"providers":[{"name":"a","models":["m"],"remove_headers":["x-forward*"],
                "client_headers":{"mode":"allowlist","forward":["x-*","*"],"drop":["x-*"]}}]}"#,
        );
    }

    #[test]
    fn forward_rename_and_forward_headers_rules_that_never_apply_are_errors() {
        let msg = problems(
            r#"{"providers":[{"name":"a","models":["m"],
                "forward_headers":{"tenant":"X-Tenant-Id","tok":{"header":"authorization","prefix":"Bearer "}},
                "remove_headers":["x-tenant-*"],
                "set_headers":{"x-gateway":"gw"},
                "client_headers":{"forward":["x-*","x-stainless-lang","x-tenant-name","openai-*"],
                                  "rename":{"x-customer":"X-Gateway","x-team":"x-team-id"}}}]}"#,
        );
        for needle in [
            r#""x-tenant-id" is in forward_headers and matches remove_headers "x-tenant-*""#,
            r#"rename."x-customer": target "x-gateway" is also in set_headers, so the rename never applies"#,
            r#"client_headers.forward: "x-stainless-lang" matches client_headers.drop "x-stainless-*""#,
            r#"client_headers.forward: "x-tenant-name" matches remove_headers "x-tenant-*""#,
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
        assert!(msg.starts_with("4 configuration problems"), "{msg}");
        // In mode "all" the forward list is not used; wildcard forward entries may overlap drop.
        policy(
            r#"{"providers":[{"name":"a","models":["m"],"forward_headers":{"tok":"authorization"},
                "remove_headers":["x-debug"],"set_headers":{"x-gateway":"gw"},
                "client_headers":{"mode":"all","forward":["x-*"],"rename":{"x-customer":"x-cust"}}},
               {"name":"b","models":["n"],"client_headers":{"forward":["x-*","x-stainless-*"]}}]}"#,
        );
    }

    #[test]
    fn a_forward_list_in_mode_all_is_an_error() {
        let msg = problems(
            r#"{"providers":[{"name":"a","models":["m"],"client_headers":{"mode":"all","forward":["x-tenant-*"]}}]}"#,
        );
        assert!(msg.contains(r#"client_headers.forward: only used in mode "allowlist""#), "{msg}");
        policy(r#"{"providers":[{"name":"a","models":["m"],"client_headers":{"mode":"all","drop":["x-a"]}}]}"#);
    }

    #[test]
    fn forwarding_a_client_header_on_blocked_headers_is_an_error() {
        let msg = problems(
            r#"{"blocked_headers":["x-internal-*","x-*-key"],"providers":[{"name":"a","models":["m"],
                "client_auth":"forward","client_headers":{"forward":["x-*","x-internal-user","x-api-key"]}}]}"#,
        );
        assert!(msg.contains(r#"forward: "x-internal-user" is always removed"#), "{msg}");
        assert!(msg.contains(r#"forward: "x-api-key" is a client credential"#), "{msg}");
        assert!(!msg.contains(r#""x-api-key" is always removed"#), "credentials are client_auth's: {msg}");
        assert!(msg.starts_with("2 configuration problems"), "{msg}");
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

    #[test]
    fn rename_and_default_headers_problems_are_reported_with_the_rest() {
        let msg = problems(
            r#"{"blocked_headers":["x-secret-*"],"providers":[
                {"name":"a","models":["m"],
                 "client_headers":{"rename":{
                    "x-one":"x-forwarded-for", "x-two":"X-Secret-Two", "x-three":"bad name", "bad name":"x-ok",
                    "cookie":"x-cookie", "x-self":"X-Self", "x-four":"x-same", "x-five":"x-same",
                    "x-stainless-os":"x-os", "openai-organization":"x-org", "x-key":"x-api-key",
                    "authorization":"x-auth", "x-llm-provider":"x-p", "x-request-id":"x-rid", "x-gone":"x-rm"}},
                 "remove_headers":["x-rm"],
                 "set_headers":{"x-both":"1"},
                 "default_headers":{"host":"h", "x-both":"2", "x-v":"a\nb", "X-Dup":"1", "x-dup":"2"}},
                {"name":"b","models":["n"],"default_headers":{"Bad Name":"v"},"extra_headers":[""]}
            ]}"#,
        );
        for needle in [
            r#"rename."x-one": target "x-forwarded-for" is on the core blocklist"#,
            r#"rename."x-two": target "x-secret-two" is on the blocked_headers"#,
            r#"rename."x-three": target "bad name" is not a valid header name"#,
            r#"rename."bad name": not a valid header name"#,
            r#"rename."cookie": "cookie" is on the core blocklist"#,
            r#"rename."x-self": renames the header to itself"#,
            r#"rename."x-four": "x-five" is also renamed to "x-same""#,
            r#"rename."x-stainless-os": the client header is removed by client_headers.drop "x-stainless-*""#,
            r#"rename."openai-organization": the client header is removed by client_headers.mode: allowlist"#,
            r#"rename."x-key": target "x-api-key" is a client credential header"#,
            r#"rename."authorization": the client header is removed by client_auth: strip"#,
            r#"rename."x-llm-provider": "x-llm-provider" is on the routing header"#,
            r#"rename."x-request-id": "x-request-id" is on the core blocklist"#,
            r#""x-rm" is in client_headers.rename and matches remove_headers"#,
            r#"default_headers."host": "host" is on the core blocklist"#,
            r#"default_headers."x-both": also in set_headers"#,
            r#"default_headers."x-v": value has CR"#,
            r#"default_headers."x-dup": listed twice"#,
            r#"default_headers."Bad Name": not a valid header name"#,
            r#"extra_headers: "" is not a valid header name pattern"#,
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
        assert!(msg.starts_with("20 configuration problems: "), "{msg}");
    }

    #[test]
    fn a_credential_may_be_renamed_only_when_the_provider_forwards_credentials() {
        let p = policy(
            r#"{"providers":[{"name":"byok","models":["m"],"client_auth":"forward",
               "client_headers":{"rename":{"x-api-key":"Authorization"}}}]}"#,
        );
        assert_eq!(p.providers[0].client_rename, [("x-api-key".to_string(), "authorization".to_string())]);
    }
}
