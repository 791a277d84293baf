//! Which provider-data entries leave as headers for one provider (SPEC §2 `forward_headers`,
//! `extra_headers`, §4, §5). Default-deny: only `forward_headers` keys and the provider's own
//! `<name>_extra_headers` map (plus `extra_headers` when `generic_extra_headers` is on) are read.

use crate::blocklist::{BlockedBy, is_client_auth};
use crate::config::OnInvalid;
use crate::header_syntax::{Pattern, ValueProblem, check_value, first_match, is_token};
use crate::policy::{Policy, Provider};
use crate::provider_data::{ProviderData, scalar_text};
use serde_json::Value;
use std::borrow::Cow;

/// Most headers provider data may add to one request.
pub const MAX_FORWARDED: usize = 64;

/// The rule that made a provider-data entry a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'p> {
    /// `forward_headers[key]`.
    ForwardHeaders { key: &'p str },
    /// An entry of the extra-headers map `map` (`<provider>_extra_headers` or `extra_headers`),
    /// allowed by the `extra_headers` pattern `pattern`.
    ExtraHeaders { map: &'p str, pattern: &'p str },
}

/// A header provider data asked for and this provider forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded<'p> {
    pub name: Cow<'p, str>,
    pub value: String,
    pub source: Source<'p>,
}

/// Why an entry is an invalid entry (`on_invalid` applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid<'p> {
    Name,
    Value(ValueProblem),
    Blocked(BlockedBy<'p>),
    /// A client credential name added through an extra-headers map.
    ClientAuth,
    /// An object or array where a scalar was expected (or an extra-headers map that is not an object).
    Type,
    TooMany,
}

/// Why an entry was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason<'p> {
    Invalid(Invalid<'p>),
    /// An extra header whose name matches no `extra_headers` pattern.
    NotAllowed,
    /// Another entry already set this header (`forward_headers` wins over extra headers).
    Duplicate,
    /// The provider's `set_headers` sets this header.
    Overridden,
    /// The provider's `remove_headers` removes this header.
    Removed(&'p str),
}

impl DropReason<'_> {
    /// Stable name used in metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::Invalid(Invalid::Name) => "invalid_name",
            DropReason::Invalid(Invalid::Value(ValueProblem::ControlCharacter)) => "invalid_value",
            DropReason::Invalid(Invalid::Value(ValueProblem::TooLong)) => "value_too_long",
            DropReason::Invalid(Invalid::Blocked(_) | Invalid::ClientAuth) => "blocked",
            DropReason::Invalid(Invalid::Type) => "invalid_type",
            DropReason::Invalid(Invalid::TooMany) => "too_many",
            DropReason::NotAllowed => "not_allowed",
            DropReason::Duplicate => "duplicate",
            DropReason::Overridden => "overridden",
            DropReason::Removed(_) => "removed",
        }
    }

    pub const ALL: [&'static str; 10] = [
        "invalid_name",
        "invalid_value",
        "value_too_long",
        "blocked",
        "invalid_type",
        "too_many",
        "not_allowed",
        "duplicate",
        "overridden",
        "removed",
    ];
}

/// An entry that was not forwarded. `name` is the header name (or the provider-data key when
/// there is no header name yet); it may come from the client, so print it with `{:?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped<'p> {
    pub name: String,
    /// Where the entry came from: the `forward_headers` key or the extra-headers map.
    pub from: &'p str,
    pub reason: DropReason<'p>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forwarding<'p> {
    pub forwarded: Vec<Forwarded<'p>>,
    pub dropped: Vec<Dropped<'p>>,
}

/// Applies `provider`'s rules to `data`. With `on_invalid: reject` the first invalid entry is
/// returned as `Err`; with `drop` it is recorded in `dropped` and the rest go on.
pub fn forward<'p>(
    policy: &'p Policy,
    provider: &'p Provider,
    data: &ProviderData,
) -> Result<Forwarding<'p>, Dropped<'p>> {
    let mut f = Forwarder { policy, provider, out: Forwarding::default() };
    for rule in &provider.forward_headers {
        let Some(v) = data.get(&rule.key).filter(|v| !v.is_null()) else { continue };
        let from = rule.key.as_str();
        let name = Cow::Borrowed(rule.header.as_str());
        let Some(text) = scalar_text(v) else {
            f.invalid(name, from, Invalid::Type)?;
            continue;
        };
        let value = if rule.prefix.is_empty() { text } else { format!("{}{text}", rule.prefix) };
        f.offer(name, value, Source::ForwardHeaders { key: from })?;
    }
    let generic = provider.generic_extra_headers.then_some("extra_headers");
    for map_key in std::iter::once(provider.extra_headers_key.as_str()).chain(generic) {
        match data.get(map_key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) => {
                for (name, v) in entries {
                    f.extra(map_key, name, v)?;
                }
            }
            Some(_) => f.invalid(Cow::Borrowed(map_key), map_key, Invalid::Type)?,
        }
    }
    Ok(f.out)
}

struct Forwarder<'p> {
    policy: &'p Policy,
    provider: &'p Provider,
    out: Forwarding<'p>,
}

impl<'p> Forwarder<'p> {
    fn extra(&mut self, map: &'p str, raw_name: &str, v: &Value) -> Result<(), Dropped<'p>> {
        let name = raw_name.to_ascii_lowercase();
        if let Some(b) = self.policy.blocklist.check(&name) {
            return self.invalid(Cow::Owned(name), map, Invalid::Blocked(b));
        }
        if is_client_auth(&name) {
            return self.invalid(Cow::Owned(name), map, Invalid::ClientAuth);
        }
        if !is_token(&name) {
            return self.invalid(Cow::Owned(name), map, Invalid::Name);
        }
        let Some(pattern) = first_match(&self.provider.extra_headers, &name) else {
            self.out.dropped.push(Dropped { name, from: map, reason: DropReason::NotAllowed });
            return Ok(());
        };
        if v.is_null() {
            return Ok(());
        }
        let Some(value) = scalar_text(v) else {
            return self.invalid(Cow::Owned(name), map, Invalid::Type);
        };
        self.offer(Cow::Owned(name), value, Source::ExtraHeaders { map, pattern: pattern.as_str() })
    }

    /// A well-formed entry for an allowed name: checks the value, precedence and the count.
    fn offer(&mut self, name: Cow<'p, str>, value: String, source: Source<'p>) -> Result<(), Dropped<'p>> {
        let from = match source {
            Source::ForwardHeaders { key } => key,
            Source::ExtraHeaders { map, .. } => map,
        };
        if let Err(problem) = check_value(value.as_bytes()) {
            return self.invalid(name, from, Invalid::Value(problem));
        }
        let reason = if self.out.forwarded.iter().any(|f| f.name == name) {
            Some(DropReason::Duplicate)
        } else if self.provider.set_headers.iter().any(|(n, _)| *n == name) {
            Some(DropReason::Overridden)
        } else {
            first_match(&self.provider.remove_headers, &name).map(|p: &'p Pattern| DropReason::Removed(p.as_str()))
        };
        if let Some(reason) = reason {
            self.out.dropped.push(Dropped { name: name.into_owned(), from, reason });
            return Ok(());
        }
        if self.out.forwarded.len() >= MAX_FORWARDED {
            return self.invalid(name, from, Invalid::TooMany);
        }
        self.out.forwarded.push(Forwarded { name, value, source });
        Ok(())
    }

    fn invalid(&mut self, name: Cow<'p, str>, from: &'p str, why: Invalid<'p>) -> Result<(), Dropped<'p>> {
        let dropped = Dropped { name: name.into_owned(), from, reason: DropReason::Invalid(why) };
        match self.policy.on_invalid {
            OnInvalid::Reject => Err(dropped),
            OnInvalid::Drop => {
                self.out.dropped.push(dropped);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider_data::parse;

    fn policy(on_invalid: &str) -> Policy {
        Policy::from_json(
            format!(
                r#"{{"on_invalid":"{on_invalid}","blocked_headers":["x-internal-*"],"providers":[
                {{"name":"vllm","models":["llama-*"],
                  "forward_headers":{{"vllm_api_token":{{"header":"Authorization","prefix":"Bearer "}},"tenant_id":"x-tenant-id","n":"x-n"}},
                  "extra_headers":["x-maas-*","x-tenant-id","x-gw","x-rm"],
                  "set_headers":{{"x-gw":"static"}},"remove_headers":["x-rm"]}},
                {{"name":"openai","models":["gpt-*"],"extra_headers":["*"],"generic_extra_headers":true}}
            ]}}"#
            )
            .as_bytes(),
        )
        .expect("valid")
    }

    fn run<'p>(p: &'p Policy, provider: usize, data: &str) -> Result<Forwarding<'p>, Dropped<'p>> {
        let data = parse(data.as_bytes(), 1 << 20).expect("valid provider data");
        forward(p, &p.providers[provider], &data)
    }

    fn names(f: &Forwarding) -> Vec<(String, String)> {
        f.forwarded.iter().map(|h| (h.name.to_string(), h.value.clone())).collect()
    }

    fn reasons(f: &Forwarding) -> Vec<(String, &'static str)> {
        f.dropped.iter().map(|d| (d.name.clone(), d.reason.as_str())).collect()
    }

    #[test]
    fn forward_headers_map_keys_with_prefix_and_skip_missing_and_null() {
        let p = policy("reject");
        let f = run(&p, 0, r#"{"vllm_api_token":"sk-1","tenant_id":null,"unlisted":"x"}"#).expect("ok");
        assert_eq!(names(&f), [("authorization".into(), "Bearer sk-1".into())]);
        let f = run(&p, 0, r#"{"tenant_id":7,"n":true}"#).expect("ok");
        assert_eq!(names(&f), [("x-n".into(), "true".into()), ("x-tenant-id".into(), "7".into())]);
        assert_eq!(
            run(&p, 0, r#"{"tenant_id":{"a":1}}"#).expect_err("object").reason,
            DropReason::Invalid(Invalid::Type)
        );
        assert_eq!(run(&p, 0, r#"{"tenant_id":["a"]}"#).expect_err("array").reason, DropReason::Invalid(Invalid::Type));
    }

    #[test]
    fn extra_headers_only_from_the_providers_own_namespace() {
        let p = policy("reject");
        let data = r#"{"vllm_extra_headers":{"X-MaaS-Subscription":"free-tier"},
                       "openai_extra_headers":{"x-openai-secret":"s"},
                       "extra_headers":{"x-generic":"g"}}"#;
        let f = run(&p, 0, data).expect("ok");
        assert_eq!(names(&f), [("x-maas-subscription".into(), "free-tier".into())]);
        let f = run(&p, 1, data).expect("ok");
        assert_eq!(names(&f), [("x-openai-secret".into(), "s".into()), ("x-generic".into(), "g".into())]);
    }

    #[test]
    fn names_matching_no_pattern_are_dropped_not_rejected() {
        let p = policy("reject");
        let f = run(&p, 0, r#"{"vllm_extra_headers":{"x-other":"v","x-maas-a":"1"}}"#).expect("ok");
        assert_eq!(names(&f), [("x-maas-a".into(), "1".into())]);
        assert_eq!(reasons(&f), [("x-other".into(), "not_allowed")]);
    }

    #[test]
    fn blocked_and_bad_entries_reject_or_drop() {
        let cases = [
            (r#"{"vllm_extra_headers":{"X-Forwarded-For":"1.2.3.4"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"HOST":"evil"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{":authority":"evil"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"x-envoy-upstream-rq-timeout-ms":"1"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"X-LlamaStack-Provider-Data":"{}"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"x-llm-provider":"openai"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"x-internal-debug":"1"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"Authorization":"Bearer stolen"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"x-api-key":"k"}}"#, "blocked"),
            (r#"{"vllm_extra_headers":{"bad name":"v"}}"#, "invalid_name"),
            (r#"{"vllm_extra_headers":{"x-maas-a":"a\r\nx-evil: 1"}}"#, "invalid_value"),
            (r#"{"vllm_extra_headers":{"x-maas-a":"a\u0000b"}}"#, "invalid_value"),
            (r#"{"vllm_extra_headers":{"x-maas-a":{"n":1}}}"#, "invalid_type"),
            (r#"{"vllm_extra_headers":"x-maas-a: 1"}"#, "invalid_type"),
            (r#"{"vllm_api_token":"a\nb"}"#, "invalid_value"),
        ];
        let reject = policy("reject");
        let drop = policy("drop");
        for (data, reason) in cases {
            let err = run(&reject, 0, data).expect_err(data);
            assert_eq!(err.reason.as_str(), reason, "{data}");
            let f = run(&drop, 0, data).expect(data);
            assert!(f.forwarded.is_empty(), "{data}");
            assert_eq!(f.dropped.len(), 1, "{data}");
            assert_eq!(f.dropped[0].reason.as_str(), reason, "{data}");
        }
    }

    #[test]
    fn value_length_limit_counts_the_prefix() {
        let p = policy("reject");
        let ok = format!(r#"{{"vllm_api_token":"{}"}}"#, "k".repeat(8192 - 7));
        assert_eq!(run(&p, 0, &ok).expect("fits").forwarded[0].value.len(), 8192);
        let long = format!(r#"{{"vllm_api_token":"{}"}}"#, "k".repeat(8192 - 6));
        assert_eq!(run(&p, 0, &long).expect_err("too long").reason.as_str(), "value_too_long");
    }

    #[test]
    fn at_most_64_headers() {
        let entries: Vec<String> = (0..65).map(|i| format!(r#""x-maas-{i:02}":"v""#)).collect();
        let data = format!(r#"{{"vllm_extra_headers":{{{}}}}}"#, entries.join(","));
        assert_eq!(run(&policy("reject"), 0, &data).expect_err("65").reason.as_str(), "too_many");
        let p = policy("drop");
        let f = run(&p, 0, &data).expect("drop");
        assert_eq!(f.forwarded.len(), 64);
        assert_eq!(reasons(&f), [("x-maas-64".into(), "too_many")]);
    }

    #[test]
    fn precedence_forward_headers_over_extra_and_set_headers_over_both() {
        let p = policy("reject");
        let f = run(
            &p,
            0,
            r#"{"tenant_id":"from-key","vllm_extra_headers":{"x-tenant-id":"from-extra","x-gw":"client","x-rm":"r"}}"#,
        )
        .expect("ok");
        assert_eq!(names(&f), [("x-tenant-id".into(), "from-key".into())]);
        assert_eq!(
            reasons(&f),
            [("x-gw".into(), "overridden"), ("x-rm".into(), "removed"), ("x-tenant-id".into(), "duplicate")]
        );
    }
}
