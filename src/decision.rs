//! `decide`: the one function that turns a request (its headers and the body's model) into what
//! happens to it: rejected with an error, or rewritten header by header. Every header change in a
//! [`Rewrite`] carries the rule that caused it.

use crate::client_headers::{ClientRule, removal_rule};
use crate::forwarding::{self, DropReason, Dropped, Invalid, Source};
use crate::header_syntax::{ValueProblem, check_value};
use crate::policy::{Chain, Policy, Provider, Target};
use crate::provider_data::{self, ProviderDataError};
use crate::rejection::{ErrorCode, Rejection, quote_name};
use std::borrow::Cow;

/// Request headers as the host gives them: lowercase names, raw values.
pub type Headers = [(String, Vec<u8>)];

/// What the body said about the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyModel {
    /// No body, not JSON, or not needed: Envoy's routes decide unless `unknown_model` names a
    /// provider.
    NotRead,
    /// A JSON body without a top-level `model`.
    Absent,
    Model(String),
}

pub struct Request<'r> {
    pub headers: &'r Headers,
    pub body: BodyModel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'p> {
    Reject(Rejection),
    Forward(Rewrite<'p>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite<'p> {
    pub provider: Option<&'p str>,
    /// The fallback chain the model resolved to (then `provider` is `None`: each attempt's provider
    /// is decided upstream, [`crate::attempt`]).
    pub chain: Option<&'p str>,
    /// For a chain: what the upstream role needs, encoded ([`crate::handover`]); the glue puts it in
    /// Envoy filter state, never in a header.
    pub handover: Option<Vec<u8>>,
    pub model: Option<String>,
    /// Client headers removed (each name once), applied before `set`.
    pub remove: Vec<Removal<'p>>,
    /// Headers set, replacing any value the client sent.
    pub set: Vec<Assignment<'p>>,
    /// Provider-data entries that were not forwarded.
    pub dropped: Vec<Dropped<'p>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal<'p> {
    pub name: String,
    pub rule: ClientRule<'p>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment<'p> {
    pub name: Cow<'p, str>,
    pub value: Cow<'p, str>,
    pub rule: SetRule<'p>,
}

/// The rule that set a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRule<'p> {
    /// From provider data (`forward_headers` or an extra-headers map).
    ProviderData(Source<'p>),
    /// The provider's `set_headers`.
    SetHeaders,
    /// `client_headers.rename`: the client's header `from`, under a new name.
    Rename { from: &'p str },
    /// The provider's `default_headers`: nothing else supplied this header.
    DefaultHeaders,
    /// `routing.provider_header`.
    ProviderHeader,
    /// `routing.model_header`.
    ModelHeader,
}

impl std::fmt::Display for SetRule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetRule::ProviderData(Source::ForwardHeaders { key }) => write!(f, "forward_headers {key:?}"),
            SetRule::ProviderData(Source::ExtraHeaders { map, pattern }) => {
                write!(f, "{map} allowed by extra_headers {pattern:?}")
            }
            SetRule::SetHeaders => write!(f, "set_headers"),
            SetRule::Rename { from } => write!(f, "client_headers.rename from {from:?}"),
            SetRule::DefaultHeaders => write!(f, "default_headers"),
            SetRule::ProviderHeader => write!(f, "routing.provider_header"),
            SetRule::ModelHeader => write!(f, "routing.model_header"),
        }
    }
}

impl Rewrite<'_> {
    /// One line for logs: names and rules, never values.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s =
            format!("provider={} model={:?}", self.provider.unwrap_or("-"), self.model.as_deref().unwrap_or("-"));
        if let Some(chain) = self.chain {
            let _ = write!(s, " chain={chain}");
        }
        for r in &self.remove {
            let _ = write!(s, " -{:?}({})", r.name, r.rule);
        }
        for a in &self.set {
            let _ = write!(s, " +{:?}({})", a.name, a.rule);
        }
        for d in &self.dropped {
            let _ = write!(s, " dropped {:?} from {:?}({})", d.name, d.from, d.reason.as_str());
        }
        s
    }

    /// The headers the upstream receives when this rewrite is applied to `headers`: what the glue
    /// does to Envoy's header map, done on a plain list (tests and tools use it).
    pub fn apply_to(&self, headers: &Headers) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = headers
            .iter()
            .filter(|(n, _)| {
                !self.remove.iter().any(|r| r.name.eq_ignore_ascii_case(n))
                    && !self.set.iter().any(|a| a.name.eq_ignore_ascii_case(n))
            })
            .cloned()
            .collect();
        out.extend(self.set.iter().map(|a| (a.name.to_string(), a.value.as_bytes().to_vec())));
        out
    }
}

pub fn decide<'p>(policy: &'p Policy, request: &Request) -> Decision<'p> {
    match rewrite(policy, request) {
        Ok(rewrite) => Decision::Forward(rewrite),
        Err(rejection) => Decision::Reject(rejection),
    }
}

fn rewrite<'p>(policy: &'p Policy, request: &Request) -> Result<Rewrite<'p>, Rejection> {
    let provider_data = provider_data_header(policy, request.headers)?;
    match resolve(policy, &request.body)? {
        (Resolved::Chain(chain), model) => crate::chain::judge(policy, chain, model, request.headers, provider_data),
        (Resolved::Provider(provider), model) => rewrite_for(policy, provider, model, request.headers, provider_data),
    }
}

/// The rewrite of a request resolved to `provider` (`None`: no provider, SPEC §3) for `model`:
/// the single-provider rules of SPEC §2. Fallback chains run it once per provider of the chain.
pub fn rewrite_for<'p>(
    policy: &'p Policy,
    provider: Option<&'p Provider>,
    model: Option<String>,
    headers: &Headers,
    provider_data: Option<(&str, &[u8])>,
) -> Result<Rewrite<'p>, Rejection> {
    let mut rewrite = Rewrite { provider: provider.map(|p| p.name.as_str()), model, ..Rewrite::default() };
    for (name, _) in headers {
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name.as_str())
        };
        if rewrite.remove.iter().any(|r| r.name == name) {
            continue;
        }
        if let Some(rule) = removal_rule(policy, provider, &name) {
            rewrite.remove.push(Removal { name: name.into_owned(), rule });
        }
    }

    let Some(provider) = provider else { return Ok(rewrite) };
    if let Some((header, raw)) = provider_data {
        let data = provider_data::parse(raw, policy.provider_data_max_bytes)
            .map_err(|e| provider_data_rejection(header, e, policy))?;
        let forwarding = forwarding::forward(policy, provider, &data).map_err(|d| entry_rejection(&d))?;
        rewrite.set.extend(forwarding.forwarded.into_iter().map(|f| Assignment {
            name: f.name,
            value: Cow::Owned(f.value),
            rule: SetRule::ProviderData(f.source),
        }));
        rewrite.dropped = forwarding.dropped;
    }
    for (name, value) in &provider.set_headers {
        rewrite.set.push(Assignment {
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(value),
            rule: SetRule::SetHeaders,
        });
    }
    rename(provider, headers, &mut rewrite)?;
    rewrite.set.push(Assignment {
        name: Cow::Borrowed(&policy.provider_header),
        value: Cow::Borrowed(&provider.name),
        rule: SetRule::ProviderHeader,
    });
    if let Some(model) = &rewrite.model {
        let value = Cow::Owned(model.clone());
        rewrite.set.push(Assignment { name: Cow::Borrowed(&policy.model_header), value, rule: SetRule::ModelHeader });
    }
    for (name, value) in &provider.default_headers {
        let supplied = rewrite.set.iter().any(|a| a.name == name.as_str())
            || headers.iter().any(|(n, _)| {
                n.eq_ignore_ascii_case(name) && !rewrite.remove.iter().any(|r| r.name.eq_ignore_ascii_case(n))
            });
        if !supplied {
            let (name, value) = (Cow::Borrowed(name.as_str()), Cow::Borrowed(value.as_str()));
            rewrite.set.push(Assignment { name, value, rule: SetRule::DefaultHeaders });
        }
    }
    Ok(rewrite)
}

/// `client_headers.rename`: each kept client header with a new name is removed and set under that
/// name (several values joined with ", "), unless provider data or `set_headers` set that name.
/// Its value is checked like every value the filter sets (SPEC §5).
fn rename<'p>(provider: &'p Provider, headers: &Headers, rewrite: &mut Rewrite<'p>) -> Result<(), Rejection> {
    for (from, to) in &provider.client_rename {
        let mut values = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(from)).map(|(_, v)| v.as_slice());
        let Some(first) = values.next() else { continue };
        if rewrite.remove.iter().any(|r| r.name == *from) {
            continue; // removed by a rule above: never renamed (a config error for the provider's own rules)
        }
        let mut joined = first.to_vec();
        for v in values {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(v);
        }
        let value = match (check_value(&joined), String::from_utf8(joined)) {
            (Ok(()), Ok(value)) => value,
            (Err(ValueProblem::TooLong), _) => {
                return Err(Rejection::new(
                    ErrorCode::HeaderValueTooLong,
                    format!("The value of header {} is longer than 8192 bytes", quote_name(from)),
                ));
            }
            _ => {
                return Err(Rejection::new(
                    ErrorCode::InvalidHeaderValue,
                    format!("The value of header {} has a control character or is not UTF-8", quote_name(from)),
                ));
            }
        };
        rewrite.remove.push(Removal { name: from.clone(), rule: ClientRule::Renamed { to } });
        if !rewrite.set.iter().any(|a| a.name == to.as_str()) {
            let (name, value) = (Cow::Borrowed(to.as_str()), Cow::Owned(value));
            rewrite.set.push(Assignment { name, value, rule: SetRule::Rename { from } });
        }
    }
    Ok(())
}

/// The one provider-data header present, if any. Two at once (two names, or one name twice) is
/// ambiguous and rejected.
pub(crate) fn provider_data_header<'h>(
    policy: &Policy,
    headers: &'h Headers,
) -> Result<Option<(&'h str, &'h [u8])>, Rejection> {
    let mut found: Option<(&str, &[u8])> = None;
    for (name, value) in headers {
        if !policy.provider_data_headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            continue;
        }
        if let Some((first, _)) = found {
            return Err(Rejection::new(
                ErrorCode::ConflictingProviderData,
                format!("Send provider data in one header only; got {} and {}", quote_name(first), quote_name(name)),
            ));
        }
        found = Some((name.as_str(), value.as_slice()));
    }
    Ok(found)
}

/// What serves a request.
enum Resolved<'p> {
    /// A provider, or none (Envoy's routes decide).
    Provider(Option<&'p Provider>),
    Chain(&'p Chain),
}

/// The provider or chain and the model for the request, or the `unknown_model` rejection.
fn resolve<'p>(policy: &'p Policy, body: &BodyModel) -> Result<(Resolved<'p>, Option<String>), Rejection> {
    let provider = |i: usize| policy.providers.get(i);
    let default = policy.default_provider.and_then(provider);
    match body {
        BodyModel::NotRead => Ok((Resolved::Provider(default), None)),
        BodyModel::Absent => match default {
            Some(p) => Ok((Resolved::Provider(Some(p)), None)),
            None => Err(Rejection::new(ErrorCode::ModelNotFound, "The request body has no \"model\"")),
        },
        BodyModel::Model(model) => {
            if check_value(model.as_bytes()).is_err() {
                return Err(Rejection::new(
                    ErrorCode::InvalidModel,
                    "\"model\" contains a control character or a line separator",
                ));
            }
            let resolved = match policy.target_for_model(model) {
                Some(Target::Chain(i)) => policy.chains.get(i).map(Resolved::Chain),
                Some(Target::Provider(i)) => provider(i).map(|p| Resolved::Provider(Some(p))),
                None => None,
            };
            match resolved.or(default.map(|p| Resolved::Provider(Some(p)))) {
                Some(r) => Ok((r, Some(model.clone()))),
                None => Err(Rejection::new(
                    ErrorCode::ModelNotFound,
                    format!("The model {} does not exist or is not served by this gateway", quote_name(model)),
                )),
            }
        }
    }
}

pub(crate) fn provider_data_rejection(header: &str, e: ProviderDataError, policy: &Policy) -> Rejection {
    let h = quote_name(header);
    match e {
        ProviderDataError::TooLarge => Rejection::new(
            ErrorCode::ProviderDataTooLarge,
            format!("The provider-data header {h} is larger than {} bytes", policy.provider_data_max_bytes),
        ),
        ProviderDataError::NotJson => {
            Rejection::new(ErrorCode::InvalidProviderData, format!("The provider-data header {h} is not valid JSON"))
        }
        ProviderDataError::NotAnObject => Rejection::new(
            ErrorCode::InvalidProviderData,
            format!("The provider-data header {h} must be a JSON object"),
        ),
        ProviderDataError::TooDeep => Rejection::new(
            ErrorCode::InvalidProviderData,
            format!("The provider-data header {h} is nested deeper than {} levels", provider_data::MAX_DEPTH),
        ),
    }
}

/// The rejection for an invalid provider-data entry (`on_invalid: reject`).
pub fn entry_rejection(d: &Dropped) -> Rejection {
    let (name, from) = (quote_name(&d.name), quote_name(d.from));
    let (code, message) = match d.reason {
        DropReason::Invalid(Invalid::Name) => {
            (ErrorCode::InvalidHeaderName, format!("Provider data {from}: {name} is not a valid header name"))
        }
        DropReason::Invalid(Invalid::Value(ValueProblem::ControlCharacter)) => (
            ErrorCode::InvalidHeaderValue,
            format!(
                "Provider data {from}: the value for header {name} contains a control character or a line separator"
            ),
        ),
        DropReason::Invalid(Invalid::Value(ValueProblem::TooLong)) => (
            ErrorCode::HeaderValueTooLong,
            format!("Provider data {from}: the value for header {name} is longer than 8192 bytes"),
        ),
        DropReason::Invalid(Invalid::Blocked(by)) => {
            (ErrorCode::BlockedHeader, format!("Provider data {from}: header {name} may not be set ({by})"))
        }
        DropReason::Invalid(Invalid::ClientAuth) => (
            ErrorCode::BlockedHeader,
            format!("Provider data {from}: credential header {name} can only be set through forward_headers"),
        ),
        DropReason::Invalid(Invalid::Type) => (
            ErrorCode::InvalidProviderData,
            format!("Provider data {from}: expected a string, number or boolean for {name}"),
        ),
        DropReason::Invalid(Invalid::TooMany) => {
            (ErrorCode::TooManyHeaders, format!("Provider data adds more than {} headers", forwarding::MAX_FORWARDED))
        }
        DropReason::NotAllowed | DropReason::Duplicate | DropReason::Overridden | DropReason::Removed(_) => {
            (ErrorCode::InvalidProviderData, format!("Provider data {from}: header {name} was not forwarded"))
        }
    };
    Rejection::new(code, message)
}
