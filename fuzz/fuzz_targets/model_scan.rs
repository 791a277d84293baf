//! The input is a body (first byte: where to split it): the scanner agrees with serde_json.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_header_forward::testkit::check_scan;

fuzz_target!(|data: &[u8]| check_scan(data));
