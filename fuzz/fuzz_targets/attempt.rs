//! Fallback chains: a chain request (configuration, client headers, provider data, model) and any
//! order of attempts on one shared header map. Invariant: an attempt's upstream headers contain
//! nothing another provider's rules produced — exactly what its own provider's rules produce.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_header_forward::attempt_testkit::check_attempts;

fuzz_target!(|data: &[u8]| check_attempts(data));
