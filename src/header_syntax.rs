//! What a header name or value may look like (SPEC §5), and the wildcard patterns used for names and
//! models.

use wildmatch::WildMatch;

/// Longest header value the filter will set, in bytes.
pub const MAX_VALUE_BYTES: usize = 8192;

/// RFC 9110 `token`: the only characters a field name may have.
pub fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a value may not be sent as a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueProblem {
    /// A control character: C0 (CR, LF, NUL, …; horizontal tab is allowed), DEL, C1 (U+0080–U+009F,
    /// which include NEL), or a Unicode line or paragraph separator (U+2028, U+2029). Each can
    /// split or forge a line in a log or a line-oriented store downstream.
    ControlCharacter,
    TooLong,
}

/// Checks a header value (UTF-8, as provider data, the model and the configuration give them).
pub fn check_value(value: &[u8]) -> Result<(), ValueProblem> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ValueProblem::TooLong);
    }
    let at = |i: usize| value.get(i).copied().unwrap_or(0);
    for (i, &b) in value.iter().enumerate() {
        let bad = match b {
            b'\t' => false,
            0x00..=0x1f | 0x7f => true,
            // U+0080–U+009F are C2 80 … C2 9F in UTF-8.
            0xc2 => (0x80..=0x9f).contains(&at(i + 1)),
            // U+2028, U+2029 are E2 80 A8, E2 80 A9.
            0xe2 => at(i + 1) == 0x80 && matches!(at(i + 2), 0xa8 | 0xa9),
            _ => false,
        };
        if bad {
            return Err(ValueProblem::ControlCharacter);
        }
    }
    Ok(())
}

/// A wildcard pattern (`*` any run, `?` one character), compiled once at configuration time.
/// Most patterns are a plain name or a `prefix*`; those skip the general matcher.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    Any,
    Prefix(String),
    Glob(WildMatch),
}

impl Pattern {
    /// A case-sensitive pattern (model names).
    pub fn new(text: &str) -> Pattern {
        let kind = match text.find(['*', '?']) {
            None => Kind::Exact,
            Some(_) if text == "*" => Kind::Any,
            Some(i) if i == text.len() - 1 && text.ends_with('*') => Kind::Prefix(text[..i].to_string()),
            Some(_) => Kind::Glob(WildMatch::new(text)),
        };
        Pattern { text: text.to_string(), kind }
    }

    /// A header-name pattern: case-insensitive, so it is lowercased here and matched against
    /// lowercased names.
    pub fn header(text: &str) -> Pattern {
        Pattern::new(&text.to_ascii_lowercase())
    }

    pub fn matches(&self, s: &str) -> bool {
        match &self.kind {
            Kind::Exact => self.text == s,
            Kind::Any => true,
            Kind::Prefix(p) => s.starts_with(p.as_str()),
            Kind::Glob(g) => g.matches(s),
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self.kind, Kind::Exact)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A header-name pattern is valid when, wildcards aside, it could match a token.
pub fn is_header_pattern(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| is_tchar(b) || b == b'?')
}

/// The first pattern in `patterns` that matches `name`.
pub fn first_match<'p>(patterns: &'p [Pattern], name: &str) -> Option<&'p Pattern> {
    patterns.iter().find(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("x-maas-subscription"));
        assert!(is_token("X_Odd.Name~1"));
        for bad in ["", "x y", "x:y", ":path", "x\r\n", "naïve", "a,b", "a\"b"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(check_value(b"Bearer abc\tdef"), Ok(()));
        assert_eq!(check_value("caf\u{e9}".as_bytes()), Ok(()));
        for bad in [&b"a\rb"[..], b"a\nb", b"a\0b", b"\x1b[31m", b"del\x7f"] {
            assert_eq!(check_value(bad), Err(ValueProblem::ControlCharacter), "{bad:?}");
        }
        for c in ('\u{80}'..='\u{9f}').chain(['\u{2028}', '\u{2029}']) {
            let v = format!("a{c}b");
            assert_eq!(check_value(v.as_bytes()), Err(ValueProblem::ControlCharacter), "{c:?}");
            assert_eq!(check_value(format!("{c}").as_bytes()), Err(ValueProblem::ControlCharacter), "{c:?} alone");
        }
        // Neighbours that are ordinary text.
        for ok in ["\u{a0}", "\u{a9}", "\u{7f}x", "\u{2027}", "\u{202a}", "\u{2020}", "\u{c2}\u{80}"] {
            let expected = if ok.contains('\u{7f}') || ok.contains('\u{80}') {
                Err(ValueProblem::ControlCharacter)
            } else {
                Ok(())
            };
            assert_eq!(check_value(ok.as_bytes()), expected, "{ok:?}");
        }
        assert_eq!(check_value(&[b'a'; 8192]), Ok(()));
        assert_eq!(check_value(&[b'a'; 8193]), Err(ValueProblem::TooLong));
    }

    #[test]
    fn patterns() {
        let p = Pattern::header("X-MaaS-*");
        assert!(p.matches("x-maas-subscription"));
        assert!(p.matches("x-maas-"));
        assert!(!p.matches("x-maa"));
        assert!(Pattern::new("llama-?b").matches("llama-8b"));
        assert!(!Pattern::new("llama-?b").matches("llama-70b"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("vllm/*/chat").matches("vllm/x/chat"));
        assert!(!Pattern::new("Llama-*").matches("llama-3"), "model patterns are case-sensitive");
        assert!(Pattern::new("gpt-4o").is_exact());
        assert!(!Pattern::new("gpt-4o").matches("gpt-4o-mini"));
    }

    #[test]
    fn header_patterns() {
        assert!(is_header_pattern("x-*"));
        assert!(is_header_pattern("x-??"));
        assert!(!is_header_pattern(""));
        assert!(!is_header_pattern("x y*"));
    }
}
