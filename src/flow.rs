//! The life of one request, as the host drives it: headers, then (maybe) body chunks, then the end
//! of the body. Pure Rust, so tests feed it exactly what Envoy feeds the filter. The glue in
//! `filter` only moves bytes in and applies the [`Decision`] that comes out.

use crate::decision::{BodyModel, Decision, Headers, Request, decide};
use crate::model_scan::{MAX_DEPTH, MAX_MODEL_BYTES, ModelScanner, ScanError};
use crate::policy::Policy;
use crate::rejection::{ErrorCode, Rejection};

/// What the filter does after the request headers.
#[derive(Debug)]
pub enum AfterHeaders<'p> {
    /// Decided without the body.
    Decided(Decision<'p>),
    /// Hold the request and feed the body to [`BodyRead`].
    ReadBody(BodyRead),
}

/// Reading a JSON body: each chunk is scanned once as it arrives and never kept.
#[derive(Debug, Default)]
pub struct BodyRead {
    scanner: ModelScanner,
    received: usize,
}

/// Called with the request headers; `end_of_stream` means there is no body.
pub fn on_request_headers<'p>(policy: &'p Policy, headers: &Headers, end_of_stream: bool) -> AfterHeaders<'p> {
    match precheck(policy, |name| header(headers, name), end_of_stream) {
        Precheck::ReadBody(read) => AfterHeaders::ReadBody(read),
        Precheck::Reject(rejection) => AfterHeaders::Decided(Decision::Reject(rejection)),
        Precheck::Decide => AfterHeaders::Decided(decide_without_body(policy, headers)),
    }
}

/// What the request headers decide before the whole header map is needed: [`on_request_headers`]
/// in two steps, so a host can answer the first from its own header map without copying it.
#[derive(Debug)]
pub enum Precheck {
    /// Hold the request and feed the body to [`BodyRead`]; the headers are needed at its end.
    ReadBody(BodyRead),
    /// Refused on these headers alone.
    Reject(Rejection),
    /// Decide now, without the body: [`decide_without_body`] on all the headers.
    Decide,
}

/// The first step of [`on_request_headers`]. `header(name)` is the value of the first request
/// header called `name` (any case); only `content-type`, `content-length` and `content-encoding`
/// are asked for.
pub fn precheck<V: AsRef<[u8]>>(
    policy: &Policy,
    mut header: impl FnMut(&str) -> Option<V>,
    end_of_stream: bool,
) -> Precheck {
    if end_of_stream || !policy.needs_model() || !header("content-type").is_some_and(|v| is_json(v.as_ref())) {
        return Precheck::Decide;
    }
    match header("content-length").and_then(|v| std::str::from_utf8(v.as_ref()).ok()?.trim().parse::<u64>().ok()) {
        Some(0) => return Precheck::Decide,
        Some(n) if n > policy.body_max_bytes as u64 => return Precheck::Reject(too_large(policy)),
        _ => {}
    }
    if let Some(encoding) = header("content-encoding")
        && !encoding.as_ref().trim_ascii().eq_ignore_ascii_case(b"identity")
    {
        return Precheck::Reject(Rejection::new(
            ErrorCode::UnsupportedContentEncoding,
            "Compressed request bodies are not supported: the model must be read from the body",
        ));
    }
    Precheck::ReadBody(BodyRead::default())
}

/// The second step of [`on_request_headers`] after [`Precheck::Decide`].
pub fn decide_without_body<'p>(policy: &'p Policy, headers: &Headers) -> Decision<'p> {
    decide(policy, &Request { headers, body: BodyModel::NotRead })
}

impl BodyRead {
    /// Scans the next chunk. `Some` is a rejection known before the body ends.
    pub fn on_chunk(&mut self, policy: &Policy, chunk: &[u8]) -> Option<Rejection> {
        self.received += chunk.len();
        if self.received > policy.body_max_bytes {
            return Some(too_large(policy));
        }
        self.scanner.feed(chunk).err().map(scan_rejection)
    }

    /// The body is complete: decide. An empty body counts as no body.
    pub fn on_end<'p>(self, policy: &'p Policy, headers: &Headers) -> Decision<'p> {
        let body = if self.received == 0 {
            BodyModel::NotRead
        } else {
            match self.scanner.finish() {
                Ok(Some(model)) => BodyModel::Model(model),
                Ok(None) => BodyModel::Absent,
                Err(e) => return Decision::Reject(scan_rejection(e)),
            }
        };
        decide(policy, &Request { headers, body })
    }

    pub fn received(&self) -> usize {
        self.received
    }
}

/// A whole request at once, the body already split into the chunks Envoy would deliver (`None`:
/// no body): the same steps the filter takes, for tools and tests.
pub fn decide_complete<'p, 'c>(
    policy: &'p Policy,
    headers: &Headers,
    body: Option<impl IntoIterator<Item = &'c [u8]>>,
) -> Decision<'p> {
    match on_request_headers(policy, headers, body.is_none()) {
        AfterHeaders::Decided(decision) => decision,
        AfterHeaders::ReadBody(mut read) => {
            for chunk in body.into_iter().flatten() {
                if let Some(rejection) = read.on_chunk(policy, chunk) {
                    return Decision::Reject(rejection);
                }
            }
            read.on_end(policy, headers)
        }
    }
}

fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

/// `application/json`, `application/*+json` (any parameters, any case).
fn is_json(content_type: &[u8]) -> bool {
    let media = content_type.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    let media = media.to_ascii_lowercase();
    let Some(slash) = media.iter().position(|&b| b == b'/') else { return false };
    let subtype = &media[slash + 1..];
    subtype == b"json" || subtype.ends_with(b"+json")
}

fn too_large(policy: &Policy) -> Rejection {
    Rejection::new(
        ErrorCode::RequestTooLarge,
        format!("The request body is larger than {} bytes", policy.body_max_bytes),
    )
}

fn scan_rejection(e: ScanError) -> Rejection {
    match e {
        ScanError::Malformed { offset } => {
            Rejection::new(ErrorCode::InvalidJson, format!("The request body is not valid JSON (at byte {offset})"))
        }
        ScanError::TooDeep { offset } => Rejection::new(
            ErrorCode::InvalidJson,
            format!("The request body is nested deeper than {MAX_DEPTH} levels (at byte {offset})"),
        ),
        ScanError::DuplicateModel => {
            Rejection::new(ErrorCode::DuplicateModel, "The request body has more than one top-level \"model\"")
        }
        ScanError::ModelCaseVariant => Rejection::new(
            ErrorCode::DuplicateModel,
            "The request body has a top-level key that differs from \"model\" only in letter case; \
             some backends would read it as the model",
        ),
        ScanError::ModelNotString => Rejection::new(ErrorCode::InvalidModel, "\"model\" must be a string"),
        ScanError::ModelTooLong => {
            Rejection::new(ErrorCode::InvalidModel, format!("\"model\" is longer than {MAX_MODEL_BYTES} bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ct in ["application/json", "Application/JSON; charset=utf-8", " application/vnd.api+json "] {
            assert!(is_json(ct.as_bytes()), "{ct}");
        }
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json", ""] {
            assert!(!is_json(ct.as_bytes()), "{ct}");
        }
    }

    #[test]
    fn the_precheck_asks_only_for_the_body_headers() {
        let policy = Policy::from_json(br#"{"providers":[{"name":"vllm","models":["llama-*"]}]}"#).expect("config");
        let asked = std::cell::RefCell::new(Vec::new());
        let headers: [(&str, &[u8]); 3] =
            [("content-type", b"application/json"), ("content-length", b"12"), ("content-encoding", b"identity")];
        let lookup = |name: &str| {
            asked.borrow_mut().push(name.to_string());
            headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        assert!(matches!(precheck(&policy, lookup, false), Precheck::ReadBody(_)));
        assert_eq!(*asked.borrow(), ["content-type", "content-length", "content-encoding"]);
    }
}
