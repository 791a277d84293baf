//! The provider-data header: a small JSON object the client sends (Llama Stack convention), parsed
//! into a map. Structural problems reject the request (SPEC §5); what a provider may take from the
//! map is decided in [`crate::forwarding`].

use serde_json::{Map, Value};

/// Deepest nesting accepted (the object itself is level 1; `<provider>_extra_headers` is level 2).
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderDataError {
    TooLarge,
    NotJson,
    NotAnObject,
    TooDeep,
}

pub type ProviderData = Map<String, Value>;

pub fn parse(raw: &[u8], max_bytes: usize) -> Result<ProviderData, ProviderDataError> {
    if raw.len() > max_bytes {
        return Err(ProviderDataError::TooLarge);
    }
    // serde_json refuses nesting past 128 levels on its own, so parsing first is safe.
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => {
            if map.values().any(|v| depth(v) + 1 > MAX_DEPTH) {
                return Err(ProviderDataError::TooDeep);
            }
            Ok(map)
        }
        Ok(_) => Err(ProviderDataError::NotAnObject),
        Err(e) if e.classify() == serde_json::error::Category::Syntax && e.to_string().contains("recursion limit") => {
            Err(ProviderDataError::TooDeep)
        }
        Err(_) => Err(ProviderDataError::NotJson),
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The header value a provider-data scalar becomes: strings as they are, numbers and booleans as
/// their JSON text. `None` for objects and arrays (invalid entries) — `null` is handled by callers
/// (it means "absent").
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Object(_) | Value::Array(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_an_object() {
        let m = parse(br#"{"vllm_api_token":"k","vllm_extra_headers":{"X-MaaS-Subscription":"free-tier"}}"#, 16384)
            .expect("valid");
        assert_eq!(m["vllm_api_token"], "k");
    }

    #[test]
    fn structural_problems() {
        assert_eq!(parse(b"not json", 100), Err(ProviderDataError::NotJson));
        assert_eq!(parse(b"{\"a\":\"\xff\"}", 100), Err(ProviderDataError::NotJson));
        assert_eq!(parse(b"[1,2]", 100), Err(ProviderDataError::NotAnObject));
        assert_eq!(parse(b"\"str\"", 100), Err(ProviderDataError::NotAnObject));
        assert_eq!(parse(&[b' '; 101], 100), Err(ProviderDataError::TooLarge));
        let ok = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH - 1) + "{\"b\":", "}".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes(), 10_000).is_ok(), "{ok}");
        let deep = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH + 1), "}".repeat(MAX_DEPTH + 1));
        assert_eq!(parse(deep.as_bytes(), 10_000), Err(ProviderDataError::TooDeep));
        let very_deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse(format!("{{\"a\":{very_deep}}}").as_bytes(), 100_000), Err(ProviderDataError::TooDeep));
    }

    #[test]
    fn scalars_become_their_json_text() {
        assert_eq!(scalar_text(&json!("a b")), Some("a b".into()));
        assert_eq!(scalar_text(&json!(42)), Some("42".into()));
        assert_eq!(scalar_text(&json!(1.5)), Some("1.5".into()));
        assert_eq!(scalar_text(&json!(true)), Some("true".into()));
        assert_eq!(scalar_text(&json!({"a":1})), None);
        assert_eq!(scalar_text(&json!([1])), None);
        assert_eq!(scalar_text(&json!(null)), None);
    }
}
