//! Native throughput of the body scanner on chat bodies: `cargo run --release --example scan_speed`.
use llm_header_forward::model_scan::ModelScanner;
use std::time::Instant;

fn body(size: usize, text: &str) -> Vec<u8> {
    let content: String = text.repeat(size / text.len() + 1).chars().take(size).collect();
    format!(r#"{{"messages":[{{"role":"user","content":"{content}"}}],"model":"llama-3-8b"}}"#).into_bytes()
}

fn main() {
    let cases = [
        ("ascii prose", "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "),
        ("prose with quotes, newlines, accents", "lorem ipsum dolor sit amet \\\"quoted\\\" caf\u{e9}\\n elit "),
        ("base64", "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg"),
        ("CJK", "\u{4e2d}\u{6587}\u{6587}\u{672c}\u{5185}\u{5bb9}\u{6d4b}\u{8bd5}"),
    ];
    for (name, text) in cases {
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
