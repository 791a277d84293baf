//! Hostile requests for fuzzing and property tests, built from arbitrary bytes, and an independent
//! oracle for the body scanner (serde_json). Used by `tests/properties.rs` and `fuzz/`; the filter
//! never calls it.

use crate::decision::{BodyModel, Decision};
use crate::flow::{AfterHeaders, decide_complete, on_request_headers};
use crate::model_scan::{MAX_MODEL_BYTES, ModelScanner, ScanError};
use crate::policy::Policy;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// Configurations the generated requests run against: every mode of every rule.
pub const POLICIES: &[&str] = &[
    r#"{"blocked_headers":["x-internal-*"],"providers":[
        {"name":"vllm","models":["llama-*","vllm/*"],"forward_headers":{"vllm_api_token":{"header":"authorization","prefix":"Bearer "},"tenant_id":"x-tenant-id"},"extra_headers":["x-maas-*"],"set_headers":{"x-gateway":"llm"}},
        {"name":"openai","models":["gpt-*","llama-3-special"],"forward_headers":{"openai_api_key":{"header":"authorization","prefix":"Bearer "}},"extra_headers":["*"],"generic_extra_headers":true},
        {"name":"anthropic","models":["claude-*"],"forward_headers":{"anthropic_api_key":"x-api-key"},"client_headers":{"mode":"allowlist","forward":["anthropic-*","x-*"],"drop":["x-stainless-*"],"rename":{"x-custom":"x-renamed","anthropic-beta":"x-tenant-id"}},"default_headers":{"anthropic-version":"2023-06-01","x-renamed":"none"}}]}"#,
    r#"{"on_invalid":"drop","routing":{"unknown_model":"openai","provider_header":"X-Route","model_header":"x-route-model"},"providers":[
        {"name":"vllm","models":["llama-*"],"forward_headers":{"vllm_api_token":"authorization"},"extra_headers":["x-*","authorization"],"client_auth":"forward","remove_headers":["x-debug*"],"client_headers":{"mode":"all","rename":{"x-api-key":"authorization","x-k":"x-custom"}},"default_headers":{"authorization":"Bearer default","x-tier":"free"}},
        {"name":"openai","models":["gpt-*"],"client_auth":"forward","set_headers":{"authorization":"Bearer static"},"forward_headers":{"openai_api_key":"authorization","n":"x-n"},"extra_headers":["x-?"]}]}"#,
    r#"{"provider_data":{"headers":["x-pd"],"strip":false,"max_bytes":512},"body":{"max_bytes":300},"providers":[
        {"name":"only","models":["*"],"forward_headers":{"k":"x-k"},"extra_headers":["x-*"],"generic_extra_headers":true}]}"#,
    r#"{"providers":[]}"#,
];

pub fn policies() -> &'static [Policy] {
    static P: OnceLock<Vec<Policy>> = OnceLock::new();
    P.get_or_init(|| POLICIES.iter().filter_map(|c| Policy::from_json(c.as_bytes()).ok()).collect())
}

const HEADER_NAMES: &[&str] = &[
    "x-llamastack-provider-data",
    "X-OGX-Provider-Data",
    "x-pd",
    "x-llm-provider",
    "X-LLM-Model",
    "x-route",
    "x-route-model",
    "authorization",
    "Authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
    "proxy-authorization",
    "cookie",
    "x-envoy-upstream-rq-timeout-ms",
    "X-Envoy-Retry-On",
    "x-forwarded-for",
    "X-Real-IP",
    "forwarded",
    "cf-connecting-ip",
    "x-forwarded",
    "via",
    "x-http-method-override",
    "content-encoding",
    "host",
    "content-length",
    "x-stainless-os",
    "x-maas-tier",
    "anthropic-beta",
    "anthropic-version",
    "x-renamed",
    "x-tier",
    "x-debug",
    "x-custom",
    "user-agent",
    "accept",
    "traceparent",
    "x-request-id",
    "x-k",
    "x-internal-trace",
    "x-tenant-id",
    "x-gateway",
];

const KEYS: &[&str] = &[
    "vllm_api_token",
    "openai_api_key",
    "anthropic_api_key",
    "tenant_id",
    "k",
    "n",
    "vllm_extra_headers",
    "openai_extra_headers",
    "anthropic_extra_headers",
    "only_extra_headers",
    "extra_headers",
    "__proto__",
    "",
];

const VALUES: &[&str] =
    &["sk-secret", "", "free-tier", "a\r\nx-injected: 1", "a\u{0}b", "caf\u{e9}", "\t", "Bearer x", "\u{7f}"];

const MODELS: &[&str] =
    &["llama-3-8b", "vllm/x", "gpt-4o", "llama-3-special", "claude-3", "mistral", "", "LLAMA-3", "llama-\n"];

/// A cursor over fuzz bytes: every read succeeds (zeros after the end).
pub struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes(data)
    }
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.byte() as usize % n }
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn text(&mut self) -> String {
        if self.byte().is_multiple_of(4) {
            let n = self.below(24);
            String::from_utf8_lossy(self.take(n)).into_owned()
        } else {
            self.pick(VALUES).to_string()
        }
    }
    fn header_name(&mut self) -> String {
        if self.byte().is_multiple_of(8) {
            let n = 1 + self.below(12);
            String::from_utf8_lossy(self.take(n)).into_owned()
        } else {
            let name = self.pick(HEADER_NAMES);
            if self.byte().is_multiple_of(3) { name.to_ascii_uppercase() } else { name.to_string() }
        }
    }
    fn scalar(&mut self) -> Value {
        match self.below(7) {
            0 => json!(self.byte() as i64 - 100),
            1 => json!(self.byte().is_multiple_of(2)),
            2 => Value::Null,
            3 => json!([self.text()]),
            4 => json!({"nested": self.text()}),
            _ => json!(self.text()),
        }
    }
}

/// A request as Envoy delivers it: headers, body chunks (if any), and the configuration.
#[derive(Debug, Clone)]
pub struct Case {
    pub policy: usize,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Vec<Vec<u8>>>,
}

impl Case {
    pub fn from_bytes(data: &[u8]) -> Case {
        let mut b = Bytes::new(data);
        let policy = b.below(policies().len());
        let mut headers =
            vec![(":method".to_string(), b"POST".to_vec()), (":path".to_string(), b"/v1/chat/completions".to_vec())];
        for _ in 0..b.below(6) {
            let name = b.header_name().to_ascii_lowercase();
            let value = b.text().into_bytes();
            headers.push((name, value));
        }
        // Mostly exactly one provider-data header (the interesting case), sometimes none or two.
        let provider_data_headers = match b.below(10) {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        for _ in 0..provider_data_headers {
            let name = b.pick(&["x-llamastack-provider-data", "x-ogx-provider-data", "x-pd"]).to_string();
            headers.push((name, provider_data(&mut b).into_bytes()));
        }
        let body = match b.below(10) {
            0 => None,
            kind => {
                let content_type: &[u8] = if kind == 1 { b"text/plain" } else { b"application/json" };
                headers.push(("content-type".into(), content_type.to_vec()));
                let doc = body(&mut b);
                let mut chunks = Vec::new();
                let mut rest = doc.as_slice();
                while !rest.is_empty() {
                    let n = 1 + b.below(rest.len().min(64));
                    let (c, r) = rest.split_at(n);
                    chunks.push(c.to_vec());
                    rest = r;
                }
                Some(chunks)
            }
        };
        Case { policy, headers, body }
    }

    /// Runs the request through the flow as the filter does; returns the decision and what the
    /// body said (for the invariants).
    pub fn run(&self) -> (Decision<'static>, BodyModel) {
        let policy = &policies()[self.policy];
        let chunks = self.body.as_ref().map(|c| c.iter().map(Vec::as_slice));
        let decision = decide_complete(policy, &self.headers, chunks);
        // What the body says, found independently of the flow (the invariants check against it).
        let read = matches!(on_request_headers(policy, &self.headers, self.body.is_none()), AfterHeaders::ReadBody(_));
        let body: Vec<u8> = self.body.iter().flatten().flatten().copied().collect();
        let model = match expected_scan(&body).unwrap_or_else(|| scan(&[&body])) {
            _ if !read || body.is_empty() => BodyModel::NotRead,
            Ok(Some(m)) => BodyModel::Model(m),
            _ => BodyModel::Absent,
        };
        (decision, model)
    }
}

fn provider_data(b: &mut Bytes) -> String {
    if b.byte().is_multiple_of(10) {
        let n = b.below(40);
        return String::from_utf8_lossy(b.take(n)).into_owned();
    }
    let mut map = Map::new();
    for _ in 0..1 + b.below(6) {
        // Half the entries are extra-headers maps: that is where smuggling is tried.
        let key = if b.byte().is_multiple_of(2) {
            b.pick(&[
                "vllm_extra_headers",
                "openai_extra_headers",
                "anthropic_extra_headers",
                "only_extra_headers",
                "extra_headers",
            ])
        } else {
            b.pick(KEYS)
        };
        let value = if key.ends_with("extra_headers") && !b.byte().is_multiple_of(5) {
            let mut extra = Map::new();
            let many = b.byte().is_multiple_of(16);
            for _ in 0..b.below(if many { 70 } else { 5 }) {
                let name = if b.byte().is_multiple_of(4) { format!("x-maas-{}", extra.len()) } else { b.header_name() };
                extra.insert(name, b.scalar());
            }
            Value::Object(extra)
        } else {
            b.scalar()
        };
        map.insert(key.to_string(), value);
    }
    Value::Object(map).to_string()
}

fn body(b: &mut Bytes) -> Vec<u8> {
    let model = json!(b.pick(MODELS));
    let doc = match b.below(12) {
        0 => {
            let n = b.below(64);
            return b.take(n).to_vec();
        }
        1 => {
            format!(r#"{{"messages":[{{"content":"{}"}}],"model":{model},"model":"gpt-4o"}}"#, "x".repeat(b.below(40)))
        }
        2 => format!(r#"{{"model":{}}}"#, b.scalar()),
        3 => r#"{"messages":[]}"#.to_string(),
        4 => format!(r#"{{"mod\u0065l":{model},"stream":true}}"#),
        5 => format!(r#"{{"model":{model},"Mod\u0065L":"gpt-4o"}}"#),
        _ => format!(r#"{{"messages":[{{"role":"user","content":"hi \"model\""}}],"model":{model}}}"#),
    };
    doc.into_bytes()
}

/// What the scanner must say about `doc`, from serde_json: `None` when serde_json itself cannot
/// decide (numbers out of f64 range, nesting past its recursion limit).
pub fn expected_scan(doc: &[u8]) -> Option<Result<Option<String>, ScanError>> {
    if let Err(e) = serde_json::from_slice::<Value>(doc) {
        let msg = e.to_string();
        if msg.contains("number out of range") || msg.contains("recursion limit") {
            return None;
        }
        return Some(Err(ScanError::Malformed { offset: 0 }));
    }
    let mut de = serde_json::Deserializer::from_slice(doc);
    let keys = de.deserialize_any(TopLevelModels).ok()?;
    // The scanner stops at the first problem in document order.
    let mut model = None;
    for key in keys {
        match key {
            ModelKey::CaseVariant => return Some(Err(ScanError::ModelCaseVariant)),
            ModelKey::Exact(_) if model.is_some() => return Some(Err(ScanError::DuplicateModel)),
            ModelKey::Exact(Value::String(m)) if m.len() <= MAX_MODEL_BYTES => model = Some(m),
            ModelKey::Exact(Value::String(_)) => return Some(Err(ScanError::ModelTooLong)),
            ModelKey::Exact(_) => return Some(Err(ScanError::ModelNotString)),
        }
    }
    Some(Ok(model))
}

/// Scans `doc` split into the given chunks.
pub fn scan(chunks: &[&[u8]]) -> Result<Option<String>, ScanError> {
    let mut s = ModelScanner::new();
    for c in chunks {
        s.feed(c)?;
    }
    s.finish()
}

/// Whether two scan results agree (any malformed offset matches `Malformed { offset: 0 }`).
pub fn same_scan(a: &Result<Option<String>, ScanError>, b: &Result<Option<String>, ScanError>) -> bool {
    match (a, b) {
        (Err(ScanError::Malformed { .. }), Err(ScanError::Malformed { .. })) => true,
        _ => a == b,
    }
}

/// Whether the scanner's answer `got` is right given serde_json's `expected`: invalid JSON must be
/// refused (which error comes first may differ); for valid JSON the answers must be the same.
pub fn scan_agrees(got: &Result<Option<String>, ScanError>, expected: &Result<Option<String>, ScanError>) -> bool {
    match expected {
        Err(ScanError::Malformed { .. }) => got.is_err(),
        _ => same_scan(got, expected),
    }
}

/// A top-level key that is `model` under ASCII case folding (serde_json decodes the key names).
enum ModelKey {
    /// `model` itself, with its value.
    Exact(Value),
    /// `Model`, `MODEL`, …
    CaseVariant,
}

/// Every top-level key that is `model` under ASCII case folding, in order.
struct TopLevelModels;

impl<'de> Visitor<'de> for TopLevelModels {
    type Value = Vec<ModelKey>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<ModelKey>, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "model" {
                keys.push(ModelKey::Exact(map.next_value::<Value>()?));
            } else {
                if key.eq_ignore_ascii_case("model") {
                    keys.push(ModelKey::CaseVariant);
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(keys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<ModelKey>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Vec<ModelKey>, E> {
        Ok(Vec::new())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Vec<ModelKey>, E> {
        Ok(Vec::new())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Vec<ModelKey>, E> {
        Ok(Vec::new())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Vec<ModelKey>, E> {
        Ok(Vec::new())
    }
    fn visit_str<E>(self, _: &str) -> Result<Vec<ModelKey>, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E>(self) -> Result<Vec<ModelKey>, E> {
        Ok(Vec::new())
    }
}

/// Fuzz/property entry points: each panics (with the evidence) when a property fails.
///
/// A whole request: every decision keeps every guarantee.
pub fn check_case(data: &[u8]) {
    let case = Case::from_bytes(data);
    let (decision, body) = case.run();
    let v = crate::invariants::violations(&policies()[case.policy], &case.headers, &body, &decision);
    assert!(v.is_empty(), "{v:?}\n{case:?}\n{decision:?}");
}

/// A body (first byte picks the split point): the scanner agrees with serde_json, whole and split.
pub fn check_scan(data: &[u8]) {
    let Some((&cut, doc)) = data.split_first() else { return };
    let Some(expected) = expected_scan(doc) else { return };
    let whole = scan(&[doc]);
    assert!(scan_agrees(&whole, &expected), "{:?}: {whole:?} vs {expected:?}", String::from_utf8_lossy(doc));
    let (a, b) = doc.split_at(cut as usize * doc.len() / 255);
    let split = scan(&[a, b]);
    assert!(same_scan(&split, &whole), "split at {}: {split:?} vs {whole:?}", a.len());
}

/// A provider-data header value, sent for a model of every provider of every configuration.
pub fn check_provider_data(data: &[u8]) {
    for (i, policy) in policies().iter().enumerate() {
        for model in MODELS {
            let body = format!(r#"{{"model":{}}}"#, json!(model)).into_bytes();
            for header in &policy.provider_data_headers {
                let case = Case {
                    policy: i,
                    headers: vec![
                        ("content-type".into(), b"application/json".to_vec()),
                        (header.clone(), data.to_vec()),
                    ],
                    body: Some(vec![body.clone()]),
                };
                let (decision, body) = case.run();
                let v = crate::invariants::violations(policy, &case.headers, &body, &decision);
                assert!(v.is_empty(), "{v:?}\n{case:?}\n{decision:?}");
            }
        }
    }
}

/// A plugin configuration: loading never panics, and a refusal names at least one problem.
pub fn check_config(data: &[u8]) {
    if let Err(e) = Policy::from_json(data) {
        assert!(!e.0.is_empty(), "refused without a reason");
    }
}
