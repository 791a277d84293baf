//! Host glue for Envoy's dynamic modules (`make native`: `libllm_header_forward.so`, loaded by
//! `envoy.filters.http.dynamic_modules`, SPEC §9). Like `wasm/`, it only moves bytes between Envoy
//! and the pure core; no rule lives here.
//!
//! - `abi`: every `extern "C"` declaration and exported hook, and all of the `unsafe`.
//! - `filter`: one request's life, driving [`crate::flow`] and [`crate::outcome`].
//! - `upstream`: the upstream role of fallback chains, once per attempt, driving
//!   [`crate::attempt`] and [`crate::attempt_outcome`].
//! - `metrics`: the counters of [`crate::counters`] through Envoy's dynamic-module stats.
//! - `logger`: the `log` crate's records through Envoy's log callback.

mod abi;
mod filter;
mod logger;
mod metrics;
mod upstream;
