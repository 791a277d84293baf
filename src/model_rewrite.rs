//! Replacing the body's top-level `model` for a fallback attempt (SPEC §8), keeping every other
//! byte. The body arrives in pieces; bytes are kept only up to the end of the `model` value, then
//! the glue swaps that prefix for the rewritten one (`drain` bytes out, `replacement` in).

use crate::model_scan::ModelScanner;

#[derive(Debug, Clone)]
pub struct ModelRewrite {
    scanner: ModelScanner,
    /// The body so far, up to the end of the `model` value once that is known.
    prefix: Vec<u8>,
    /// The new value, as a JSON string.
    value: Vec<u8>,
    span: Option<(usize, usize)>,
    failed: bool,
}

/// Drain the body's first `drain` bytes and put `replacement` in their place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub drain: usize,
    pub replacement: Vec<u8>,
}

impl Splice {
    /// The body's length after the splice, from its length before.
    pub fn new_length(&self, old_length: usize) -> usize {
        old_length.saturating_sub(self.drain) + self.replacement.len()
    }
}

impl ModelRewrite {
    pub fn new(model: &str) -> ModelRewrite {
        let value = serde_json::to_vec(model).unwrap_or_else(|_| b"\"\"".to_vec());
        ModelRewrite { scanner: ModelScanner::new(), prefix: Vec::new(), value, span: None, failed: false }
    }

    /// Whether the `model` value has been found (no more body is needed).
    pub fn found(&self) -> bool {
        self.span.is_some()
    }

    /// The next piece of the body. Returns [`ModelRewrite::found`].
    pub fn feed(&mut self, piece: &[u8]) -> bool {
        if self.span.is_some() || self.failed {
            return self.span.is_some();
        }
        if self.scanner.feed(piece).is_err() {
            self.failed = true;
            return false;
        }
        self.prefix.extend_from_slice(piece);
        if let Some((start, end)) = self.scanner.model_span() {
            self.prefix.truncate(end);
            self.span = Some((start, end));
        }
        self.span.is_some()
    }

    /// The splice, once the value was found; `None` when the body has no string `model` (the
    /// downstream role never hands such a request to a chain).
    pub fn splice(self) -> Option<Splice> {
        let (start, end) = self.span?;
        let mut replacement = self.prefix;
        replacement.truncate(start);
        replacement.extend_from_slice(&self.value);
        Some(Splice { drain: end, replacement })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body: &str, model: &str, piece: usize) -> Option<String> {
        let mut r = ModelRewrite::new(model);
        for p in body.as_bytes().chunks(piece.max(1)) {
            if r.feed(p) {
                break;
            }
        }
        let splice = r.splice()?;
        let mut out = splice.replacement.clone();
        out.extend_from_slice(&body.as_bytes()[splice.drain..]);
        assert_eq!(out.len(), splice.new_length(body.len()));
        String::from_utf8(out).ok()
    }

    #[test]
    fn replaces_only_the_top_level_model_value() {
        let body = r#"{"messages":[{"role":"user","model":"inner","content":"caf\u00e9 \"model\":\"x\""}], "mod\u0065l" :	"llama-3-70b" , "n":1}"#;
        let want = body.replace(r#""llama-3-70b""#, r#""gpt-4o-mini""#);
        for piece in [1, 2, 7, 64, 4096] {
            assert_eq!(rewrite(body, "gpt-4o-mini", piece).as_deref(), Some(want.as_str()), "piece {piece}");
        }
        assert_eq!(rewrite(r#"{"model":"a"}"#, "quote\"d", 3).as_deref(), Some(r#"{"model":"quote\"d"}"#));
    }

    #[test]
    fn no_model_no_splice() {
        assert_eq!(rewrite(r#"{"messages":[]}"#, "m", 4), None);
        assert_eq!(rewrite(r#"{"model":"#, "m", 4), None);
    }
}
