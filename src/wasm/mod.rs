//! Host glue for proxy-wasm (the default, portable build: `.wasm` for Envoy and Istio). It only
//! moves bytes between the host and the pure core; no rule lives here.

mod filter;
pub(crate) mod metrics;
mod upstream;

/// Largest piece of body copied into the VM at once (wasm memory never shrinks: see SPEC §7).
const READ_PIECE: usize = 64 * 1024;
