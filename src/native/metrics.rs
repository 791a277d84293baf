//! The counters of [`crate::counters`] through Envoy's dynamic-module stats: defined once per
//! configuration (Envoy freezes stat creation afterwards), incremented per request. Envoy's
//! counters are atomic adds, so unlike the wasm glue nothing is batched.

use super::abi::{ConfigHandle, Stream};
use crate::counters;
use crate::policy::Policy;

pub struct Counters {
    /// Envoy's counter id per slot (`None` if Envoy refused to define it).
    ids: Vec<Option<usize>>,
}

impl Counters {
    pub fn define(envoy: &mut ConfigHandle, policy: &Policy) -> Counters {
        let ids = counters::names(policy)
            .into_iter()
            .map(|name| {
                let id = envoy.define_counter(&name);
                if id.is_none() {
                    log::warn!("cannot define metric {name}");
                }
                id
            })
            .collect();
        Counters { ids }
    }

    pub fn add(&self, stream: &mut Stream, slot: usize, by: u64) {
        if let Some(id) = self.ids.get(slot).copied().flatten() {
            stream.increment_counter(id, by);
        }
    }
}
