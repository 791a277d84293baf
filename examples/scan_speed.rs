//! Native throughput of the body scanner on chat bodies: `cargo run --release --example scan_speed`.
//! On a loaded machine, compare CPU cycles instead of wall time:
//! `perf stat -e cycles:u target/release/examples/scan_speed "bench prose"` (200 MB scanned per case).
use llm_header_forward::model_scan::ModelScanner;
use std::time::Instant;

fn body(size: usize, text: &str) -> Vec<u8> {
    let content: String = text.repeat(size / text.len() + 1).chars().take(size).collect();
    format!(r#"{{"messages":[{{"role":"user","content":"{content}"}}],"model":"llama-3-8b"}}"#).into_bytes()
}

/// `PROSE` of bench/run.py as it appears inside a JSON string.
const BENCH_PROSE: &str = concat!(
    "The quarterly report shows that revenue grew in every region, although costs rose faster than ",
    "expected in the second half. Please summarise the main drivers and list the risks that the board ",
    "should discuss at the next meeting.\\n\\nAs the CFO put it, \\\"we\u{2019}re investing ahead of demand\\\" \u{2014} a ",
    "choice that depends on the caf\u{e9} chain contract being renewed.\\n\\n",
);

fn main() {
    let cases = [
        ("ascii prose", "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "),
        ("prose with quotes, newlines, accents", "lorem ipsum dolor sit amet \\\"quoted\\\" caf\u{e9}\\n elit "),
        ("base64", "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg"),
        // bench/run.py's chat prose: two paragraph breaks, a quotation and three non-ASCII
        // characters in every ~400 bytes.
        ("bench prose", BENCH_PROSE),
        ("CJK", "\u{4e2d}\u{6587}\u{6587}\u{672c}\u{5185}\u{5bb9}\u{6d4b}\u{8bd5}"),
    ];
    // An argument picks the cases whose name contains it (e.g. to run one under `perf stat`).
    let only = std::env::args().nth(1).unwrap_or_default();
    for (name, text) in cases.into_iter().filter(|(name, _)| name.contains(only.as_str())) {
        let b = body(1 << 20, text);
        let start = Instant::now();
        let rounds = 200;
        for _ in 0..rounds {
            let mut s = ModelScanner::new();
            for chunk in b.chunks(16384) {
                s.feed(chunk).expect("valid");
            }
            assert_eq!(s.finish().expect("valid").as_deref(), Some("llama-3-8b"));
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{name:40} {:8.0} MB/s", (b.len() * rounds) as f64 / secs / 1e6);
    }
}
