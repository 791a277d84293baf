//! llm-header-forward: an Envoy filter that forwards per-request provider data to LLM backends
//! safely. Everything that decides is plain Rust (compiled and tested natively); only the host glue
//! talks to a host: `wasm/` (proxy-wasm, the default build) and `native/` (Envoy dynamic module).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod attempt;
pub mod attempt_outcome;
pub mod blocklist;
pub mod chain;
pub mod client_headers;
pub mod config;
pub mod counters;
pub mod decision;
pub mod flow;
pub mod forwarding;
pub mod handover;
pub mod header_syntax;
pub mod model_rewrite;
pub mod model_scan;
pub mod outcome;
pub mod policy;
pub mod provider_data;
pub mod rejection;
pub mod request_trailers;

// Tools and test support (the CLI, fuzzing, property tests); never part of the filter.
#[cfg(not(target_arch = "wasm32"))]
pub mod attempt_testkit;
#[cfg(not(target_arch = "wasm32"))]
pub mod envoy_check;
#[cfg(not(target_arch = "wasm32"))]
pub mod explain;
#[cfg(not(target_arch = "wasm32"))]
pub mod invariants;
#[cfg(not(target_arch = "wasm32"))]
pub mod testkit;

// Host glue: each host's folder only moves bytes between that host and the core above.
// proxy-wasm (the default `.wasm`):
#[cfg(target_arch = "wasm32")]
mod wasm;
// Envoy dynamic module (`make native`): links against symbols only Envoy's binary defines, so it is
// compiled only with the `native` feature.
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native;
