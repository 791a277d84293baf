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

/// Replacing the model in a body that passes through piece by piece, for a host that can drain and
/// append to the piece it holds but not insert before bytes it has passed on (Envoy's dynamic
/// modules). Nothing is held back in the host: the pieces before the end of the model's value are
/// kept by [`ModelRewrite`] and drained, and the piece holding that end becomes the rewritten prefix
/// plus the rest of the piece. Every byte after flows on untouched.
#[derive(Debug)]
pub struct PieceRewrite {
    /// `None` once the piece holding the model's end was replaced.
    rewrite: Option<ModelRewrite>,
    /// Body bytes in the pieces drained so far.
    seen: usize,
    /// The body's length as the client sent it (`content-length`), if known.
    original_length: Option<usize>,
}

/// What the host does with the piece it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Drain it (its bytes are kept here) and wait for the next one.
    Drain,
    /// Replace it with `bytes` and let the body go on; `content_length` is the body's new length,
    /// when the original one is known.
    Replace { bytes: Vec<u8>, content_length: Option<usize> },
    /// The body ended without a string `model` (or is not JSON): the attempt must be refused.
    NoModel,
}

impl PieceRewrite {
    pub fn new(model: &str, original_length: Option<usize>) -> PieceRewrite {
        PieceRewrite { rewrite: Some(ModelRewrite::new(model)), seen: 0, original_length }
    }

    /// The next piece of the body, as the host's slices of it; `end`: no more body follows.
    /// After the replacement, pieces are not this type's business: asking again is
    /// [`Piece::NoModel`].
    pub fn piece(&mut self, slices: &[&[u8]], end: bool) -> Piece {
        let Some(rewrite) = self.rewrite.as_mut() else { return Piece::NoModel };
        if !slices.iter().any(|slice| rewrite.feed(slice)) {
            self.seen += slices.iter().map(|s| s.len()).sum::<usize>();
            return if end { Piece::NoModel } else { Piece::Drain };
        }
        let Some(splice) = self.rewrite.take().and_then(ModelRewrite::splice) else { return Piece::NoModel };
        let mut skip = splice.drain.saturating_sub(self.seen);
        let mut bytes = splice.replacement.clone();
        for slice in slices {
            bytes.extend_from_slice(slice.get(skip.min(slice.len())..).unwrap_or_default());
            skip = skip.saturating_sub(slice.len());
        }
        Piece::Replace { bytes, content_length: self.original_length.map(|l| splice.new_length(l)) }
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

#[cfg(test)]
mod piece_tests {
    use super::*;

    /// Passes `body` through a host in pieces of `piece` bytes, each cut into slices of `slice`
    /// bytes: what the host sends on, and the content-length it sets.
    fn through(body: &[u8], model: &str, piece: usize, slice: usize) -> Option<(Vec<u8>, Option<usize>)> {
        let mut rewrite = PieceRewrite::new(model, Some(body.len()));
        let mut sent = Vec::new();
        let pieces: Vec<&[u8]> = body.chunks(piece.max(1)).collect();
        for (i, p) in pieces.iter().enumerate() {
            let slices: Vec<&[u8]> = p.chunks(slice.max(1)).collect();
            match rewrite.piece(&slices, i + 1 == pieces.len()) {
                Piece::Drain => {}
                Piece::NoModel => return None,
                Piece::Replace { bytes, content_length } => {
                    sent.extend_from_slice(&bytes);
                    pieces[i + 1..].iter().for_each(|rest| sent.extend_from_slice(rest));
                    return Some((sent, content_length));
                }
            }
        }
        None
    }

    #[test]
    fn every_byte_but_the_model_value_arrives_whatever_the_pieces_and_slices() {
        let filler = "x".repeat(300);
        let body =
            format!(r#"{{"messages":[{{"content":"{filler} \"model\":\"no\""}}],"model" : "llama-3-70b","n":1}}"#);
        let want = body.replace(r#""llama-3-70b""#, r#""gpt-4o-mini""#);
        for piece in [1, 3, 16, 100, 317, 330, 1000] {
            for slice in [1, 7, 64, 4096] {
                let (sent, length) = through(body.as_bytes(), "gpt-4o-mini", piece, slice).expect("a model");
                assert_eq!(String::from_utf8(sent).expect("utf-8"), want, "piece {piece} slice {slice}");
                assert_eq!(length, Some(want.len()));
            }
        }
    }

    #[test]
    fn a_body_without_a_model_is_refused_at_its_end() {
        assert_eq!(through(br#"{"messages":[]}"#, "m", 4, 2), None);
        let mut rewrite = PieceRewrite::new("m", None);
        assert_eq!(rewrite.piece(&[b"{\"messages\":"], false), Piece::Drain);
        assert_eq!(rewrite.piece(&[b"[]}"], true), Piece::NoModel);
        let mut rewrite = PieceRewrite::new("m", None);
        assert_eq!(rewrite.piece(&[b"not json"], true), Piece::NoModel);
    }

    #[test]
    fn without_the_original_length_none_is_set() {
        let mut rewrite = PieceRewrite::new("b", None);
        let got = rewrite.piece(&[br#"{"model":"a"}"#], true);
        assert_eq!(got, Piece::Replace { bytes: br#"{"model":"b"}"#.to_vec(), content_length: None });
    }
}
