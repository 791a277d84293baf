//! The provider-data header: a small JSON object the client sends (Llama Stack convention), parsed
//! into a map. Structural problems reject the request (SPEC §5); what a provider may take from the
//! map is decided in [`crate::forwarding`].

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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
    // Reading a `RawValue` validates the whole document without building it (and without
    // recursion, so any depth is safe); `tree` then builds at most `MAX_DEPTH` levels of it.
    let top: &RawValue = serde_json::from_slice(raw).map_err(|_| ProviderDataError::NotJson)?;
    match tree(top, 1)? {
        Value::Object(map) => Ok(map),
        _ => Err(ProviderDataError::NotAnObject),
    }
}

/// The value of `raw`, at nesting `level` (the provider-data object is level 1). Numbers become
/// strings holding their original JSON text, which is exactly the header value they become:
/// serde_json would read them as i64/u64/f64, rounding `123456789012345678901234567890`,
/// rewriting `1.0e2` as `100.0` and refusing `1e400`.
fn tree(raw: &RawValue, level: usize) -> Result<Value, ProviderDataError> {
    let text = raw.get().trim_start_matches([' ', '\t', '\n', '\r']);
    let not_json = |_| ProviderDataError::NotJson;
    let container = text.starts_with(['{', '[']);
    if container && level > MAX_DEPTH {
        return Err(ProviderDataError::TooDeep);
    }
    match text.as_bytes().first() {
        // Duplicate keys: the last one wins, as everywhere in serde_json.
        Some(b'{') => serde_json::from_slice::<BTreeMap<String, &RawValue>>(text.as_bytes())
            .map_err(not_json)?
            .into_iter()
            .map(|(k, v)| Ok((k, tree(v, level + 1)?)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(text.as_bytes())
            .map_err(not_json)?
            .into_iter()
            .map(|v| tree(v, level + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Some(b'-' | b'0'..=b'9') => Ok(Value::String(text.to_string())),
        _ => serde_json::from_slice(text.as_bytes()).map_err(not_json),
    }
}

/// The header value a provider-data scalar becomes: strings as they are (a number is already its
/// original JSON text, see [`parse`]), booleans as `true` / `false`. `None` for objects and arrays
/// (invalid entries) — `null` is handled by callers (it means "absent").
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
    }

    #[test]
    fn numbers_are_forwarded_as_the_client_wrote_them() {
        let m = parse(
            br#"{"a":123456789012345678901234567890,"b":1.0e2,"c":-0,"d":1E400,"e":0.10,"f":7,"g":-1.5E-7,
                 "x_extra_headers":{"x-a":1.0e2,"x-b":"s","x-c":12345678901234567890123},"b":2.50}"#,
            1000,
        )
        .expect("valid");
        for (k, text) in [
            ("a", "123456789012345678901234567890"),
            ("b", "2.50"),
            ("c", "-0"),
            ("d", "1E400"),
            ("e", "0.10"),
            ("f", "7"),
            ("g", "-1.5E-7"),
        ] {
            assert_eq!(scalar_text(&m[k]).as_deref(), Some(text), "{k}");
        }
        let extra = m["x_extra_headers"].as_object().expect("object");
        assert_eq!(scalar_text(&extra["x-a"]).as_deref(), Some("1.0e2"));
        assert_eq!(scalar_text(&extra["x-b"]).as_deref(), Some("s"));
        assert_eq!(scalar_text(&extra["x-c"]).as_deref(), Some("12345678901234567890123"));
        assert_eq!(parse(br#"{"a":1.}"#, 100), Err(ProviderDataError::NotJson));
        assert_eq!(parse(br#"{"a":01}"#, 100), Err(ProviderDataError::NotJson));
        assert_eq!(parse(br#"{"a":"\ud800"}"#, 100), Err(ProviderDataError::NotJson));
    }
}
