//! Property tests (stable Rust, part of `make test`): generated hostile requests never break a
//! guarantee, and the streaming scanner agrees with serde_json on every document and every
//! chunking. `make fuzz` runs the same properties for millions of inputs with cargo-fuzz.

use llm_header_forward::attempt_testkit::check_attempts;
use llm_header_forward::model_scan::ScanError;
use llm_header_forward::testkit::{
    check_case, check_config, check_provider_data, check_scan, expected_scan, same_scan, scan, scan_agrees,
};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decisions_keep_every_guarantee(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_case(&data);
    }

    #[test]
    fn provider_data_never_breaks_a_guarantee(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_provider_data(&data);
    }

    #[test]
    fn scanner_agrees_with_serde_json_on_generated_documents(doc in json_document(), cut in any::<prop::sample::Index>()) {
        let expected = expected_scan(doc.as_bytes());
        prop_assume!(expected.is_some());
        let expected = expected.unwrap_or(Ok(None));
        let whole = scan(&[doc.as_bytes()]);
        prop_assert!(same_scan(&whole, &expected), "{doc:?}: {whole:?} vs {expected:?}");
        let (a, b) = doc.as_bytes().split_at(cut.index(doc.len() + 1));
        prop_assert!(same_scan(&scan(&[a, b]), &expected), "split {}: {doc:?}", a.len());
    }

    #[test]
    fn scanner_rejects_what_serde_json_rejects(doc in json_document(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4)) {
        let mut bytes = doc.into_bytes();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => bytes.push(byte),
            }
        }
        let Some(expected) = expected_scan(&bytes) else { return Ok(()) };
        let got = scan(&[&bytes]);
        prop_assert!(scan_agrees(&got, &expected), "{:?}: {got:?} vs {expected:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn configs_never_panic(raw in "\\PC{0,200}") {
        check_config(raw.as_bytes());
    }
}

/// JSON documents with the shapes that matter: top-level `model` (sometimes twice, sometimes
/// escaped, sometimes not a string), nesting, escapes, non-ASCII, numbers, whitespace.
fn json_document() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i32>().prop_map(|n| n.to_string()),
        any::<f32>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        "\\PC{0,12}".prop_map(|s| Value::String(s).to_string()),
        Just(r#""a\"b\\c\/\b\f\n\r\t\u00e9\ud83d\ude00""#.to_string()),
    ];
    let value = leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((key(), inner), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    });
    let ws = prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r\n")];
    (proptest::collection::vec((key(), value.clone()), 0..5), value, ws.clone(), ws, any::<bool>()).prop_map(
        |(entries, other, lead, trail, object)| {
            if !object {
                return format!("{lead}{other}{trail}");
            }
            let body: Vec<String> = entries.into_iter().map(|(k, v)| format!("{k}{lead}:{trail}{v}")).collect();
            format!("{lead}{{{}}}{trail}", body.join(","))
        },
    )
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(r#""model""#.to_string()),
        1 => Just(r#""mod\u0065l""#.to_string()),
        1 => Just(r#""\u006dodel""#.to_string()),
        1 => Just(r#""models""#.to_string()),
        1 => Just(r#""Model""#.to_string()),
        1 => Just(r#""mod\u0065L""#.to_string()),
        4 => "[a-z]{0,6}".prop_map(|s| format!("{s:?}")),
    ]
}

#[test]
fn every_chunking_of_a_document_gives_the_same_answer() {
    let docs = [
        r#"{"messages":[{"role":"user","content":"a \"model\": \u00e9 \ud83d\ude00 caf\u00e9"}],"mod\u0065l":"llama-3","x":[1,-2.5e+3,true,null,{}]}"#,
        "{\"model\":\"\u{4e2d}\u{6587}\",\"t\":\"\u{1f600}\"}",
        r#"{"model":"a","model":"b"}"#,
        r#"{"model":7}"#,
        r#"{"model":"x"} x"#,
        r#"{"model":"llama-3-8b","mod\u0065L":"gpt-4o"}"#,
        r#"{"MODEL":"gpt-4o","model":"llama-3-8b"}"#,
    ];
    for doc in docs {
        let b = doc.as_bytes();
        let expected = scan(&[b]);
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let got = scan(&[&b[..i], &b[i..j], &b[j..]]);
                assert!(same_scan(&got, &expected), "{doc} cut at {i},{j}: {got:?} vs {expected:?}");
            }
        }
        if expected.is_ok()
            || matches!(
                expected,
                Err(ScanError::DuplicateModel | ScanError::ModelCaseVariant | ScanError::ModelNotString)
            )
        {
            assert!(expected_scan(b).is_some_and(|e| same_scan(&e, &expected)), "{doc}");
        }
    }
}

/// The committed fuzz corpus (interesting inputs and every crash found) replayed as regression
/// tests, on stable Rust.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 5] = [
        ("decision", check_case),
        ("model_scan", check_scan),
        ("provider_data", check_provider_data),
        ("config", check_config),
        ("attempt", check_attempts),
    ];
    for (target, check) in targets {
        let entries = std::fs::read_dir(root.join(target)).expect("every fuzz target has a committed corpus");
        let mut replayed = 0;
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("readable corpus file");
            check(&data);
            replayed += 1;
        }
        assert!(replayed > 0, "no corpus under {}", root.join(target).display());
    }
}

#[test]
fn every_generator_configuration_is_valid() {
    use llm_header_forward::policy::Policy;
    use llm_header_forward::testkit::POLICIES;
    for config in POLICIES {
        if let Err(e) = Policy::from_json(config.as_bytes()) {
            panic!("{e}\n{config}");
        }
    }
}

/// The content of one long skipped string: runs of plain bytes (so specials fall in every lane of
/// several 64-byte windows, several per window) mixed with escapes, UTF-8 and invalid bytes.
fn long_string_content() -> impl Strategy<Value = Vec<u8>> {
    let atom = prop_oneof![
        4 => (0..80usize).prop_map(|n| vec![b'a'; n]),
        1 => prop::sample::select(vec![
            &b"\\n"[..], b"\\\"", b"\\\\", b"\\/", b"\\u00e9", b"\\ud83d\\ude00", b"\\x", b"\\u12", b"\\udc00",
            b"\\ud83dx", b"\\ud83d\\u0041", b"\\", b"\\u", "\u{e9}".as_bytes(), "\u{2019}".as_bytes(),
            "\u{1f600}".as_bytes(), b"\x01", b"\x1f", b"\x7f", b"\x80", b"\xc3", b"\xc3(", b"\xe2\x80",
            b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xff", b"\"", b" ", b"\t",
        ])
        .prop_map(|s| s.to_vec()),
    ];
    proptest::collection::vec(atom, 0..24).prop_map(|atoms| atoms.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Long skipped strings with several specials per 64-byte window agree with serde_json, whole
    /// and cut anywhere into three pieces (the 64-byte-mask loop and its chunk edges).
    #[test]
    fn long_skipped_strings_agree_with_serde_json(
        content in long_string_content(),
        offset in 0..64usize,
        cuts in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
    ) {
        let mut body = br#"{"messages":[{"content":""#.to_vec();
        body.extend(std::iter::repeat_n(b'b', offset));
        body.extend_from_slice(&content);
        body.extend_from_slice(br#""}],"model":"m"}"#);
        let Some(expected) = expected_scan(&body) else { return Ok(()) };
        let whole = scan(&[&body]);
        prop_assert!(scan_agrees(&whole, &expected), "{:?}: {whole:?} vs {expected:?}", String::from_utf8_lossy(&body));
        let (mut x, mut y) = (cuts.0.index(body.len() + 1), cuts.1.index(body.len() + 1));
        if x > y { std::mem::swap(&mut x, &mut y); }
        let pieces = scan(&[&body[..x], &body[x..y], &body[y..]]);
        prop_assert!(scan_agrees(&pieces, &expected), "cut {x} {y}: {:?}: {pieces:?} vs {expected:?}", String::from_utf8_lossy(&body));
    }
}
