//! The proxy-wasm glue: reads what the host has, hands it to [`crate::flow`], and carries out the
//! [`Decision`] through [`crate::outcome`], like the native glue. No rule lives here.

use super::READ_PIECE;
use crate::config::Role;
use crate::decision::Decision;
use crate::flow::{self, BodyRead, Precheck};
use crate::handover::HANDOVER_KEY;
use crate::outcome::{self, Host, Outcome, Reply};
use crate::policy::{Policy, Target};
use crate::rejection::Rejection;
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
        let Some(policy) = Policy::load(&config) else { return false };
        let metrics = Metrics::define(&policy);
        if hostcalls::set_tick_period(crate::wasm::metrics::FLUSH_PERIOD).is_err() {
            metrics.without_timer();
        }
        self.ready = Some(Rc::new((policy, metrics)));
        true
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
            return Some(Box::new(Upstream { ready, model: None, read: 0, original_length: None }));
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

/// Envoy, through proxy-wasm, as the core's [`Host`] (and, in `upstream`, its `AttemptHost`).
/// Counters go to the VM's batch ([`Metrics`]); a host without a timer gets them when this is
/// dropped, at the end of each step.
pub(super) struct Wasm<'m> {
    metrics: Option<&'m Metrics>,
}

impl<'m> Wasm<'m> {
    pub(super) fn new(ready: Option<&'m (Policy, Metrics)>) -> Wasm<'m> {
        Wasm { metrics: ready.map(|r| &r.1) }
    }
}

impl Drop for Wasm<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics {
            metrics.step_done();
        }
    }
}

impl Host for Wasm<'_> {
    fn remove_header(&mut self, name: &str) -> bool {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).is_ok()
    }

    fn remove_trailer(&mut self, name: &str) -> bool {
        hostcalls::remove_map_value(MapType::HttpRequestTrailers, name).is_ok()
    }

    fn set_header(&mut self, name: &str, value: &str) -> bool {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).is_ok()
    }

    fn hand_over(&mut self, handover: &[u8]) -> bool {
        hostcalls::set_property(vec![HANDOVER_KEY], Some(handover)).is_ok()
    }

    fn clear_route_cache(&mut self) {
        // Hosts without this function still get the rewritten headers, so an error is only logged.
        if let Err(e) = hostcalls::call_foreign_function("clear_route_cache", None) {
            log::debug!("clear_route_cache unavailable: {e:?}");
        }
    }

    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name).ok().flatten()
    }
}

impl Reply for Wasm<'_> {
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &str) -> bool {
        hostcalls::send_http_response(status, headers.to_vec(), Some(body.as_bytes())).is_ok()
    }

    fn count(&mut self, slot: usize, by: u64) {
        if let Some(metrics) = self.metrics {
            metrics.add(slot, by);
        }
    }
}

/// Answers with `rejection` (counted when the filter is configured); the request goes no further.
pub(super) fn reject(ready: Option<&(Policy, Metrics)>, rejection: Rejection) -> Action {
    outcome::reject(ready.map(|r| &r.0), rejection, &mut Wasm::new(ready));
    Action::Pause
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(ready) = self.ready.clone() else {
            self.stage = Stage::Done;
            return reject(None, Rejection::internal("the filter is not configured"));
        };
        outcome::request_seen(&mut Wasm::new(Some(&ready)));
        // Whether to hold the request for its body takes three header values, one host call each;
        // the whole map is copied into the VM only to decide now (a held request keeps no copy:
        // `Stage`).
        let mut unreadable = false;
        let precheck = flow::precheck(
            &ready.0,
            |name| {
                hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).unwrap_or_else(|_| {
                    unreadable = true;
                    None
                })
            },
            end_of_stream,
        );
        let decision = match precheck {
            _ if unreadable => None,
            Precheck::ReadBody(read) => {
                self.stage = Stage::Body(read);
                return Action::Pause;
            }
            Precheck::Reject(rejection) => Some(Decision::Reject(rejection)),
            Precheck::Decide => hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                .ok()
                .map(|headers| flow::decide_without_body(&ready.0, &headers)),
        };
        match decision {
            Some(decision) => self.carry_out(&ready, decision),
            None => {
                self.stage = Stage::Done;
                reject(Some(&ready), Rejection::internal("cannot read the request headers"))
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(ready), Stage::Body(read)) = (self.ready.clone(), &mut self.stage) else {
            return Action::Continue;
        };
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
                    return reject(Some(&ready), Rejection::internal("cannot read the request body"));
                }
            };
            if let Some(rejection) = read.on_chunk(&ready.0, &piece) {
                self.stage = Stage::Done;
                return reject(Some(&ready), rejection);
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(&ready)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let (Stage::Forwarded(target), Some(ready)) = (&self.stage, self.ready.as_deref()) {
            outcome::response_started(&ready.0, *target, &mut Wasm::new(Some(ready)));
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(ready) = self.ready.clone() else { return Action::Continue };
        if matches!(self.stage, Stage::Body(_)) {
            // Trailers end the body: decide first, then judge the trailers for that provider.
            let action = self.finish_body(&ready);
            if !matches!(self.stage, Stage::Forwarded(_)) {
                return action;
            }
        }
        let Stage::Forwarded(target) = self.stage else { return Action::Continue };
        let trailers = match hostcalls::get_map_bytes(MapType::HttpRequestTrailers) {
            Ok(t) => t,
            Err(_) => {
                self.stage = Stage::Done;
                return reject(Some(&ready), Rejection::internal("cannot read the request trailers"));
            }
        };
        outcome::filter_trailers(&ready.0, target, &trailers, &mut Wasm::new(Some(&ready)));
        Action::Continue
    }
}

impl Filter {
    fn finish_body(&mut self, ready: &(Policy, Metrics)) -> Action {
        let Stage::Body(read) = std::mem::replace(&mut self.stage, Stage::Done) else { return Action::Continue };
        // Read again from Envoy (see `Stage`): the request is still paused, so they are unchanged.
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(_) => return reject(Some(ready), Rejection::internal("cannot read the request headers")),
        };
        let decision = read.on_end(&ready.0, &headers);
        drop(headers);
        self.carry_out(ready, decision)
    }

    fn carry_out(&mut self, ready: &(Policy, Metrics), decision: Decision) -> Action {
        match outcome::carry_out(&ready.0, decision, &mut Wasm::new(Some(ready))) {
            Outcome::Forwarded(target) => {
                self.stage = Stage::Forwarded(target);
                Action::Continue
            }
            Outcome::Replied => {
                self.stage = Stage::Done;
                Action::Pause
            }
        }
    }
}
