//! Native cost of one request's decision (the bench request): `cargo run --release --example decide_speed`.
use llm_header_forward::flow::{AfterHeaders, on_request_headers};
use llm_header_forward::policy::Policy;
use std::time::Instant;

fn main() {
    let yaml = std::fs::read_to_string("envoy/envoy.yaml").expect("run from the repository root");
    let start = yaml.find("value: |").expect("plugin config") + "value: |".len();
    let end = yaml[start..].find("- name: envoy.filters.http.router").expect("router") + start;
    let config: String = yaml[start..end].lines().map(str::trim).collect::<Vec<_>>().join("\n");
    let policy = Policy::from_json(config.as_bytes()).expect("valid");
    let pd = r#"{"vllm_api_token":"sk-bench-0123456789abcdef","tenant_id":"tenant-42","vllm_extra_headers":{"X-MaaS-Subscription":"free-tier","x-maas-region":"eu"}}"#;
    let headers: Vec<(String, Vec<u8>)> = [
        (":authority", "127.0.0.1:10000"),
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "1024"),
        ("x-llamastack-provider-data", pd),
        ("user-agent", "wrk"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0b7c6a1e-5c1f-4f7e-9a53-1b2f0c7d9e11"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    let body =
        format!(r#"{{"messages":[{{"role":"user","content":"{}"}}],"model":"llama-3-8b"}}"#, "hello world ".repeat(80));
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        let AfterHeaders::ReadBody(mut read) = on_request_headers(&policy, &headers, false) else { panic!() };
        assert!(read.on_chunk(&policy, body.as_bytes()).is_none());
        std::hint::black_box(read.on_end(&policy, &headers));
    }
    println!("whole decision: {:.2} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(llm_header_forward::provider_data::parse(pd.as_bytes(), 16384).expect("ok"));
    }
    println!("provider-data parse: {:.2} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let mut s = llm_header_forward::model_scan::ModelScanner::new();
        s.feed(body.as_bytes()).expect("ok");
        std::hint::black_box(s.finish().expect("ok"));
    }
    println!("1 KB scan: {:.2} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
