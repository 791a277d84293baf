//! The input is a provider-data header, sent with a model of every provider under every
//! configuration: nothing forwarded breaks a guarantee.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_header_forward::testkit::check_provider_data;

fuzz_target!(|data: &[u8]| check_provider_data(data));
