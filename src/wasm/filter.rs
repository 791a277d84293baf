//! The proxy-wasm glue: reads what the host has, hands it to [`crate::flow`], and applies the
//! [`Decision`]. No rule lives here.

use crate::config::Role;
use crate::decision::{Decision, Rewrite};
use crate::flow::{self, AfterHeaders, BodyRead};
use crate::handover::HANDOVER_KEY;
use crate::policy::{Policy, Target};
use crate::rejection::{ErrorCode, Rejection};
use crate::request_trailers;
use crate::wasm::metrics::Metrics;
use crate::wasm::upstream::Upstream;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { ready: None }) });
}}

struct Root {
    ready: Option<Rc<(Policy, Metrics)>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        follow_host_log_level();
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                log::error!("cannot read the plugin configuration: {e:?}");
                return false;
            }
        };
        match Policy::from_json(&config) {
            Ok(policy) => {
                log::info!(
                    "configured {} provider(s): {}",
                    policy.providers.len(),
                    policy.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                );
                let metrics = Metrics::define(&policy);
                if hostcalls::set_tick_period(crate::wasm::metrics::FLUSH_PERIOD).is_err() {
                    metrics.without_timer();
                }
                self.ready = Some(Rc::new((policy, metrics)));
                true
            }
            Err(errors) => {
                log::error!("invalid plugin configuration, refusing to start: {errors}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(ready) = &self.ready {
            ready.1.flush();
        }
        // Follows runtime changes (admin `/logging?wasm=debug`) within a second.
        follow_host_log_level();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let ready = self.ready.clone();
        if ready.as_ref().is_some_and(|r| r.0.role == Role::Upstream) {
            return Some(Box::new(Upstream { ready, model: None, read: 0, has_content_length: false }));
        }
        Some(Box::new(Filter { ready, stage: Stage::Headers }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Envoy's `wasm` log level decides what is logged; nothing below it is even formatted.
fn follow_host_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// Largest piece of body copied into the VM at once.
const READ_PIECE: usize = 64 * 1024;

struct Filter {
    ready: Option<Rc<(Policy, Metrics)>>,
    stage: Stage,
}

/// Where the request is. Every stage has a small fixed size: a paused request costs the VM the
/// same few hundred bytes whatever its headers weigh (HPACK lets a client send 60 KiB of headers
/// for a few bytes, on thousands of streams), so the headers are never copied into the VM for
/// longer than one callback.
enum Stage {
    Headers,
    /// Reading the body; the headers stay in Envoy and are read again when it ends.
    Body(BodyRead),
    /// Forwarded to this provider or chain (`None`: unrouted); its rules also judge trailers.
    Forwarded(Option<Target>),
    /// Rejected: a local reply was sent.
    Done,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(ready) = self.ready.clone() else {
            self.stage = Stage::Done;
            return reject(None, internal("the filter is not configured"));
        };
        let (policy, metrics) = (&ready.0, &ready.1);
        metrics.request();
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(_) => {
                self.stage = Stage::Done;
                return reject(Some(metrics), internal("cannot read the request headers"));
            }
        };
        match flow::on_request_headers(policy, &headers, end_of_stream) {
            AfterHeaders::Decided(decision) => self.apply(policy, metrics, decision),
            AfterHeaders::ReadBody(read) => {
                self.stage = Stage::Body(read);
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(ready), Stage::Body(read)) = (self.ready.clone(), &mut self.stage) else {
            return Action::Continue;
        };
        let (policy, metrics) = (&ready.0, &ready.1);
        // Envoy buffers the body while we pause; `body_size` is all of it so far, and one call may
        // bring a megabyte. Copy only the bytes not seen yet, a bounded piece at a time, so the VM
        // never holds more than `READ_PIECE` bytes of body (its memory never shrinks).
        while read.received() < body_size {
            let seen = read.received();
            let piece = match hostcalls::get_buffer(BufferType::HttpRequestBody, seen, READ_PIECE.min(body_size - seen))
            {
                Ok(Some(piece)) if !piece.is_empty() => piece,
                Ok(_) => break,
                Err(_) => {
                    self.stage = Stage::Done;
                    return reject(Some(metrics), internal("cannot read the request body"));
                }
            };
            if let Some(rejection) = read.on_chunk(policy, &piece) {
                self.stage = Stage::Done;
                return reject(Some(metrics), rejection);
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(policy, metrics)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // A chain request answered 5xx after Envoy's retries: every provider it tried failed
        // (refusals of the upstream role, marked by the error header, are counted as rejections).
        if let (Stage::Forwarded(Some(Target::Chain(chain))), Some(ready)) = (&self.stage, self.ready.as_ref()) {
            let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status").ok().flatten();
            let refused =
                hostcalls::get_map_value(MapType::HttpResponseHeaders, "x-llm-header-forward-error").ok().flatten();
            if refused.is_none() && status.and_then(|s| s.parse::<u32>().ok()).is_some_and(|s| s >= 500) {
                ready.1.chain_exhausted(*chain);
                ready.1.request_done();
            }
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(ready) = self.ready.clone() else { return Action::Continue };
        let (policy, metrics) = (&ready.0, &ready.1);
        if matches!(self.stage, Stage::Body(_)) {
            // Trailers end the body: decide first, then judge the trailers for that provider.
            let action = self.finish_body(policy, metrics);
            if !matches!(self.stage, Stage::Forwarded(_)) {
                return action;
            }
        }
        let Stage::Forwarded(target) = self.stage else { return Action::Continue };
        let trailers = match hostcalls::get_map_bytes(MapType::HttpRequestTrailers) {
            Ok(t) => t,
            Err(_) => {
                self.stage = Stage::Done;
                return reject(Some(metrics), internal("cannot read the request trailers"));
            }
        };
        let removals = request_trailers::removals(policy, target, &trailers);
        for removal in &removals {
            if hostcalls::remove_map_value(MapType::HttpRequestTrailers, &removal.name).is_err() {
                log::warn!("could not remove trailer {:?}", removal.name);
            }
        }
        if !removals.is_empty() && log::log_enabled!(log::Level::Debug) {
            let names: Vec<String> = removals.iter().map(|r| format!("-{:?}({})", r.name, r.rule)).collect();
            log::debug!("trailers: {}", names.join(" "));
        }
        Action::Continue
    }
}

impl Filter {
    fn finish_body(&mut self, policy: &Policy, metrics: &Metrics) -> Action {
        let Stage::Body(read) = std::mem::replace(&mut self.stage, Stage::Done) else { return Action::Continue };
        // Read again from Envoy (see `Stage`): the request is still paused, so they are unchanged.
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(_) => return reject(Some(metrics), internal("cannot read the request headers")),
        };
        let decision = read.on_end(policy, &headers);
        drop(headers);
        self.apply(policy, metrics, decision)
    }

    fn apply(&mut self, policy: &Policy, metrics: &Metrics, decision: Decision) -> Action {
        match decision {
            Decision::Reject(rejection) => {
                self.stage = Stage::Done;
                reject(Some(metrics), rejection)
            }
            Decision::Forward(rewrite) => {
                // A chain request: the upstream role reads what the attempts need from filter
                // state (never a header: the header map is shared by every attempt). Without it
                // every attempt would be refused, so fail now.
                if let Some(handover) = &rewrite.handover
                    && hostcalls::set_property(vec![HANDOVER_KEY], Some(handover)).is_err()
                {
                    self.stage = Stage::Done;
                    return reject(
                        Some(metrics),
                        internal("cannot hand the fallback chain's state to the upstream filter"),
                    );
                }
                rewrite_headers(&rewrite);
                let target = request_trailers::target_of(policy, &rewrite);
                let provider = match target {
                    Some(Target::Provider(i)) => Some(i),
                    _ => None,
                };
                metrics.forwarded(provider, &rewrite);
                if let Some(Target::Chain(chain)) = target {
                    metrics.chain_request(chain);
                }
                metrics.request_done();
                if log::log_enabled!(log::Level::Debug) {
                    log::debug!("{}", rewrite.summary());
                }
                self.stage = Stage::Forwarded(target);
                Action::Continue
            }
        }
    }
}

pub(super) fn internal(what: &str) -> Rejection {
    Rejection::new(ErrorCode::InternalError, what.to_string())
}

fn rewrite_headers(rewrite: &Rewrite) {
    for removal in &rewrite.remove {
        if rewrite.set.iter().any(|a| a.name == removal.name) {
            continue; // the set below replaces every value of this header
        }
        if hostcalls::remove_map_value(MapType::HttpRequestHeaders, &removal.name).is_err() {
            log::warn!("could not remove header {:?}", removal.name);
        }
    }
    for set in &rewrite.set {
        if hostcalls::set_map_value(MapType::HttpRequestHeaders, &set.name, Some(&set.value)).is_err() {
            log::warn!("could not set header {:?}", set.name);
        }
    }
    if !rewrite.remove.is_empty() || !rewrite.set.is_empty() {
        // Routes were matched on the old headers; let Envoy match again. Hosts without this
        // function still get the rewritten headers, so an error is only logged.
        if let Err(e) = hostcalls::call_foreign_function("clear_route_cache", None) {
            log::debug!("clear_route_cache unavailable: {e:?}");
        }
    }
}

pub(super) fn reject(metrics: Option<&Metrics>, rejection: Rejection) -> Action {
    if let Some(m) = metrics {
        m.rejected(rejection.code);
        m.request_done();
    }
    log::debug!("rejected with {} ({}): {}", rejection.status(), rejection.code.as_str(), rejection.message);
    let body = rejection.body();
    let headers = vec![("content-type", "application/json"), ("x-llm-header-forward-error", rejection.code.as_str())];
    if hostcalls::send_http_response(rejection.status(), headers, Some(body.as_bytes())).is_err() {
        log::error!("could not send the {} reply", rejection.code.as_str());
    }
    Action::Pause
}
