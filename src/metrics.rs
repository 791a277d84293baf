//! Counters through the proxy-wasm metrics API (SPEC §6). Envoy prefixes them with `wasmcustom.`;
//! the shipped `envoy.yaml` turns the provider, reason and code segments into Prometheus tags.

use crate::decision::{Rewrite, SetRule};
use crate::forwarding::DropReason;
use crate::policy::Policy;
use crate::rejection::ErrorCode;
use proxy_wasm::hostcalls::{define_metric, increment_metric};
use proxy_wasm::types::MetricType;

pub const PREFIX: &str = "llm_header_forward";

pub struct Metrics {
    requests: Option<u32>,
    unrouted: Option<u32>,
    forwarded: Option<u32>,
    /// Parallel to `policy.providers`.
    per_provider: Vec<Option<u32>>,
    /// Parallel to `DropReason::ALL`.
    dropped: Vec<Option<u32>>,
    /// Parallel to `ErrorCode::ALL`.
    rejected: Vec<Option<u32>>,
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

fn bump(id: Option<u32>, by: i64) {
    if let Some(id) = id
        && by > 0
    {
        let _ = increment_metric(id, by);
    }
}

impl Metrics {
    /// Defines every counter once, at configuration time, so `/stats` lists them from the start.
    pub fn define(policy: &Policy) -> Metrics {
        Metrics {
            requests: counter(format!("{PREFIX}.requests")),
            unrouted: counter(format!("{PREFIX}.unrouted")),
            forwarded: counter(format!("{PREFIX}.headers_forwarded")),
            per_provider: policy
                .providers
                .iter()
                .map(|p| counter(format!("{PREFIX}.provider.{}.requests", p.name)))
                .collect(),
            dropped: DropReason::ALL.iter().map(|r| counter(format!("{PREFIX}.headers_dropped.{r}"))).collect(),
            rejected: ErrorCode::ALL.iter().map(|c| counter(format!("{PREFIX}.rejected.{}", c.as_str()))).collect(),
        }
    }

    pub fn request(&self) {
        bump(self.requests, 1);
    }

    pub fn rejected(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            bump(self.rejected.get(i).copied().flatten(), 1);
        }
    }

    pub fn forwarded(&self, policy: &Policy, rewrite: &Rewrite) {
        match rewrite.provider.and_then(|name| policy.providers.iter().position(|p| p.name == name)) {
            Some(i) => bump(self.per_provider.get(i).copied().flatten(), 1),
            None => bump(self.unrouted, 1),
        }
        let from_provider_data = rewrite.set.iter().filter(|a| matches!(a.rule, SetRule::ProviderData(_))).count();
        bump(self.forwarded, from_provider_data as i64);
        for d in &rewrite.dropped {
            if let Some(i) = DropReason::ALL.iter().position(|r| *r == d.reason.as_str()) {
                bump(self.dropped.get(i).copied().flatten(), 1);
            }
        }
    }
}
