//! The error a client gets: HTTP status, a stable `code`, and an OpenAI-shaped JSON body
//! (SPEC §3). Messages may name headers and the model, never a header value.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Provider data is not JSON, not an object, nested too deep, or an entry has the wrong type.
    InvalidProviderData,
    ProviderDataTooLarge,
    /// Two provider-data headers at once.
    ConflictingProviderData,
    InvalidHeaderName,
    InvalidHeaderValue,
    HeaderValueTooLong,
    BlockedHeader,
    TooManyHeaders,
    ModelNotFound,
    /// The top-level `model` is not a string, or not usable as a header value.
    InvalidModel,
    DuplicateModel,
    InvalidJson,
    RequestTooLarge,
    UnsupportedContentEncoding,
    /// The filter could not read the request from Envoy.
    InternalError,
    /// The upstream role cannot fit this attempt to a provider of the request's fallback chain
    /// (endpoint without provider metadata, provider outside the chain, missing handover).
    FallbackMisconfigured,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::InvalidProviderData,
        ErrorCode::ProviderDataTooLarge,
        ErrorCode::ConflictingProviderData,
        ErrorCode::InvalidHeaderName,
        ErrorCode::InvalidHeaderValue,
        ErrorCode::HeaderValueTooLong,
        ErrorCode::BlockedHeader,
        ErrorCode::TooManyHeaders,
        ErrorCode::ModelNotFound,
        ErrorCode::InvalidModel,
        ErrorCode::DuplicateModel,
        ErrorCode::InvalidJson,
        ErrorCode::RequestTooLarge,
        ErrorCode::UnsupportedContentEncoding,
        ErrorCode::InternalError,
        ErrorCode::FallbackMisconfigured,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidProviderData => "invalid_provider_data",
            ErrorCode::ProviderDataTooLarge => "provider_data_too_large",
            ErrorCode::ConflictingProviderData => "conflicting_provider_data",
            ErrorCode::InvalidHeaderName => "invalid_header_name",
            ErrorCode::InvalidHeaderValue => "invalid_header_value",
            ErrorCode::HeaderValueTooLong => "header_value_too_long",
            ErrorCode::BlockedHeader => "blocked_header",
            ErrorCode::TooManyHeaders => "too_many_headers",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::InvalidModel => "invalid_model",
            ErrorCode::DuplicateModel => "duplicate_model",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::UnsupportedContentEncoding => "unsupported_content_encoding",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::FallbackMisconfigured => "fallback_misconfigured",
        }
    }

    pub fn status(self) -> u32 {
        match self {
            ErrorCode::ModelNotFound => 404,
            ErrorCode::RequestTooLarge => 413,
            ErrorCode::UnsupportedContentEncoding => 415,
            ErrorCode::ProviderDataTooLarge => 431,
            ErrorCode::InternalError => 500,
            ErrorCode::FallbackMisconfigured => 502,
            _ => 400,
        }
    }

    fn error_type(self) -> &'static str {
        match self {
            ErrorCode::InternalError | ErrorCode::FallbackMisconfigured => "server_error",
            _ => "invalid_request_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection { code, message: message.into() }
    }

    /// A failure of the host or the filter itself (500 `internal_error`), not of the request.
    pub fn internal(what: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::InternalError, what)
    }

    pub fn status(&self) -> u32 {
        self.code.status()
    }

    /// `{"error":{"message":…,"type":…,"param":null,"code":…}}`, keys in OpenAI's order.
    pub fn body(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        format!(
            r#"{{"error":{{"message":{},"type":{},"param":null,"code":{}}}}}"#,
            quoted(&self.message),
            quoted(self.code.error_type()),
            quoted(self.code.as_str())
        )
    }
}

/// A name that came from the client, made safe to quote in a message: at most 64 characters,
/// escaped by `{:?}`.
pub fn quote_name(name: &str) -> String {
    let mut short: String = name.chars().take(64).collect();
    if short.len() < name.len() {
        short.push('…');
    }
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let r = Rejection::new(ErrorCode::ModelNotFound, "The model \"x\" is not served here");
        let v: serde_json::Value = serde_json::from_str(&r.body()).expect("json");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert_eq!(r.status(), 404);
        assert!(r.body().starts_with(r#"{"error":{"message":"The model \"x\" is"#), "{}", r.body());
    }

    #[test]
    fn codes_are_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn quoted_names_are_escaped_and_bounded() {
        assert_eq!(quote_name("x-a\r\nb"), "\"x-a\\r\\nb\"");
        assert_eq!(quote_name(&"n".repeat(100)).chars().count(), 64 + 3);
    }
}
