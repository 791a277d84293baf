//! "What would happen to this request?", answered offline with the filter's own decision code:
//! the request goes through [`crate::flow`] exactly as the filter feeds it (headers, then the body
//! in the same bounded pieces), and the decision is reported header by header with its rule.

use crate::decision::{Decision, Rewrite};
use crate::flow::decide_complete;
use crate::policy::Policy;
use serde_json::{Value, json};
use std::fmt::Write;

/// Body bytes handed to the scanner at once, as the filter does.
const PIECE: usize = 64 * 1024;

/// An HTTP request as the filter sees it: lowercase header names (pseudo-headers included).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
}

impl HttpRequest {
    /// Reads a request file: either JSON
    /// `{"method": "POST", "path": "/v1/chat/completions", "headers": {...} or [[name, value], ...], "body": ...}`
    /// (`body` a JSON value, or a string sent as is), or a raw HTTP/1.1 request.
    pub fn parse(bytes: &[u8]) -> Result<HttpRequest, String> {
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"{") {
            let v: Value = serde_json::from_slice(trimmed).map_err(|e| format!("request JSON: {e}"))?;
            return Self::from_json(&v);
        }
        Self::from_raw(bytes)
    }

    fn from_json(v: &Value) -> Result<HttpRequest, String> {
        let text = |key: &str, default: &str| -> Result<String, String> {
            match v.get(key) {
                None => Ok(default.to_string()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("request JSON: `{key}` must be a string")),
            }
        };
        let mut headers = vec![
            (":method".to_string(), text("method", "POST")?.into_bytes()),
            (":path".to_string(), text("path", "/v1/chat/completions")?.into_bytes()),
            (":authority".to_string(), text("authority", "gateway.local")?.into_bytes()),
        ];
        let pairs: Vec<(String, String)> = match v.get("headers") {
            None => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Ok((k.clone(), other.to_string())),
                })
                .collect::<Result<_, String>>()?,
            Some(Value::Array(a)) => a
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(n), Value::String(v)]) => Ok((n.clone(), v.clone())),
                    _ => Err("request JSON: `headers` pairs must be [name, value] strings".to_string()),
                })
                .collect::<Result<_, String>>()?,
            Some(_) => return Err("request JSON: `headers` must be an object or a list of pairs".into()),
        };
        headers.extend(pairs.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v.into_bytes())));
        let body = match v.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone().into_bytes()),
            Some(other) => Some(other.to_string().into_bytes()),
        };
        if body.is_some() && !headers.iter().any(|(n, _)| n == "content-type") {
            headers.push(("content-type".into(), b"application/json".to_vec()));
        }
        Ok(HttpRequest { headers, body })
    }

    fn from_raw(bytes: &[u8]) -> Result<HttpRequest, String> {
        let split = find(bytes, b"\r\n\r\n").map(|i| (i, 4)).or_else(|| find(bytes, b"\n\n").map(|i| (i, 2)));
        let (head, body) = match split {
            Some((i, sep)) => (&bytes[..i], &bytes[i + sep..]),
            None => (bytes, &b""[..]),
        };
        let head = std::str::from_utf8(head).map_err(|_| "raw request: the head is not UTF-8".to_string())?;
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("raw request: bad request line {request_line:?}"));
        };
        if !version.starts_with("HTTP/") {
            return Err(format!("raw request: bad request line {request_line:?}"));
        }
        let mut headers =
            vec![(":method".to_string(), method.as_bytes().to_vec()), (":path".to_string(), path.as_bytes().to_vec())];
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("raw request: bad header line {line:?}"));
            };
            let name = name.trim().to_ascii_lowercase();
            let name = if name == "host" { ":authority".to_string() } else { name };
            headers.push((name, value.trim().as_bytes().to_vec()));
        }
        let body = (!body.is_empty()).then(|| body.to_vec());
        Ok(HttpRequest { headers, body })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs the request through the filter's flow, the body in the filter's piece size.
pub fn decide<'p>(policy: &'p Policy, request: &HttpRequest) -> Decision<'p> {
    decide_complete(policy, &request.headers, request.body.as_deref().map(|b| b.chunks(PIECE)))
}

/// The decision as data (`--json`).
pub fn to_json(request: &HttpRequest, decision: &Decision) -> Value {
    match decision {
        Decision::Reject(r) => json!({
            "outcome": "rejected",
            "status": r.status(),
            "code": r.code.as_str(),
            "reply": serde_json::from_str::<Value>(&r.body()).unwrap_or(Value::Null),
        }),
        Decision::Forward(rw) => json!({
            "outcome": "forwarded",
            "provider": rw.provider,
            "chain": rw.chain,
            "model": rw.model,
            "removed": rw.remove.iter().map(|r| json!({"header": r.name, "rule": r.rule.to_string()})).collect::<Vec<_>>(),
            "set": rw.set.iter().map(|a| json!({"header": a.name, "value": a.value, "rule": a.rule.to_string()})).collect::<Vec<_>>(),
            "dropped": rw.dropped.iter().map(|d| json!({"header": d.name, "from": d.from, "reason": d.reason.as_str()})).collect::<Vec<_>>(),
            "upstream_headers": upstream(request, rw).into_iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        }),
    }
}

fn upstream(request: &HttpRequest, rw: &Rewrite) -> Vec<(String, String)> {
    rw.apply_to(&request.headers).into_iter().map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned())).collect()
}

/// The decision for a person to read.
pub fn to_text(request: &HttpRequest, decision: &Decision) -> String {
    let mut out = String::new();
    match decision {
        Decision::Reject(r) => {
            let _ = writeln!(out, "REJECTED {} {}", r.status(), r.code.as_str());
            let _ = writeln!(out, "  reply: {}", r.body());
        }
        Decision::Forward(rw) => {
            let _ = writeln!(out, "FORWARDED");
            let _ = writeln!(out, "  model:    {}", rw.model.as_deref().unwrap_or("(none: body not read or no model)"));
            match rw.chain {
                Some(chain) => {
                    let _ = writeln!(
                        out,
                        "  chain:    {chain} (each attempt's provider headers are set by the upstream role)"
                    );
                }
                None => {
                    let _ = writeln!(out, "  provider: {}", rw.provider.unwrap_or("(none: Envoy's own routes decide)"));
                }
            }
            for r in &rw.remove {
                let _ = writeln!(out, "  - remove  {:<28} by {}", r.name, r.rule);
            }
            for a in &rw.set {
                let _ = writeln!(out, "  + set     {:<28} = {:?} by {}", a.name, a.value, a.rule);
            }
            for d in &rw.dropped {
                let _ = writeln!(out, "  x dropped {:<28} from {} ({})", d.name, d.from, d.reason.as_str());
            }
            let _ = writeln!(out, "  upstream receives:");
            for (n, v) in upstream(request, rw) {
                let _ = writeln!(out, "    {n}: {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_raw_requests_read_the_same() {
        let json = br#"{"method":"POST","path":"/v1/chat/completions","authority":"gw",
            "headers":{"Content-Type":"application/json","X-LLM-Provider":"openai"},"body":{"model":"m"}}"#;
        let raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-LLM-Provider: openai\r\n\r\n{\"model\":\"m\"}";
        let a = HttpRequest::parse(json).expect("json");
        let b = HttpRequest::parse(raw).expect("raw");
        let sorted = |mut h: Vec<(String, Vec<u8>)>| {
            h.sort();
            h
        };
        assert_eq!(sorted(a.headers), sorted(b.headers));
        assert_eq!(a.body, b.body);
    }

    #[test]
    fn bad_requests_are_explained() {
        assert!(HttpRequest::parse(b"GARBAGE").is_err());
        assert!(HttpRequest::parse(br#"{"headers": 3}"#).is_err());
    }
}
