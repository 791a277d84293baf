//! The counters of [`crate::counters`] through Envoy's dynamic-module stats: defined once per
//! configuration (Envoy freezes stat creation afterwards), incremented per request. Envoy's
//! counters are atomic adds, so unlike the wasm glue nothing is batched.
//!
//! The upstream role's counts (attempts, refusals) travel to the downstream role instead: Envoy
//! puts the stats of a filter in a cluster's `http_filters` under that cluster's scope
//! (`cluster.<name>.dynamicmodulescustom.…`), not under the names the wasm build publishes. So the
//! upstream role defines no counters; it appends the counter's name to a list in filter state
//! ([`COUNTS_KEY`]), and the listener's filter, which shares that filter state, adds them to its
//! own counters when the response starts and when the stream ends (a client that went away).

use super::abi::{ConfigHandle, Stream};
use crate::config::Role;
use crate::counters;
use crate::handover::{decode_names, encode_names};
use crate::policy::Policy;

/// Filter-state key of the counts the upstream role left for the listener's filter.
pub const COUNTS_KEY: &str = "llm_header_forward.upstream_counts";

pub struct Counters {
    /// Every counter's name, by slot ([`counters::names`]).
    names: Vec<String>,
    /// Envoy's counter id per slot (`None` if Envoy refused to define it); empty for the upstream
    /// role, whose counts are handed over.
    ids: Vec<Option<usize>>,
}

impl Counters {
    pub fn define(envoy: &mut ConfigHandle, policy: &Policy) -> Counters {
        let names = counters::names(policy);
        let ids = match policy.role {
            Role::Upstream => Vec::new(),
            Role::Downstream => names
                .iter()
                .map(|name| {
                    let id = envoy.define_counter(name);
                    if id.is_none() {
                        log::warn!("cannot define metric {name}");
                    }
                    id
                })
                .collect(),
        };
        Counters { names, ids }
    }

    pub fn add(&self, stream: &mut Stream, slot: usize, by: u64) {
        if self.ids.is_empty() {
            self.hand_over(stream, slot, by);
        } else if let Some(id) = self.ids.get(slot).copied().flatten() {
            stream.increment_counter(id, by);
        }
    }

    /// The upstream role: appends the counter's name `by` times to the list in filter state.
    fn hand_over(&self, stream: &mut Stream, slot: usize, by: u64) {
        let Some(name) = self.names.get(slot) else { return };
        let mut pending = stream.filter_state(COUNTS_KEY).and_then(|b| decode_names(&b)).unwrap_or_default();
        pending.extend((0..by).map(|_| name.clone()));
        if !stream.set_filter_state(COUNTS_KEY, &encode_names(&pending)) {
            log::warn!("cannot hand over the upstream count {name}");
        }
    }

    /// The listener's filter: adds the counts the upstream role left (by name: the two roles
    /// share one configuration but count through their own), then empties the list.
    pub fn take_handed_over(&self, stream: &mut Stream) {
        let Some(pending) = stream.filter_state(COUNTS_KEY).and_then(|b| decode_names(&b)) else { return };
        if pending.is_empty() {
            return;
        }
        for name in &pending {
            match self.names.iter().position(|n| n == name) {
                Some(slot) => self.add(stream, slot, 1),
                None => log::warn!("the upstream role counted {name}, which this configuration does not define"),
            }
        }
        if !stream.set_filter_state(COUNTS_KEY, &encode_names(&[])) {
            log::warn!("cannot clear the upstream role's counts");
        }
    }
}
