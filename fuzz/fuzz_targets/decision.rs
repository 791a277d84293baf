//! Whole requests built from the input (headers, provider data, body, chunking, configuration):
//! every decision keeps every guarantee.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_header_forward::testkit::check_case;

fuzz_target!(|data: &[u8]| check_case(data));
