//! The counters of [`crate::counters`] (which names exist, which one a request moves) through the
//! proxy-wasm metrics API (SPEC §6). Envoy prefixes them with `wasmcustom.`; the shipped
//! `envoy.yaml` turns the provider, reason and code segments into Prometheus tags.
//!
//! Each request adds to plain counters inside the VM; `flush` hands the increments to Envoy once a
//! second (from `on_tick`). A host call per counter per request would cost more than the rest of
//! the bookkeeping, and `/stats` lags by at most a second.

use crate::counters::{self, PREFIX};
use crate::policy::Policy;
use proxy_wasm::hostcalls::{define_metric, increment_metric};
use proxy_wasm::types::MetricType;
use std::cell::RefCell;

/// How often pending increments reach Envoy.
pub const FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Metrics {
    /// Envoy's metric id for each slot (`None` if Envoy refused to define it).
    ids: Vec<Option<u32>>,
    /// Increments not yet handed to Envoy, per slot.
    pending: RefCell<Vec<u64>>,
    /// Set when the host has no timer: then every request flushes.
    flush_each_request: std::cell::Cell<bool>,
    /// The `vm_memory_bytes` gauge, and the share of it this VM has added so far.
    memory_gauge: Option<u32>,
    memory_reported: std::cell::Cell<u64>,
}

fn counter(name: String) -> Option<u32> {
    match define_metric(MetricType::Counter, &name) {
        Ok(id) => Some(id),
        Err(e) => {
            log::warn!("cannot define metric {name}: {e:?}");
            None
        }
    }
}

impl Metrics {
    /// Defines every counter once, at configuration time, so `/stats` lists them from the start.
    pub fn define(policy: &Policy) -> Metrics {
        let ids: Vec<Option<u32>> = counters::names(policy).into_iter().map(counter).collect();
        let pending = RefCell::new(vec![0; ids.len()]);
        let memory_gauge = match define_metric(MetricType::Gauge, &format!("{PREFIX}.vm_memory_bytes")) {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("cannot define metric {PREFIX}.vm_memory_bytes: {e:?}");
                None
            }
        };
        let metrics = Metrics {
            ids,
            pending,
            flush_each_request: Default::default(),
            memory_gauge,
            memory_reported: Default::default(),
        };
        metrics.report_memory();
        metrics
    }

    /// Without a timer, increments go to Envoy at the end of each step instead ([`Metrics::step_done`]).
    pub fn without_timer(&self) {
        self.flush_each_request.set(true);
    }

    /// Called after each step of a request that may have counted.
    pub fn step_done(&self) {
        if self.flush_each_request.get() {
            self.flush();
        }
    }

    /// Adds `by` to the counter in `slot` ([`counters::names`]), for the next flush.
    pub fn add(&self, slot: usize, by: u64) {
        if let Some(n) = self.pending.borrow_mut().get_mut(slot) {
            *n += by;
        }
    }

    /// Adds this VM's linear-memory growth to the `vm_memory_bytes` gauge, so the gauge is the sum
    /// of every worker VM's memory (a VM's memory only grows; a crashed VM's share stays counted).
    fn report_memory(&self) {
        let Some(id) = self.memory_gauge else { return };
        let now = core::arch::wasm32::memory_size(0) as u64 * 65536;
        let grown = now.saturating_sub(self.memory_reported.get());
        if grown > 0 && increment_metric(id, grown as i64).is_ok() {
            self.memory_reported.set(now);
        }
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&self) {
        self.report_memory();
        for (slot, n) in self.pending.borrow_mut().iter_mut().enumerate() {
            if *n > 0 {
                if let Some(id) = self.ids.get(slot).copied().flatten() {
                    let _ = increment_metric(id, *n as i64);
                }
                *n = 0;
            }
        }
    }
}
