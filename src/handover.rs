//! What the downstream role hands to the upstream role for a request resolved to a fallback chain
//! (SPEC §8), and what each attempt leaves for the next. Both travel through Envoy filter state
//! (never a header: the header map is shared by every attempt and reaches the providers).
//!
//! Encoding: a version byte, then length-prefixed fields (u32 little-endian lengths). Anything
//! that does not decode exactly — another version, a short field, trailing bytes — is refused,
//! and the upstream role fails closed (`fallback_misconfigured`).

/// Filter-state key of the downstream role's [`Handover`].
pub const HANDOVER_KEY: &str = "llm_header_forward.handover";
/// Filter-state key of the header names the attempts so far have set ([`encode_names`]).
pub const ATTEMPTS_KEY: &str = "llm_header_forward.attempts";

const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handover {
    /// The chain's name.
    pub chain: String,
    /// The model the client asked for.
    pub model: String,
    /// The provider-data header (name, raw value), already judged against every provider.
    pub provider_data: Option<(String, Vec<u8>)>,
    /// The request's `content-length`: an attempt that rewrites the model changes it in the shared
    /// header map, so the next attempt (sent the original body) puts it back.
    pub content_length: Option<Vec<u8>>,
    /// Client headers the downstream role removed because some provider of the chain must not
    /// receive them (or sets them itself): each attempt restores those its provider accepts.
    pub withheld: Vec<(String, Vec<u8>)>,
    /// Every header name some provider of the chain sets for this request (none of them is left
    /// in the shared map by the downstream role): each attempt removes them all before setting
    /// its own, so nothing an earlier attempt set survives, even if its record was lost.
    pub managed: Vec<String>,
}

impl Handover {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        put(&mut out, self.chain.as_bytes());
        put(&mut out, self.model.as_bytes());
        match &self.provider_data {
            Some((name, value)) => {
                out.push(1);
                put(&mut out, name.as_bytes());
                put(&mut out, value);
            }
            None => out.push(0),
        }
        match &self.content_length {
            Some(value) => {
                out.push(1);
                put(&mut out, value);
            }
            None => out.push(0),
        }
        put_count(&mut out, self.withheld.len());
        for (name, value) in &self.withheld {
            put(&mut out, name.as_bytes());
            put(&mut out, value);
        }
        put_count(&mut out, self.managed.len());
        for name in &self.managed {
            put(&mut out, name.as_bytes());
        }
        out
    }

    /// `None` for anything but an exact encoding of this version.
    pub fn decode(bytes: &[u8]) -> Option<Handover> {
        let mut r = Reader(bytes);
        if r.byte()? != VERSION {
            return None;
        }
        let chain = r.text()?;
        let model = r.text()?;
        let provider_data = match r.byte()? {
            0 => None,
            1 => Some((r.text()?, r.field()?.to_vec())),
            _ => return None,
        };
        let content_length = match r.byte()? {
            0 => None,
            1 => Some(r.field()?.to_vec()),
            _ => return None,
        };
        let n = r.count()?;
        let mut withheld = Vec::new();
        for _ in 0..n {
            withheld.push((r.text()?, r.field()?.to_vec()));
        }
        let n = r.count()?;
        let mut managed = Vec::new();
        for _ in 0..n {
            managed.push(r.text()?);
        }
        r.0.is_empty().then_some(Handover { chain, model, provider_data, content_length, withheld, managed })
    }
}

/// Header names, for [`ATTEMPTS_KEY`].
pub fn encode_names(names: &[String]) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_count(&mut out, names.len());
    for n in names {
        put(&mut out, n.as_bytes());
    }
    out
}

pub fn decode_names(bytes: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let n = r.count()?;
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(r.text()?);
    }
    r.0.is_empty().then_some(names)
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    put_count(out, field.len());
    out.extend_from_slice(field);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn count(&mut self) -> Option<usize> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        usize::try_from(u32::from_le_bytes(*head)).ok()
    }
    fn field(&mut self) -> Option<&'a [u8]> {
        let n = self.count()?;
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.field()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_anything_else() {
        let h = Handover {
            chain: "llama-ha".into(),
            model: "llama-3-70b".into(),
            provider_data: Some(("x-llamastack-provider-data".into(), br#"{"k":"v"}"#.to_vec())),
            content_length: Some(b"123".to_vec()),
            withheld: vec![("authorization".into(), b"Bearer c".to_vec()), ("x-a".into(), vec![0xff, 0])],
            managed: vec!["authorization".into(), "x-gateway".into()],
        };
        let bytes = h.encode();
        assert_eq!(Handover::decode(&bytes), Some(h.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(Handover::decode(&bytes[..cut]), None, "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Handover::decode(&longer), None);
        let mut other_version = bytes;
        other_version[0] = 2;
        assert_eq!(Handover::decode(&other_version), None);
        let none = Handover { provider_data: None, content_length: None, withheld: vec![], managed: vec![], ..h };
        assert_eq!(Handover::decode(&none.encode()), Some(none));
        assert_eq!(Handover::decode(b"garbage"), None);
    }

    #[test]
    fn names_round_trip() {
        let names = vec!["authorization".to_string(), "x-maas-tier".to_string()];
        assert_eq!(decode_names(&encode_names(&names)), Some(names));
        assert_eq!(decode_names(&encode_names(&[])), Some(vec![]));
        assert_eq!(decode_names(b"\x01\xff\xff\xff\xff"), None);
    }
}
