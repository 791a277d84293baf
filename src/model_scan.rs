//! Finds the top-level `"model"` of a JSON request body in one streaming pass (SPEC §3, §7).
//!
//! The body arrives in chunks; each chunk is fed once and never kept. The scanner validates the
//! whole document (RFC 8259 grammar, UTF-8, escapes and surrogate pairs), so a body that a backend
//! would refuse is refused here too, and it decodes only two things: top-level keys (to recognise
//! `model`, also when written with escapes such as `"mod\u0065l"`) and the `model` value. A second
//! top-level `model` is an error: the filter and the backend could disagree on which one counts. So
//! is any other top-level key equal to `model` under ASCII case folding (`"Model"`, `"MODEL"`,
//! `"mod\u0065L"`): Go's `encoding/json` and ASP.NET Core match keys case-insensitively, so a
//! backend could serve that one instead.
//! Long strings (prompts, base64 images) are skipped 64 bytes at a time, and the escapes and UTF-8
//! sequences in them are validated without leaving that loop ([`skip_string`]).
//!
//! Memory is fixed whatever the body: the nesting stack is one bit per level for at most
//! [`MAX_DEPTH`] levels (a body nested deeper is refused when the level past the limit opens, before
//! the body ends), and the only buffer is the `model` value, at most [`MAX_MODEL_BYTES`].

/// Longest model name accepted: it is sent upstream as a header value.
pub const MAX_MODEL_BYTES: usize = crate::header_syntax::MAX_VALUE_BYTES;

/// Deepest nesting accepted (the top-level object is level 1). A paused request must cost the VM a
/// small fixed amount, so the stack has a fixed size; no real request comes close.
pub const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Not valid JSON; `offset` is the byte where that became certain.
    Malformed {
        offset: usize,
    },
    /// A container opened past [`MAX_DEPTH`]; `offset` is its opening bracket.
    TooDeep {
        offset: usize,
    },
    DuplicateModel,
    /// A top-level key that is `model` under ASCII case folding but not `model` itself.
    ModelCaseVariant,
    ModelNotString,
    ModelTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must come next (document start, after `:`, after `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayStart,
    /// After `{`: a key or `}`.
    ObjectStart,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    /// After the top-level value: only whitespace may follow.
    End,
    Str,
    Num(Num),
    Literal {
        word: &'static [u8],
        matched: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    fn is_complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

/// What the string being read is, which decides whether it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Skipped (only validated).
    Other,
    /// A key of the top-level object: decoded into `key`.
    TopKey,
    /// The value of the top-level `model`: decoded into `model`.
    Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After `\`.
    Backslash,
    /// Inside `\uXXXX`; `high` is a pending high surrogate.
    Hex {
        digits: u8,
        code: u32,
        high: Option<u32>,
    },
    /// After a high surrogate: `\u` of the low surrogate must follow.
    LowBackslash {
        high: u32,
    },
    LowU {
        high: u32,
    },
}

/// Length of `"model"`, the only key that is decoded in full.
const KEY_CAP: usize = 5;

#[derive(Debug, Clone)]
pub struct ModelScanner {
    state: State,
    /// Container kinds, one bit per level (1 = object).
    stack: [u64; MAX_DEPTH / 64],
    depth: usize,
    role: Role,
    escape: Escape,
    /// Continuation bytes still expected in a UTF-8 sequence, and the range of the next one.
    utf8_need: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    key: [u8; KEY_CAP],
    /// Decoded key length; `KEY_CAP + 1` means "longer than `model`".
    key_len: usize,
    /// The string being read is an object key (at any depth).
    string_is_key: bool,
    /// The key just read is the top-level `model`: its value is captured.
    value_is_model: bool,
    model_seen: bool,
    model: Vec<u8>,
    /// Byte offsets of the top-level `model` value: its opening quote, and just past its closing
    /// quote once that has been read.
    model_start: usize,
    model_end: Option<usize>,
    /// Bytes fed before the current chunk.
    consumed: usize,
}

impl Default for ModelScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelScanner {
    pub fn new() -> Self {
        ModelScanner {
            state: State::Value,
            stack: [0; MAX_DEPTH / 64],
            depth: 0,
            role: Role::Other,
            escape: Escape::None,
            utf8_need: 0,
            utf8_lo: 0x80,
            utf8_hi: 0xbf,
            key: [0; KEY_CAP],
            key_len: 0,
            string_is_key: false,
            value_is_model: false,
            model_seen: false,
            model: Vec::new(),
            model_start: 0,
            model_end: None,
            consumed: 0,
        }
    }

    /// Scans the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        let mut i = 0;
        while i < chunk.len() {
            i = match self.state {
                State::Str => self.string(chunk, i)?,
                State::Num(n) => self.number(n, chunk, i)?,
                State::Literal { word, matched } => self.literal(word, matched, chunk, i)?,
                _ => self.structural(chunk, i)?,
            };
        }
        self.consumed += chunk.len();
        Ok(())
    }

    /// Ends the document: `Ok(Some(model))`, `Ok(None)` when there is no top-level `model`
    /// (including a top-level value that is not an object), or the error.
    pub fn finish(mut self) -> Result<Option<String>, ScanError> {
        if let State::Num(n) = self.state
            && n.is_complete()
            && self.depth == 0
        {
            self.state = State::End;
        }
        if self.state != State::End {
            return Err(ScanError::Malformed { offset: self.consumed });
        }
        if !self.model_seen {
            return Ok(None);
        }
        String::from_utf8(self.model).map(Some).map_err(|_| ScanError::Malformed { offset: self.consumed })
    }

    /// Where the top-level `model` value (a string, quotes included) lies in the bytes fed so far:
    /// `Some((start, end))` once its closing quote has been read.
    pub fn model_span(&self) -> Option<(usize, usize)> {
        self.model_end.map(|end| (self.model_start, end))
    }

    fn malformed(&self, i: usize) -> ScanError {
        ScanError::Malformed { offset: self.consumed + i }
    }

    /// Opens a container at `s[i]`; refused past [`MAX_DEPTH`].
    fn push(&mut self, object: bool, i: usize) -> Result<(), ScanError> {
        let Some(slot) = self.stack.get_mut(self.depth / 64) else {
            return Err(ScanError::TooDeep { offset: self.consumed + i });
        };
        let bit = 1u64 << (self.depth % 64);
        if object {
            *slot |= bit;
        } else {
            *slot &= !bit;
        }
        self.depth += 1;
        Ok(())
    }

    /// Whether the innermost open container is an object. Only called with `depth > 0`.
    fn in_object(&self) -> bool {
        let top = self.depth.wrapping_sub(1);
        self.stack.get(top / 64).is_some_and(|bits| bits & (1 << (top % 64)) != 0)
    }

    fn value_done(&mut self) {
        self.state = if self.depth == 0 { State::End } else { State::AfterValue };
    }

    /// Handles structural bytes until the state becomes a string, number or literal.
    fn structural(&mut self, s: &[u8], mut i: usize) -> Result<usize, ScanError> {
        while let Some(&b) = s.get(i) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
                continue;
            }
            match self.state {
                State::Value | State::ArrayStart => {
                    if b == b']' && self.state == State::ArrayStart {
                        self.depth -= 1;
                        self.value_done();
                        i += 1;
                        continue;
                    }
                    if self.value_is_model {
                        self.value_is_model = false;
                        if b != b'"' {
                            return Err(match b {
                                b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => ScanError::ModelNotString,
                                _ => self.malformed(i),
                            });
                        }
                        self.start_string(Role::Model);
                        self.model_start = self.consumed + i;
                        return Ok(i + 1);
                    }
                    match b {
                        b'{' => {
                            self.push(true, i)?;
                            self.state = State::ObjectStart;
                        }
                        b'[' => {
                            self.push(false, i)?;
                            self.state = State::ArrayStart;
                        }
                        b'"' => {
                            self.start_string(Role::Other);
                            return Ok(i + 1);
                        }
                        b'-' => {
                            self.state = State::Num(Num::Minus);
                            return Ok(i + 1);
                        }
                        b'0' => {
                            self.state = State::Num(Num::Zero);
                            return Ok(i + 1);
                        }
                        b'1'..=b'9' => {
                            self.state = State::Num(Num::Int);
                            return Ok(i + 1);
                        }
                        b't' | b'f' | b'n' => {
                            let word: &'static [u8] = match b {
                                b't' => b"true",
                                b'f' => b"false",
                                _ => b"null",
                            };
                            self.state = State::Literal { word, matched: 1 };
                            return Ok(i + 1);
                        }
                        _ => return Err(self.malformed(i)),
                    }
                }
                State::ObjectStart | State::Key => {
                    if b == b'"' {
                        let role = if self.depth == 1 { Role::TopKey } else { Role::Other };
                        self.key_len = 0;
                        self.string_is_key = true;
                        self.start_string(role);
                        return Ok(i + 1);
                    }
                    if b == b'}' && self.state == State::ObjectStart {
                        self.depth -= 1;
                        self.value_done();
                    } else {
                        return Err(self.malformed(i));
                    }
                }
                State::Colon => {
                    if b != b':' {
                        return Err(self.malformed(i));
                    }
                    self.state = State::Value;
                }
                State::AfterValue => {
                    let object = self.in_object();
                    match (b, object) {
                        (b',', true) => self.state = State::Key,
                        (b',', false) => self.state = State::Value,
                        (b'}', true) | (b']', false) => {
                            self.depth -= 1;
                            self.value_done();
                        }
                        _ => return Err(self.malformed(i)),
                    }
                }
                State::End => return Err(self.malformed(i)),
                State::Str | State::Num(_) | State::Literal { .. } => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn start_string(&mut self, role: Role) {
        self.role = role;
        self.state = State::Str;
    }

    fn string(&mut self, s: &[u8], mut i: usize) -> Result<usize, ScanError> {
        // Skipped strings take the fast path: whole runs of plain bytes, escapes and UTF-8
        // sequences at a time. Decoded strings, and sequences split across chunks, go byte by byte.
        if self.role == Role::Other && self.utf8_need == 0 && self.escape == Escape::None {
            match skip_string(s, i) {
                Skip::Quote(q) => {
                    self.string_done()?;
                    return Ok(q + 1);
                }
                Skip::End => return Ok(s.len()),
                Skip::Malformed(at) => return Err(self.malformed(at)),
                Skip::Slow(at) => i = at,
            }
        }
        while let Some(&b) = s.get(i) {
            i += 1;
            let model = self.role == Role::Model;
            if self.string_byte(b).map_err(|e| e.unwrap_or(self.malformed(i - 1)))? {
                if model {
                    self.model_end = Some(self.consumed + i);
                }
                return Ok(i);
            }
            if self.role == Role::Other && self.utf8_need == 0 && self.escape == Escape::None {
                return Ok(i); // back to the fast path
            }
        }
        Ok(i)
    }

    /// One byte of a string, decoding it when the string is captured. `Ok(true)` when the string
    /// ended; `Err(None)` for a malformed byte, `Err(Some(_))` for other errors.
    fn string_byte(&mut self, b: u8) -> Result<bool, Option<ScanError>> {
        if self.utf8_need > 0 {
            if b < self.utf8_lo || b > self.utf8_hi {
                return Err(None);
            }
            self.utf8_need -= 1;
            self.utf8_lo = 0x80;
            self.utf8_hi = 0xbf;
            self.decoded(b).map_err(Some)?;
            return Ok(false);
        }
        if self.escape != Escape::None {
            self.escaped(b).map_err(|()| None)?;
            return Ok(false);
        }
        match b {
            b'"' => {
                self.string_done().map_err(Some)?;
                Ok(true)
            }
            b'\\' => {
                self.escape = Escape::Backslash;
                Ok(false)
            }
            0..=0x1f => Err(None),
            0x80..=0xff => {
                let (need, lo, hi) = utf8_lead(b).ok_or(None)?;
                self.utf8_need = need;
                self.utf8_lo = lo;
                self.utf8_hi = hi;
                self.decoded(b).map_err(Some)?;
                Ok(false)
            }
            _ => {
                self.decoded(b).map_err(Some)?;
                Ok(false)
            }
        }
    }

    /// One byte of an escape sequence. `Err(())` means the escape is invalid.
    fn escaped(&mut self, b: u8) -> Result<(), ()> {
        match self.escape {
            Escape::None => Ok(()),
            Escape::Backslash => {
                let byte = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.escape = Escape::Hex { digits: 0, code: 0, high: None };
                        return Ok(());
                    }
                    _ => return Err(()),
                };
                self.escape = Escape::None;
                self.decoded(byte).map_err(|_| ())
            }
            Escape::LowBackslash { high } if b == b'\\' => {
                self.escape = Escape::LowU { high };
                Ok(())
            }
            Escape::LowU { high } if b == b'u' => {
                self.escape = Escape::Hex { digits: 0, code: 0, high: Some(high) };
                Ok(())
            }
            Escape::LowBackslash { .. } | Escape::LowU { .. } => Err(()),
            Escape::Hex { digits, code, high } => {
                let digit = (b as char).to_digit(16).ok_or(())?;
                let code = code << 4 | digit;
                if digits < 3 {
                    self.escape = Escape::Hex { digits: digits + 1, code, high };
                    return Ok(());
                }
                let scalar = match (high, code) {
                    (None, 0xd800..=0xdbff) => {
                        self.escape = Escape::LowBackslash { high: code };
                        return Ok(());
                    }
                    (None, 0xdc00..=0xdfff) => return Err(()),
                    (None, c) => c,
                    (Some(h), 0xdc00..=0xdfff) => 0x10000 + ((h - 0xd800) << 10) + (code - 0xdc00),
                    (Some(_), _) => return Err(()),
                };
                self.escape = Escape::None;
                let ch = char::from_u32(scalar).ok_or(())?;
                let mut buf = [0u8; 4];
                for &byte in ch.encode_utf8(&mut buf).as_bytes() {
                    self.decoded(byte).map_err(|_| ())?;
                }
                Ok(())
            }
        }
    }

    /// One decoded byte of the current string.
    fn decoded(&mut self, b: u8) -> Result<(), ScanError> {
        match self.role {
            Role::Other => {}
            Role::TopKey => {
                if let Some(slot) = self.key.get_mut(self.key_len) {
                    *slot = b;
                }
                self.key_len = (self.key_len + 1).min(KEY_CAP + 1);
            }
            Role::Model => {
                if self.model.len() >= MAX_MODEL_BYTES {
                    return Err(ScanError::ModelTooLong);
                }
                self.model.push(b);
            }
        }
        Ok(())
    }

    fn string_done(&mut self) -> Result<(), ScanError> {
        let was_key = self.string_is_key;
        let top_key = self.role == Role::TopKey;
        self.role = Role::Other;
        self.string_is_key = false;
        if !was_key {
            self.value_done();
            return Ok(());
        }
        self.state = State::Colon;
        if top_key && self.key_len == KEY_CAP && self.key.eq_ignore_ascii_case(b"model") {
            if &self.key != b"model" {
                return Err(ScanError::ModelCaseVariant);
            }
            if self.model_seen {
                return Err(ScanError::DuplicateModel);
            }
            self.model_seen = true;
            self.value_is_model = true;
        }
        Ok(())
    }

    fn number(&mut self, n: Num, s: &[u8], mut i: usize) -> Result<usize, ScanError> {
        let mut n = n;
        while let Some(&b) = s.get(i) {
            let next = match (n, b) {
                (Num::Minus, b'0') => Num::Zero,
                (Num::Minus, b'1'..=b'9') => Num::Int,
                (Num::Int, b'0'..=b'9') => Num::Int,
                (Num::Zero | Num::Int, b'.') => Num::Dot,
                (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
                (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
                (Num::Exp, b'+' | b'-') => Num::ExpSign,
                (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Num::ExpDigits,
                _ if n.is_complete() => {
                    // The number ended; `b` belongs to whatever follows.
                    self.value_done();
                    return Ok(i);
                }
                _ => return Err(self.malformed(i)),
            };
            n = next;
            i += 1;
        }
        self.state = State::Num(n);
        Ok(i)
    }

    fn literal(&mut self, word: &'static [u8], matched: u8, s: &[u8], mut i: usize) -> Result<usize, ScanError> {
        let mut matched = matched as usize;
        while matched < word.len() {
            let Some(&b) = s.get(i) else {
                self.state = State::Literal { word, matched: matched as u8 };
                return Ok(i);
            };
            if word.get(matched) != Some(&b) {
                return Err(self.malformed(i));
            }
            matched += 1;
            i += 1;
        }
        self.value_done();
        Ok(i)
    }
}

/// For a UTF-8 lead byte: how many continuation bytes follow and the range of the first one
/// (which rules out overlong forms, surrogates and code points past U+10FFFF).
fn utf8_lead(b: u8) -> Option<(u8, u8, u8)> {
    Some(match b {
        0xc2..=0xdf => (1, 0x80, 0xbf),
        0xe0 => (2, 0xa0, 0xbf),
        0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
        0xed => (2, 0x80, 0x9f),
        0xf0 => (3, 0x90, 0xbf),
        0xf1..=0xf3 => (3, 0x80, 0xbf),
        0xf4 => (3, 0x80, 0x8f),
        _ => return None,
    })
}

/// Length of the valid escape starting at `s[i] == '\\'` when it is whole in this chunk: a
/// one-character escape, `\uXXXX` outside the surrogates, or a `\uD8xx\uDCxx` pair. `None`
/// leaves anything else (invalid, or split across chunks) to the byte-by-byte path.
fn whole_escape(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => match hex4(s.get(i + 2..i + 6)?)? {
            0xd800..=0xdbff => {
                if s.get(i + 6..i + 8)? != b"\\u" {
                    return None;
                }
                matches!(hex4(s.get(i + 8..i + 12)?)?, 0xdc00..=0xdfff).then_some(12)
            }
            0xdc00..=0xdfff => None,
            _ => Some(6),
        },
        _ => None,
    }
}

fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| Some(acc << 4 | (d as char).to_digit(16)?))
}

/// Where [`skip_string`] stopped in a skipped string (one that is neither a top-level key nor the
/// model, so nothing in it is decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The closing quote is at this index.
    Quote(usize),
    /// Every byte of the chunk was valid string content.
    End,
    /// Invalid at this index: a control character, or a UTF-8 sequence (the offset is the one the
    /// byte-by-byte path of earlier versions reported: the lead byte for a bad lead, the byte after
    /// it for a bad continuation).
    Malformed(usize),
    /// An escape that is invalid or not whole in this chunk, or a UTF-8 sequence that continues in
    /// the next chunk, starts here: the byte-by-byte path takes over.
    Slow(usize),
}

/// Skips string content from `s[i]`, 64 bytes per step: `block` marks the bytes of a 64-byte
/// window that may matter (`"`, `\`, control characters and every byte >= 0x80; a false positive
/// only costs a look), and each marked byte is handled here: an escape or a UTF-8 sequence whole in
/// the chunk is validated and jumped over, and the search goes on in the same mask. The last
/// window of a chunk is padded with plain bytes, which are never marked.
#[inline(always)]
fn skip_string_with(s: &[u8], mut i: usize, block: impl Fn(&[u8; 64]) -> u64) -> Skip {
    loop {
        let base = i;
        let mut mask = match s.get(base..base + 64).and_then(|w| <&[u8; 64]>::try_from(w).ok()) {
            Some(window) => block(window),
            None => {
                let rest = s.get(base..).unwrap_or_default();
                if rest.is_empty() {
                    return Skip::End;
                }
                let mut padded = [b' '; 64];
                if let Some(head) = padded.get_mut(..rest.len()) {
                    head.copy_from_slice(rest);
                }
                block(&padded)
            }
        };
        while mask != 0 {
            let at = base + mask.trailing_zeros() as usize;
            let Some(&b) = s.get(at) else { return Skip::End };
            i = match b {
                b'"' => return Skip::Quote(at),
                b'\\' => match s.get(at + 1) {
                    // The common escapes inline; `\u` and anything odd through `whole_escape`.
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at + 2,
                    _ => match whole_escape(s, at) {
                        Some(len) => at + len,
                        None => return Skip::Slow(at),
                    },
                },
                0x80..=0xff => {
                    // A run of non-ASCII text (CJK, emoji) is validated sequence by sequence here.
                    let mut at = at;
                    loop {
                        let lead = s.get(at).copied().unwrap_or_default();
                        let Some((need, lo, hi)) = utf8_lead(lead) else { return Skip::Malformed(at) };
                        let Some(tail) = s.get(at + 1..at + 1 + need as usize) else { return Skip::Slow(at) };
                        let ok = tail
                            .iter()
                            .enumerate()
                            .all(|(k, &c)| if k == 0 { (lo..=hi).contains(&c) } else { (0x80..=0xbf).contains(&c) });
                        if !ok {
                            return Skip::Malformed(at + 1);
                        }
                        at += 1 + need as usize;
                        if s.get(at).is_none_or(|&b| b < 0x80) {
                            break at;
                        }
                    }
                }
                0..=0x1f => return Skip::Malformed(at),
                _ => at + 1,
            };
            let done = i - base;
            if done >= 64 {
                break;
            }
            mask &= u64::MAX << done;
        }
        // Nothing more in this window: the next one starts where it ended, or after the sequence
        // that crossed its end.
        i = i.max(base + 64);
    }
}

/// The portable marking of a 64-byte window, one byte at a time.
#[cfg_attr(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128")), allow(dead_code))]
fn block_scalar(w: &[u8; 64]) -> u64 {
    w.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        .fold(0, |mask, (k, _)| mask | 1 << k)
}

/// x86-64 baseline (SSE2, no detection needed): four 16-byte compares. A signed compare with 0x20
/// marks control characters and every byte >= 0x80 at once.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_sse2(w: &[u8; 64]) -> u64 {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let p = w.as_ptr() as *const __m128i;
    let part = |k: usize| -> u64 {
        // SAFETY: `w` is 64 readable bytes, so `p.add(k)` for k < 4 is 16 of them; `loadu` needs no
        // alignment; SSE2 is enabled on every x86-64 target.
        unsafe {
            let v = _mm_loadu_si128(p.add(k));
            let hits = _mm_or_si128(
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
                ),
                _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
            );
            _mm_movemask_epi8(hits) as u16 as u64
        }
    };
    part(0) | part(1) << 16 | part(2) << 32 | part(3) << 48
}

/// The same with AVX2: two 32-byte compares. Not inlined: inlined, LLVM turned the mask into
/// 64 single-bit operations (5x slower).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
fn block_avx2(w: &[u8; 64]) -> u64 {
    use core::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    let p = w.as_ptr() as *const __m256i;
    let part = |k: usize| -> u64 {
        // SAFETY: `w` is 64 readable bytes, so `p.add(k)` for k < 2 is 32 of them; `loadu` needs no
        // alignment; AVX2 is enabled for this function.
        unsafe {
            let v = _mm256_loadu_si256(p.add(k));
            let hits = _mm256_or_si256(
                _mm256_or_si256(
                    _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8)),
                    _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8)),
                ),
                _mm256_cmpgt_epi8(_mm256_set1_epi8(0x20), v),
            );
            _mm256_movemask_epi8(hits) as u32 as u64
        }
    };
    part(0) | part(1) << 32
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn skip_string_avx2(s: &[u8], i: usize) -> Skip {
    skip_string_with(s, i, |w| block_avx2(w))
}

/// The native build on x86-64: AVX2 where the CPU has it (detected at run time; the result is
/// cached by the standard library), SSE2 otherwise.
#[cfg(target_arch = "x86_64")]
#[inline]
fn skip_string(s: &[u8], i: usize) -> Skip {
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available on this CPU (checked just above).
        unsafe { skip_string_avx2(s, i) }
    } else {
        skip_string_with(s, i, block_sse2)
    }
}

/// The wasm build (V8 runs wasm SIMD): four 16-byte compares.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline]
fn skip_string(s: &[u8], i: usize) -> Skip {
    use core::arch::wasm32::{i8x16_bitmask, i8x16_lt, i8x16_splat, u8x16_eq, u8x16_splat, v128, v128_load, v128_or};
    skip_string_with(s, i, |w| {
        let p = w.as_ptr() as *const v128;
        let part = |k: usize| -> u64 {
            // SAFETY: `w` is 64 readable bytes, so `p.add(k)` for k < 4 is 16 of them; wasm loads
            // need no alignment.
            let v = unsafe { v128_load(p.add(k)) };
            let hits = v128_or(
                v128_or(u8x16_eq(v, u8x16_splat(b'"')), u8x16_eq(v, u8x16_splat(b'\\'))),
                i8x16_lt(v, i8x16_splat(0x20)),
            );
            i8x16_bitmask(hits) as u64
        };
        part(0) | part(1) << 16 | part(2) << 32 | part(3) << 48
    })
}

#[cfg(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))))]
#[inline]
fn skip_string(s: &[u8], i: usize) -> Skip {
    skip_string_with(s, i, block_scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_value_span_is_reported_whatever_the_chunking() {
        let doc = br#"{"messages":[{"model":"x"}], "mod\u0065l" : "ll\u0061ma-3" ,"n":1}"#;
        let want_start = doc.windows(4).position(|w| w == br#""ll\"#).unwrap_or(0);
        let want_end = want_start + br#""ll\u0061ma-3""#.len();
        for cut in 0..=doc.len() {
            let mut s = ModelScanner::new();
            s.feed(&doc[..cut]).expect("valid prefix");
            s.feed(&doc[cut..]).expect("valid rest");
            assert_eq!(s.model_span(), Some((want_start, want_end)), "cut at {cut}");
            assert_eq!(s.finish(), Ok(Some("llama-3".into())));
        }
        let mut s = ModelScanner::new();
        s.feed(br#"{"a":1}"#).expect("valid");
        assert_eq!(s.model_span(), None);
    }

    fn scan_chunks(chunks: &[&[u8]]) -> Result<Option<String>, ScanError> {
        let mut s = ModelScanner::new();
        for c in chunks {
            s.feed(c)?;
        }
        s.finish()
    }

    /// Scans `body` whole and split at every byte boundary (and byte by byte); all must agree.
    fn scan(body: &str) -> Result<Option<String>, ScanError> {
        let b = body.as_bytes();
        let whole = scan_chunks(&[b]);
        for cut in 0..=b.len() {
            let (x, y) = b.split_at(cut);
            let r = scan_chunks(&[x, y]);
            assert_eq!(r.is_ok(), whole.is_ok(), "split at {cut} of {body:?}");
            if let (Ok(a), Ok(w)) = (&r, &whole) {
                assert_eq!(a, w, "split at {cut} of {body:?}");
            }
        }
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(scan_chunks(&bytes).ok(), whole.clone().ok(), "byte by byte: {body:?}");
        whole
    }

    /// What serde_json says: `None` when it rejects the document.
    fn serde_model(body: &str) -> Option<Option<String>> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(v.get("model").and_then(|m| m.as_str()).map(str::to_string))
    }

    #[test]
    fn finds_the_model() {
        assert_eq!(
            scan(r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}]}"#),
            Ok(Some("llama-3-8b".into()))
        );
        assert_eq!(scan(r#" { "messages" : [ ] , "model" : "gpt-4o" } "#), Ok(Some("gpt-4o".into())));
        assert_eq!(scan(r#"{"messages":[{"model":"nested"}],"stream":true}"#), Ok(None));
        assert_eq!(scan(r#"{}"#), Ok(None));
        assert_eq!(scan(r#"[{"model":"x"}]"#), Ok(None), "top level is not an object");
        assert_eq!(scan(r#""model""#), Ok(None));
        assert_eq!(scan("12"), Ok(None));
    }

    #[test]
    fn decodes_escapes_in_keys_and_model() {
        assert_eq!(scan(r#"{"mod\u0065l":"a\/b\u00e9\ud83d\ude00"}"#), Ok(Some("a/b\u{e9}\u{1f600}".into())));
        assert_eq!(scan(r#"{"model":"tab\there"}"#), Ok(Some("tab\there".into())));
        assert_eq!(scan(r#"{"models":"x","mode":"y","modelx":1}"#), Ok(None));
        assert_eq!(scan("{\"model\":\"caf\u{e9}-\u{4e2d}\"}"), Ok(Some("caf\u{e9}-\u{4e2d}".into())));
    }

    #[test]
    fn duplicate_model_is_refused_even_when_escaped() {
        assert_eq!(scan(r#"{"model":"a","model":"b"}"#), Err(ScanError::DuplicateModel));
        assert_eq!(scan(r#"{"model":"a","x":{"model":"ok"},"m\u006fdel":"b"}"#), Err(ScanError::DuplicateModel));
        assert_eq!(scan(r#"{"model":1,"model":"b"}"#), Err(ScanError::ModelNotString));
    }

    #[test]
    fn case_variants_of_model_are_refused_at_the_top_level_only() {
        for body in [
            r#"{"model":"llama-3-8b","Model":"gpt-4o"}"#,
            r#"{"model":"llama-3-8b","MODEL":"gpt-4o"}"#,
            r#"{"model":"llama-3-8b","mod\u0065L":"gpt-4o"}"#,
            r#"{"model":"llama-3-8b","\u004dodel":"gpt-4o"}"#,
            r#"{"Model":"gpt-4o","model":"llama-3-8b"}"#,
            r#"{"mOdEl":"gpt-4o"}"#,
            r#"{"MODEL":1,"model":"x"}"#,
            r#"{"x":[],"modeL":{"a":1},"model":"x"}"#,
        ] {
            assert_eq!(scan(body), Err(ScanError::ModelCaseVariant), "{body}");
        }
        for body in [
            r#"{"model":"a","x":{"Model":"b","MODEL":"c"}}"#,
            r#"{"model":"a","Models":"b","MODE":"c","MODEL_":"d","m\u00f6del":"e"}"#,
            r#"[{"Model":"b"}]"#,
        ] {
            assert_eq!(scan(body).map(|m| m.is_some()), Ok(body.starts_with('{')), "{body}");
        }
    }

    #[test]
    fn model_must_be_a_string() {
        for body in
            [r#"{"model":1}"#, r#"{"model":null}"#, r#"{"model":["a"]}"#, r#"{"model":{"a":1}}"#, r#"{"model":true}"#]
        {
            assert_eq!(scan(body), Err(ScanError::ModelNotString), "{body}");
        }
    }

    #[test]
    fn model_length_is_bounded() {
        let ok = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_BYTES));
        assert_eq!(scan_chunks(&[ok.as_bytes()]).map(|m| m.map(|m| m.len())), Ok(Some(MAX_MODEL_BYTES)));
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_BYTES + 1));
        assert_eq!(scan_chunks(&[long.as_bytes()]), Err(ScanError::ModelTooLong));
    }

    const MALFORMED: &[&str] = &[
        "",
        " ",
        "{",
        "}",
        "{]",
        "[}",
        "{\"model\":\"a\"",
        "{\"model\" \"a\"}",
        "{\"model\":}",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{,}",
        "{\"a\"}",
        "{1:2}",
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "-01",
        "tru",
        "truex",
        "nul",
        "NaN",
        "Infinity",
        "{\"a\":1}x",
        "{} {}",
        "\"abc",
        "\"a\nb\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\\ud800\"",
        "\"\\ud800x\"",
        "\"\\ud800\\u0041\"",
        "\"\\udc00\"",
        "\u{feff}{}",
        "{\"a\":[1 2]}",
        "[1]]",
        "{\"a\":1}}",
        "'a'",
        "{\"a\":'b'}",
        "[\"\t\"]",
    ];

    #[test]
    fn malformed_documents_are_refused_like_serde_json_does() {
        for body in MALFORMED {
            assert!(matches!(scan(body), Err(ScanError::Malformed { .. })), "{body:?} accepted");
            assert_eq!(serde_model(body), None, "serde_json accepts {body:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_refused() {
        for bad in [
            &b"\"\xff\""[..],
            b"\"\xc0\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xe2\x82\"",
            b"\"\xf4\x90\x80\x80\"",
            b"{\"model\":\"\xc3\"}",
            b"\xc3\xa9",
        ] {
            let mut s = ModelScanner::new();
            let r = s.feed(bad).and_then(|()| s.finish());
            assert!(matches!(r, Err(ScanError::Malformed { .. })), "{bad:?}");
            assert!(serde_json::from_slice::<serde_json::Value>(bad).is_err());
        }
    }

    #[test]
    fn valid_documents_agree_with_serde_json() {
        let cases = [
            r#"{"model":"a","n":-0.5e+10,"b":[true,false,null,{},[],""],"s":"\\\"\/\b\f\n\r\t"}"#,
            r#"{"x":{"model":"no"},"model":"yes"}"#,
            "{\"model\":\"x\",\"content\":\"\u{1f600} long text \u{4e2d}\u{6587} with \\\"quotes\\\"\"}",
            r#"{"a":0,"b":1E3,"c":-0,"d":12.25e-3,"model":"m"}"#,
            "[0]",
            "0",
            "-1.5E-7",
            "true",
            "null",
            "\"\"",
            "{\"\":\"\"}",
            "\r\n\t {\"model\" : \"spaced\" }\r\n",
        ];
        for body in cases {
            assert_eq!(scan(body).ok(), serde_model(body), "{body}");
        }
    }

    #[test]
    fn nesting_is_bounded_at_max_depth() {
        // The top-level object is level 1: 255 arrays inside it make 256 levels.
        let ok = format!(r#"{{"model":"deep","x":{}1{}}}"#, "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert_eq!(scan(&ok), Ok(Some("deep".into())));
        let objects = format!("{}{{}}{}", "{\"a\":".repeat(MAX_DEPTH - 1), "}".repeat(MAX_DEPTH - 1));
        assert_eq!(scan(&objects), Ok(None));
        // The 257th level is refused as soon as it opens, whatever follows (here: nothing yet).
        let prefix = r#"{"model":"deep","x":"#;
        let open = format!("{prefix}{}", "[".repeat(MAX_DEPTH));
        let mut s = ModelScanner::new();
        assert_eq!(s.feed(open.as_bytes()), Err(ScanError::TooDeep { offset: open.len() - 1 }));
        let mut s = ModelScanner::new();
        assert_eq!(s.feed(&open.as_bytes()[..open.len() - 1]), Ok(()), "256 levels open, body unfinished");
        let mixed = format!("{}{}", "{\"a\":[".repeat(200), "]}".repeat(200));
        assert!(matches!(scan_chunks(&[mixed.as_bytes()]), Err(ScanError::TooDeep { .. })));
        // Byte by byte, and split anywhere: the same answer.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let bytes: Vec<&[u8]> = deep.as_bytes().chunks(1).collect();
        assert_eq!(scan_chunks(&bytes), Err(ScanError::TooDeep { offset: MAX_DEPTH }));
        assert_eq!(scan_chunks(&[deep.as_bytes()]), Err(ScanError::TooDeep { offset: MAX_DEPTH }));
    }

    #[test]
    fn the_scanner_has_a_fixed_size() {
        // Nothing in the scanner grows with the body except `model` (at most MAX_MODEL_BYTES,
        // allocated only when the client sends that many bytes of model name).
        assert!(std::mem::size_of::<ModelScanner>() <= 256, "{}", std::mem::size_of::<ModelScanner>());
        let mut s = ModelScanner::new();
        let body = format!("{{\"model\":\"m\",\"x\":[{}", "{\"k\":[\"v\"]},".repeat(10_000));
        s.feed(body.as_bytes()).expect("valid so far");
        assert!(s.model.capacity() <= 8, "{}", s.model.capacity());
    }

    #[test]
    fn long_strings() {
        let text = "lorem ipsum \u{e9}\u{4e2d} \\\"q\\\" ".repeat(50_000);
        let body = format!(r#"{{"messages":[{{"role":"user","content":"{text}"}}],"model":"after-text"}}"#);
        for size in [1, 7, 8, 9, 4096, 65536] {
            let chunks: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
            assert_eq!(scan_chunks(&chunks), Ok(Some("after-text".into())), "chunk size {size}");
        }
    }

    #[test]
    fn control_character_found_at_every_position_of_the_fast_path() {
        for pos in 0..20 {
            let mut body = format!(r#"{{"c":"{}"}}"#, "a".repeat(20)).into_bytes();
            body[6 + pos] = 0x01;
            let mut s = ModelScanner::new();
            assert_eq!(s.feed(&body), Err(ScanError::Malformed { offset: 6 + pos }));
        }
    }

    /// What the string fast path stops at, valid and not: escapes (whole, invalid, cut short),
    /// UTF-8 (valid, stray continuation, bad lead, bad or missing continuation, surrogate, past
    /// U+10FFFF), control characters and the closing quote.
    const SPECIALS: &[&[u8]] = &[
        b"\\n",
        b"\\\"",
        b"\\\\",
        b"\\/",
        b"\\u00e9",
        b"\\ud83d\\ude00",
        b"\\x",
        b"\\u12",
        b"\\udc00",
        b"\\ud83dx",
        "\u{e9}".as_bytes(),
        "\u{2019}".as_bytes(),
        "\u{1f600}".as_bytes(),
        "\u{e9}\u{4e2d}\u{1f600}".as_bytes(),
        b"\x01",
        b"\x1f",
        b"\x80",
        b"\xc3",
        b"\xc3(",
        b"\xe2\x80",
        b"\xe2\x80(",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xc0\xaf",
        b"\xff",
        b"\"",
        b"\x7f~ ",
    ];

    /// `{"content":"<before x 'a'><special>tail","model":"m"}`: the special lands in every lane of
    /// the first two 64-byte windows and across their boundary.
    fn body_with_special(before: usize, special: &[u8]) -> Vec<u8> {
        let mut body = br#"{"content":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', before));
        body.extend_from_slice(special);
        body.extend_from_slice(br#"tail","model":"m"}"#);
        body
    }

    #[test]
    fn a_special_byte_in_every_lane_agrees_with_serde_json_whatever_the_chunking() {
        for special in SPECIALS {
            for before in 0..140 {
                let body = body_with_special(before, special);
                let whole = scan_chunks(&[&body]);
                let valid = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
                assert_eq!(whole.is_ok(), valid, "{:?}: {whole:?}", String::from_utf8_lossy(&body));
                if valid {
                    assert_eq!(whole, Ok(Some("m".into())));
                }
                // Cut just before, inside and just after the special (12: the opening bytes).
                let at = 12 + before;
                for cut in at.saturating_sub(2)..=(at + special.len() + 2).min(body.len()) {
                    let (x, y) = body.split_at(cut);
                    let r = scan_chunks(&[x, y]);
                    assert_eq!(r.is_ok(), valid, "cut at {cut}: {:?}", String::from_utf8_lossy(&body));
                    if valid {
                        assert_eq!(r, whole);
                    }
                }
                let bytes: Vec<&[u8]> = body.chunks(1).collect();
                assert_eq!(scan_chunks(&bytes).is_ok(), valid, "byte by byte");
            }
        }
    }

    #[test]
    fn an_invalid_byte_is_reported_where_it_was_before() {
        // Control characters and bad leads at the byte itself; a bad continuation at the byte after
        // the lead (what the filter's `invalid_json` message has always said).
        for before in 0..140 {
            let at = 12 + before;
            for (special, offset) in [(&b"\x01"[..], at), (b"\x80", at), (b"\xff", at), (b"\xe2\x80(", at + 1)] {
                let body = body_with_special(before, special);
                let mut s = ModelScanner::new();
                assert_eq!(s.feed(&body), Err(ScanError::Malformed { offset }), "{special:?} after {before}");
            }
        }
    }

    /// Each way of marking a 64-byte window (the one this CPU uses, and the others) finds the same
    /// place in every body above, from every starting point inside the string.
    #[test]
    fn every_window_marking_stops_at_the_same_place() {
        for special in SPECIALS {
            for before in 0..140 {
                let body = body_with_special(before, special);
                for start in 12..body.len().min(12 + before + 8) {
                    let want = skip_string_with(&body, start, block_scalar);
                    assert_eq!(skip_string(&body, start), want, "{special:?} after {before} from {start}");
                    #[cfg(target_arch = "x86_64")]
                    {
                        assert_eq!(skip_string_with(&body, start, block_sse2), want);
                        if std::is_x86_feature_detected!("avx2") {
                            // SAFETY: AVX2 was detected just above.
                            assert_eq!(unsafe { skip_string_avx2(&body, start) }, want);
                        }
                    }
                }
            }
        }
    }

    /// Every byte value in every lane of a 64-byte window, on plain backgrounds: AVX2, SSE2 and the
    /// portable marking mark exactly `"`, `\`, the control characters and the bytes >= 0x80 (a
    /// signed/unsigned compare mix-up would mark DEL or miss 0xff). The wasm-SIMD marking runs only
    /// in the `.wasm`: `test_rejections.py::test_specials_at_the_scanners_window_edges_…` covers it.
    #[test]
    fn every_window_marking_marks_exactly_the_special_bytes() {
        let special = |b: u8| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b);
        for background in [b' ', b'a', b'~', 0x7f] {
            assert!(!special(background));
            for lane in 0..64 {
                for byte in 0..=255u8 {
                    let mut w = [background; 64];
                    w[lane] = byte;
                    let want = if special(byte) { 1u64 << lane } else { 0 };
                    assert_eq!(block_scalar(&w), want, "scalar: {byte:#x} in lane {lane}");
                    #[cfg(target_arch = "x86_64")]
                    {
                        assert_eq!(block_sse2(&w), want, "sse2: {byte:#x} in lane {lane}");
                        if std::is_x86_feature_detected!("avx2") {
                            // SAFETY: AVX2 was detected just above.
                            assert_eq!(unsafe { block_avx2(&w) }, want, "avx2: {byte:#x} in lane {lane}");
                        }
                    }
                }
            }
        }
    }
}
