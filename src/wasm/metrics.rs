//! Counters through the proxy-wasm metrics API (SPEC §6). Envoy prefixes them with `wasmcustom.`;
//! the shipped `envoy.yaml` turns the provider, reason and code segments into Prometheus tags.
//!
//! Each request adds to plain counters inside the VM; `flush` hands the increments to Envoy once a
//! second (from `on_tick`). A host call per counter per request would cost more than the rest of
//! the bookkeeping, and `/stats` lags by at most a second.

use crate::decision::{Rewrite, SetRule};
use crate::forwarding::DropReason;
use crate::policy::Policy;
use crate::rejection::ErrorCode;
use proxy_wasm::hostcalls::{define_metric, increment_metric};
use proxy_wasm::types::MetricType;
use std::cell::RefCell;

pub const PREFIX: &str = "llm_header_forward";

/// How often pending increments reach Envoy.
pub const FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

// Slots of the fixed counters; the per-provider, per-reason and per-code ones follow.
const REQUESTS: usize = 0;
const UNROUTED: usize = 1;
const FORWARDED: usize = 2;
const PROVIDERS: usize = 3;

pub struct Metrics {
    /// Envoy's metric id for each slot (`None` if Envoy refused to define it).
    ids: Vec<Option<u32>>,
    /// Increments not yet handed to Envoy, per slot.
    pending: RefCell<Vec<u64>>,
    providers: usize,
    /// First slot of the chain counters: per chain `requests`, `exhausted`, then one per attempt.
    chains: Vec<usize>,
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
        let mut names =
            vec![format!("{PREFIX}.requests"), format!("{PREFIX}.unrouted"), format!("{PREFIX}.headers_forwarded")];
        names.extend(policy.providers.iter().map(|p| format!("{PREFIX}.provider.{}.requests", p.name)));
        names.extend(DropReason::ALL.iter().map(|r| format!("{PREFIX}.headers_dropped.{r}")));
        names.extend(ErrorCode::ALL.iter().map(|c| format!("{PREFIX}.rejected.{}", c.as_str())));
        let mut chains = Vec::new();
        for chain in &policy.chains {
            chains.push(names.len());
            names.push(format!("{PREFIX}.chain.{}.requests", chain.name));
            names.push(format!("{PREFIX}.chain.{}.exhausted", chain.name));
            for a in &chain.attempts {
                let provider = policy.providers.get(a.provider).map_or("-", |p| p.name.as_str());
                names.push(format!("{PREFIX}.chain.{}.attempts.{provider}", chain.name));
            }
        }
        let ids: Vec<Option<u32>> = names.into_iter().map(counter).collect();
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
            providers: policy.providers.len(),
            chains,
            flush_each_request: Default::default(),
            memory_gauge,
            memory_reported: Default::default(),
        };
        metrics.report_memory();
        metrics
    }

    /// Without a timer, increments go to Envoy at the end of each request instead.
    pub fn without_timer(&self) {
        self.flush_each_request.set(true);
    }

    /// Called when a request's counters are complete.
    pub fn request_done(&self) {
        if self.flush_each_request.get() {
            self.flush();
        }
    }

    fn add(&self, slot: usize, by: u64) {
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

    pub fn request(&self) {
        self.add(REQUESTS, 1);
    }

    pub fn rejected(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.add(PROVIDERS + self.providers + DropReason::ALL.len() + i, 1);
        }
    }

    /// A chain request left the downstream role (its attempts are counted upstream).
    pub fn chain_request(&self, chain: usize) {
        if let Some(&base) = self.chains.get(chain) {
            self.add(base, 1);
        }
    }

    /// A chain request's final response was a 5xx: every provider it was retried on failed.
    pub fn chain_exhausted(&self, chain: usize) {
        if let Some(&base) = self.chains.get(chain) {
            self.add(base + 1, 1);
        }
    }

    /// The upstream role fitted an attempt of `chain` to its `attempt`-th provider.
    pub fn chain_attempt(&self, chain: usize, attempt: usize) {
        if let Some(&base) = self.chains.get(chain) {
            self.add(base + 2 + attempt, 1);
        }
    }

    /// `provider`: the index of the provider the request was forwarded to (`None` for a chain
    /// request, counted by [`Metrics::chain_request`], and for an unrouted one).
    pub fn forwarded(&self, provider: Option<usize>, rewrite: &Rewrite) {
        match provider {
            Some(i) => self.add(PROVIDERS + i, 1),
            None if rewrite.chain.is_some() => {}
            None => self.add(UNROUTED, 1),
        }
        let from_provider_data = rewrite.set.iter().filter(|a| matches!(a.rule, SetRule::ProviderData(_))).count();
        self.add(FORWARDED, from_provider_data as u64);
        for d in &rewrite.dropped {
            if let Some(i) = DropReason::ALL.iter().position(|r| *r == d.reason.as_str()) {
                self.add(PROVIDERS + self.providers + i, 1);
            }
        }
    }
}
