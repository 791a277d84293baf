//! The plugin configuration as the operator writes it (SPEC §2), parsed so that every problem is
//! reported at once.
//!
//! serde stops at the first error, so the top level and each provider are read field by field:
//! every field is deserialized on its own, and the keys nobody read are reported as unknown.
//! The list of known keys is therefore the list of fields read below; it cannot drift.
//! Semantic checks (header names, blocklist, duplicates) happen in [`crate::policy`].
//!
//! The same types, with their doc comments, generate the JSON Schema committed as
//! `envoy/plugin-config.schema.json` ([`schema`]); a test fails when the two drift apart.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const DEFAULT_PROVIDER_DATA_HEADERS: [&str; 2] = ["x-llamastack-provider-data", "x-ogx-provider-data"];
pub const DEFAULT_PROVIDER_DATA_MAX_BYTES: usize = 16 * 1024;
pub const DEFAULT_BODY_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Configuration of the llm-header-forward Envoy filter (the wasm plugin's `configuration`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "llm-header-forward plugin configuration")]
pub struct PluginConfig {
    /// The header(s) carrying the client's provider data (a JSON object).
    #[serde(default)]
    pub provider_data: ProviderDataConfig,
    /// Limits on the JSON request body the model is read from.
    #[serde(default)]
    pub body: BodyConfig,
    /// The headers the filter sets for Envoy's routes, and what happens to unknown models.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// What a bad provider-data entry gets: `reject` (400 naming the header) or `drop` (dropped, counted).
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// Header-name patterns added to the core blocklist (case-insensitive, `*` and `?`).
    #[serde(default)]
    pub blocked_headers: Vec<String>,
    /// LLM providers, in order: the first whose `models` match serves the request (an exact model name beats any pattern).
    pub providers: Vec<ProviderConfig>,
    /// Fallback chains (SPEC §8), matched before `providers`: a model served by one provider, then
    /// another when Envoy retries. Chain names share one namespace with provider names.
    #[serde(default)]
    pub fallbacks: Vec<FallbackConfig>,
    /// `downstream` (the listener's HTTP filter) or `upstream` (in a chain's cluster, before
    /// `upstream_codec`: fits each retry attempt to its provider).
    #[serde(default)]
    pub role: Role,
}

/// A fallback chain: Envoy tries the attempts in order (retries with `previous_priorities`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// 1-64 letters, digits, '-' and '_'; the routing header's value for requests resolved to this chain.
    pub name: String,
    /// Model names and patterns (case-sensitive, `*` and `?`); an exact name in any chain beats any pattern.
    pub models: Vec<String>,
    /// Two or more attempts, each naming a different configured provider.
    pub attempts: Vec<AttemptConfig>,
}

/// One attempt of a chain.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptConfig {
    /// The provider this attempt goes to (its endpoints carry it in metadata).
    pub provider: String,
    /// Replaces the body's top-level `model` for this attempt (`content-length` follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Where this instance of the filter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Downstream,
    Upstream,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderDataConfig {
    /// Request headers accepted as provider data; two present at once are rejected.
    pub headers: Vec<String>,
    /// Remove the provider-data headers before the request goes upstream.
    pub strip: bool,
    /// A larger provider-data header is rejected (431).
    pub max_bytes: usize,
}

impl Default for ProviderDataConfig {
    fn default() -> Self {
        ProviderDataConfig {
            headers: DEFAULT_PROVIDER_DATA_HEADERS.iter().map(|h| h.to_string()).collect(),
            strip: true,
            max_bytes: DEFAULT_PROVIDER_DATA_MAX_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BodyConfig {
    /// A larger JSON body is rejected (413). Envoy's per_connection_buffer_limit_bytes should be at least twice this.
    pub max_bytes: usize,
}

impl Default for BodyConfig {
    fn default() -> Self {
        BodyConfig { max_bytes: DEFAULT_BODY_MAX_BYTES }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Set to the resolved provider's name (a client-sent value is always removed).
    pub provider_header: String,
    /// Set to the model (a client-sent value is always removed).
    pub model_header: String,
    /// `"reject"` (404 model_not_found) or the name of the provider that serves unknown or missing models.
    pub unknown_model: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            provider_header: "x-llm-provider".into(),
            model_header: "x-llm-model".into(),
            unknown_model: "reject".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    #[default]
    Reject,
    Drop,
}

/// One LLM provider: which models it serves and what may reach it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// 1-64 letters, digits, '-' and '_'; the value of the provider routing header.
    pub name: String,
    /// Model names and patterns (case-sensitive, `*` and `?`) this provider serves.
    pub models: Vec<String>,
    /// Provider-data key -> header. Only listed keys leave (default-deny); kept in key order.
    #[serde(default)]
    pub forward_headers: BTreeMap<String, ForwardTarget>,
    /// Header-name patterns provider data may add through its `<name>_extra_headers` map. Empty = none.
    #[serde(default)]
    pub extra_headers: Vec<String>,
    /// Also accept the un-namespaced `extra_headers` map from provider data.
    #[serde(default)]
    pub generic_extra_headers: bool,
    /// What happens to headers the client itself sent.
    #[serde(default)]
    pub client_headers: ClientHeadersConfig,
    /// `strip` the client's own credentials, or `forward` them (bring-your-own-key).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Static headers, overwriting the client's and provider data's values.
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    /// Static headers set only when the request, after every other rule, has no such header
    /// (e.g. `anthropic-version`, without overriding a client SDK that sends a newer one).
    #[serde(default)]
    pub default_headers: BTreeMap<String, String>,
    /// Header-name patterns removed from the client's headers and from what provider data adds.
    #[serde(default)]
    pub remove_headers: Vec<String>,
}

/// `"x-tenant-id"` or `{"header": "authorization", "prefix": "Bearer "}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ForwardTarget {
    Name(String),
    WithPrefix(ForwardTargetSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardTargetSpec {
    /// The header the value is sent in.
    pub header: String,
    /// Prepended to the value, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: String,
}

impl<'de> Deserialize<'de> for ForwardTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(name) => Ok(ForwardTarget::Name(name)),
            spec @ Value::Object(_) => {
                ForwardTargetSpec::deserialize(spec).map(ForwardTarget::WithPrefix).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom("expected a header name or an object {\"header\": ..., \"prefix\": ...}")),
        }
    }
}

impl ForwardTarget {
    pub fn header(&self) -> &str {
        match self {
            ForwardTarget::Name(h) => h,
            ForwardTarget::WithPrefix(spec) => &spec.header,
        }
    }
    pub fn prefix(&self) -> &str {
        match self {
            ForwardTarget::Name(_) => "",
            ForwardTarget::WithPrefix(spec) => &spec.prefix,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClientHeadersConfig {
    /// `allowlist`: keep only essentials and `forward`, minus `drop`; `all`: keep every client header except `drop`.
    pub mode: ClientHeaderMode,
    /// Allowlist mode: header-name patterns to keep (default `["x-*"]`; a vendor's own headers such as `openai-*` only where listed).
    pub forward: Vec<String>,
    /// Header-name patterns always removed from the client's headers.
    pub drop: Vec<String>,
    /// Client header -> backend header: a client header kept by the rules above reaches this provider under another name.
    pub rename: BTreeMap<String, String>,
}

/// LiteLLM's rule, default-deny: only the client's `x-*` headers, never `x-stainless-*`.
impl Default for ClientHeadersConfig {
    fn default() -> Self {
        ClientHeadersConfig {
            mode: ClientHeaderMode::Allowlist,
            forward: vec!["x-*".into()],
            drop: vec!["x-stainless-*".into()],
            rename: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientHeaderMode {
    All,
    Allowlist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Strip,
    Forward,
}

/// The JSON Schema of the plugin configuration, pretty-printed (the committed
/// `envoy/plugin-config.schema.json`).
pub fn schema() -> String {
    let schema = schemars::schema_for!(PluginConfig);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Parses the plugin configuration, returning every problem found (not just the first).
pub fn parse(bytes: &[u8]) -> Result<PluginConfig, Vec<String>> {
    match parse_partial(bytes) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// Parses as much as possible: fields that fail take their defaults and providers that fail are
/// left out, so later checks can still find the problems in the rest. `None` when the document is
/// not a JSON object at all.
pub fn parse_partial(bytes: &[u8]) -> (Option<PluginConfig>, Vec<String>) {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return (None, vec![format!("invalid JSON: {e}")]),
    };
    let Value::Object(root) = value else {
        return (None, vec!["configuration must be a JSON object".into()]);
    };
    let mut errors = Vec::new();
    let mut top = Fields::new(&root, "", &mut errors);
    let provider_data = top.optional("provider_data");
    let body = top.optional("body");
    let routing = top.optional("routing");
    let on_invalid = top.optional("on_invalid");
    let blocked_headers = top.optional("blocked_headers");
    let providers_raw: Option<Vec<Value>> = top.required("providers");
    let fallbacks_raw: Option<Vec<Value>> = top.optional("fallbacks");
    let role = top.optional("role");
    top.reject_unknown();

    let mut providers = Vec::new();
    for (i, raw) in providers_raw.unwrap_or_default().iter().enumerate() {
        if let Some(p) = parse_provider(raw, &format!("providers[{i}]"), &mut errors) {
            providers.push(p);
        }
    }
    let mut fallbacks = Vec::new();
    for (i, raw) in fallbacks_raw.unwrap_or_default().iter().enumerate() {
        match FallbackConfig::deserialize(raw) {
            Ok(f) => fallbacks.push(f),
            Err(e) => errors.push(format!("fallbacks[{i}]: {e}")),
        }
    }
    let config = PluginConfig {
        provider_data: provider_data.unwrap_or_default(),
        body: body.unwrap_or_default(),
        routing: routing.unwrap_or_default(),
        on_invalid: on_invalid.unwrap_or_default(),
        blocked_headers: blocked_headers.unwrap_or_default(),
        providers,
        fallbacks,
        role: role.unwrap_or_default(),
    };
    (Some(config), errors)
}

fn parse_provider(raw: &Value, path: &str, errors: &mut Vec<String>) -> Option<ProviderConfig> {
    let Value::Object(obj) = raw else {
        errors.push(format!("{path}: must be an object"));
        return None;
    };
    let before = errors.len();
    let mut f = Fields::new(obj, path, errors);
    let name = f.required("name");
    let models = f.required("models");
    let forward_headers = f.optional("forward_headers");
    let extra_headers = f.optional("extra_headers");
    let generic_extra_headers = f.optional("generic_extra_headers");
    let client_headers = f.optional("client_headers");
    let client_auth = f.optional("client_auth");
    let set_headers = f.optional("set_headers");
    let default_headers = f.optional("default_headers");
    let remove_headers = f.optional("remove_headers");
    f.reject_unknown();
    if errors.len() > before {
        return None;
    }
    Some(ProviderConfig {
        name: name?,
        models: models?,
        forward_headers: forward_headers.unwrap_or_default(),
        extra_headers: extra_headers.unwrap_or_default(),
        generic_extra_headers: generic_extra_headers.unwrap_or_default(),
        client_headers: client_headers.unwrap_or_default(),
        client_auth: client_auth.unwrap_or_default(),
        set_headers: set_headers.unwrap_or_default(),
        default_headers: default_headers.unwrap_or_default(),
        remove_headers: remove_headers.unwrap_or_default(),
    })
}

/// Reads the fields of one JSON object, each on its own, remembering which keys were read.
struct Fields<'a, 'e> {
    obj: &'a Map<String, Value>,
    path: &'a str,
    read: Vec<&'static str>,
    errors: &'e mut Vec<String>,
}

impl<'a, 'e> Fields<'a, 'e> {
    fn new(obj: &'a Map<String, Value>, path: &'a str, errors: &'e mut Vec<String>) -> Self {
        Fields { obj, path, read: Vec::new(), errors }
    }

    fn qualified(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn optional<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        self.read.push(key);
        let value = self.obj.get(key)?;
        match T::deserialize(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let at = self.qualified(key);
                self.errors.push(format!("{at}: {e}"));
                None
            }
        }
    }

    fn required<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        if !self.obj.contains_key(key) {
            self.read.push(key);
            let at = self.qualified(key);
            self.errors.push(format!("{at}: missing required field"));
            return None;
        }
        self.optional(key)
    }

    fn reject_unknown(self) {
        for key in self.obj.keys() {
            if !self.read.contains(&key.as_str()) {
                let at = self.qualified(key);
                self.errors.push(format!("{at}: unknown field"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = parse(br#"{"providers":[{"name":"vllm","models":["llama-*"]}]}"#).expect("valid");
        assert_eq!(c.provider_data.headers, ["x-llamastack-provider-data", "x-ogx-provider-data"]);
        assert!(c.provider_data.strip);
        assert_eq!(c.provider_data.max_bytes, 16384);
        assert_eq!(c.body.max_bytes, 8388608);
        assert_eq!(c.routing.provider_header, "x-llm-provider");
        assert_eq!(c.routing.model_header, "x-llm-model");
        assert_eq!(c.routing.unknown_model, "reject");
        assert_eq!(c.on_invalid, OnInvalid::Reject);
        assert!(c.blocked_headers.is_empty());
        let p = &c.providers[0];
        assert!(p.forward_headers.is_empty() && p.extra_headers.is_empty());
        assert!(!p.generic_extra_headers);
        assert_eq!(p.client_headers.mode, ClientHeaderMode::Allowlist);
        assert_eq!(p.client_headers.forward, ["x-*"]);
        assert_eq!(p.client_headers.drop, ["x-stainless-*"]);
        assert!(p.client_headers.rename.is_empty());
        assert_eq!(p.client_auth, ClientAuth::Strip);
        assert!(p.set_headers.is_empty() && p.default_headers.is_empty() && p.remove_headers.is_empty());
    }

    #[test]
    fn a_partial_client_headers_keeps_the_other_defaults() {
        let c = parse(
            br#"{"providers":[{"name":"a","models":["m"],"client_headers":{"forward":["x-*","openai-*"]},
                "default_headers":{"anthropic-version":"2023-06-01"}}]}"#,
        )
        .expect("valid");
        let h = &c.providers[0].client_headers;
        assert_eq!(h.mode, ClientHeaderMode::Allowlist);
        assert_eq!(h.forward, ["x-*", "openai-*"]);
        assert_eq!(h.drop, ["x-stainless-*"], "listing forward does not drop the stainless default");
        assert_eq!(c.providers[0].default_headers["anthropic-version"], "2023-06-01");
        let e =
            parse(br#"{"providers":[{"name":"a","models":["m"],"client_headers":{"renames":{}}}]}"#).expect_err("typo");
        assert!(e[0].contains("client_headers"), "{e:?}");
    }

    #[test]
    fn the_spec_example_parses() {
        let c = parse(SPEC_EXAMPLE.as_bytes()).expect("spec example is valid");
        let p = &c.providers[0];
        assert_eq!(p.forward_headers["vllm_api_token"].header(), "authorization");
        assert_eq!(p.forward_headers["vllm_api_token"].prefix(), "Bearer ");
        assert_eq!(p.forward_headers["tenant_id"].header(), "x-tenant-id");
        assert_eq!(p.set_headers["x-gateway"], "llm");
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let errors = parse(
            br#"{"bogus":1,"routing":{"unknown_model":3},"providers":[
                {"name":"a","models":"llama","colour":"red"},
                {"models":[]},
                {"name":"c","models":["x"],"client_headers":{"mode":"some"}}
            ]}"#,
        )
        .expect_err("invalid");
        let all = errors.join("\n");
        for needle in [
            "bogus: unknown field",
            "routing:",
            "providers[0].models:",
            "providers[0].colour: unknown field",
            "providers[1].name: missing required field",
            "providers[2].client_headers:",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 6, "{all}");
    }

    #[test]
    fn providers_is_required_and_json_must_be_an_object() {
        assert_eq!(parse(b"{}").expect_err("missing"), ["providers: missing required field"]);
        assert!(parse(b"[]").is_err());
        assert!(parse(b"{").expect_err("bad json")[0].starts_with("invalid JSON"));
    }

    #[test]
    fn forward_target_object_rejects_unknown_fields() {
        let e = parse(
            br#"{"providers":[{"name":"a","models":["m"],"forward_headers":{"k":{"header":"x-a","prefx":"B"}}}]}"#,
        )
        .expect_err("typo in prefix");
        assert!(e[0].starts_with("providers[0].forward_headers"), "{e:?}");
    }

    pub const SPEC_EXAMPLE: &str = r#"{
      "provider_data": {
        "headers": ["x-llamastack-provider-data", "x-ogx-provider-data"],
        "strip": true,
        "max_bytes": 16384
      },
      "body": { "max_bytes": 8388608 },
      "routing": {
        "provider_header": "x-llm-provider",
        "model_header": "x-llm-model",
        "unknown_model": "reject"
      },
      "on_invalid": "reject",
      "blocked_headers": ["x-internal-debug"],
      "providers": [
        {
          "name": "vllm",
          "models": ["llama-*", "vllm/*"],
          "forward_headers": {
            "vllm_api_token": { "header": "authorization", "prefix": "Bearer " },
            "tenant_id": "x-tenant-id"
          },
          "extra_headers": ["x-maas-*"],
          "generic_extra_headers": false,
          "client_headers": { "mode": "allowlist", "forward": ["x-*"], "drop": ["x-stainless-*"],
                              "rename": {} },
          "client_auth": "strip",
          "set_headers": { "x-gateway": "llm" },
          "remove_headers": []
        }
      ]
    }"#;
}
