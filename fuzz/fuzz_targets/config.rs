//! The input is a plugin configuration: loading it never panics, and a refusal names a problem.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_header_forward::testkit::check_config;

fuzz_target!(|data: &[u8]| check_config(data));
