//! One request's life in the dynamic module: reads what Envoy has, hands it to [`crate::flow`], and
//! carries out the [`crate::decision::Decision`] through [`crate::outcome`]. No rule lives here.
//!
//! The body is never copied: each hook scans only the bytes it has not seen, straight from the
//! slices of Envoy's buffer (the scanner keeps its state across slice boundaries).

use super::abi::{Body, ConfigHandle, Stream};
use super::metrics::Counters;
use super::upstream::Upstream;
use crate::config::Role;
use crate::decision::Decision;
use crate::flow::{self, BodyRead, Precheck};
use crate::handover::HANDOVER_KEY;
use crate::outcome::{self, Host, Outcome, Reply};
use crate::policy::{Policy, Target};
use crate::rejection::Rejection;

/// `response_code_details` of our local replies (Envoy's access logs show it).
const REPLY_DETAILS: &str = "llm_header_forward_rejected";

/// The parsed plugin configuration and the counters defined for it; shared by every filter.
pub struct Config {
    pub(super) policy: Policy,
    counters: Counters,
}

impl Config {
    /// `filter_config` is the plugin configuration JSON (SPEC §2); every problem is logged at once
    /// and `None` refuses the filter.
    pub fn new(envoy: &mut ConfigHandle, json: &[u8]) -> Option<Config> {
        let policy = Policy::load(json)?;
        let counters = Counters::define(envoy, &policy);
        Some(Config { policy, counters })
    }
}

/// What the request-headers and trailers hooks tell Envoy.
pub enum HeadersStatus {
    Continue,
    Stop,
}

/// What the request-body hook tells Envoy.
pub enum BodyStatus {
    Continue,
    /// Keep buffering: the body has not ended.
    Buffer,
    /// A local reply went out.
    Replied,
}

#[derive(Default)]
pub struct Filter {
    /// Reading the body for the model.
    body: Option<BodyRead>,
    /// A local reply went out: nothing more to do.
    replied: bool,
    /// Forwarded, to this provider or chain (`None`: unrouted); its rules also judge trailers.
    forwarded: Option<Option<Target>>,
    /// Scratch space for the request headers; empty while the body is held (read again at its end).
    headers: Vec<(String, Vec<u8>)>,
}

/// Envoy's stream as the core's [`Host`] (and, in `upstream`, its `AttemptHost`).
pub(super) struct Native<'s, 'a> {
    pub(super) stream: &'s mut Stream<'a>,
    counters: &'s Counters,
    replied: &'s mut bool,
}

impl<'s, 'a> Native<'s, 'a> {
    /// `replied` is set once a local reply went out.
    pub(super) fn new(config: &'s Config, stream: &'s mut Stream<'a>, replied: &'s mut bool) -> Native<'s, 'a> {
        Native { stream, counters: &config.counters, replied }
    }
}

impl Host for Native<'_, '_> {
    fn remove_header(&mut self, name: &str) -> bool {
        self.stream.set_request_header(name, None)
    }

    fn remove_trailer(&mut self, name: &str) -> bool {
        self.stream.remove_request_trailer(name)
    }

    fn set_header(&mut self, name: &str, value: &str) -> bool {
        self.stream.set_request_header(name, Some(value))
    }

    fn hand_over(&mut self, handover: &[u8]) -> bool {
        // Written once per request, read by the upstream role of every attempt.
        self.stream.set_filter_state(HANDOVER_KEY, handover)
    }

    fn clear_route_cache(&mut self) {
        self.stream.clear_route_cache();
    }

    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        let mut headers = Vec::new();
        if !self.stream.response_headers(&mut headers) {
            return None;
        }
        headers.into_iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

impl Reply for Native<'_, '_> {
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &str) -> bool {
        self.stream.send_response(status, headers, body, REPLY_DETAILS);
        *self.replied = true;
        true
    }

    fn count(&mut self, slot: usize, by: u64) {
        self.counters.add(self.stream, slot, by);
    }
}

impl Filter {
    fn host<'s, 'a>(&'s mut self, config: &'s Config, stream: &'s mut Stream<'a>) -> Native<'s, 'a> {
        Native::new(config, stream, &mut self.replied)
    }

    pub fn on_request_headers(&mut self, config: &Config, stream: &mut Stream, end_of_stream: bool) -> HeadersStatus {
        let policy = &config.policy;
        outcome::request_seen(&mut self.host(config, stream));
        // Whether to hold the request for its body takes three header values, read in place; the
        // headers are copied only to decide now. A held request keeps no copy of them (issue 9):
        // they are read again from Envoy when the body ends.
        let Some(views) = stream.request_header_views() else {
            return self.reject(config, stream, Rejection::internal("cannot read the request headers"));
        };
        #[cfg(feature = "native-panic-test")]
        panic_on_request(views.iter(), b"headers");
        let mut headers = std::mem::take(&mut self.headers);
        let decision = match flow::precheck(policy, |name| views.get(name), end_of_stream) {
            Precheck::ReadBody(read) => {
                self.body = Some(read);
                return HeadersStatus::Stop;
            }
            Precheck::Reject(rejection) => Decision::Reject(rejection),
            Precheck::Decide => {
                views.copy_into(&mut headers);
                flow::decide_without_body(policy, &headers)
            }
        };
        let status = self.carry_out(config, stream, decision);
        self.headers = headers;
        status
    }

    pub fn on_request_body(&mut self, config: &Config, stream: &mut Stream, end_of_stream: bool) -> BodyStatus {
        if self.body.is_none() || self.replied {
            return BodyStatus::Continue;
        }
        #[cfg(feature = "native-panic-test")]
        {
            if let Some(views) = stream.request_header_views() {
                panic_on_request(views.iter(), b"body");
            }
        }
        // Everything received so far is Envoy's buffered body (earlier pieces) followed by this
        // call's piece, or only this call's buffer when Envoy hands over its buffered body itself.
        let parts: &[Body] =
            if stream.received_is_buffered() { &[Body::Received] } else { &[Body::Buffered, Body::Received] };
        if let Some(rejection) = self.scan_new_bytes(config, stream, parts) {
            self.body = None;
            self.reject(config, stream, rejection);
            return BodyStatus::Replied;
        }
        if !end_of_stream {
            return BodyStatus::Buffer;
        }
        match self.finish_body(config, stream) {
            HeadersStatus::Continue => BodyStatus::Continue,
            HeadersStatus::Stop => BodyStatus::Replied,
        }
    }

    pub fn on_request_trailers(&mut self, config: &Config, stream: &mut Stream) -> HeadersStatus {
        if self.replied {
            return HeadersStatus::Continue;
        }
        if self.body.is_some() {
            // The body ended with trailers: all of it is in Envoy's buffer now. Decide first,
            // then judge the trailers for that provider.
            if let Some(rejection) = self.scan_new_bytes(config, stream, &[Body::Buffered]) {
                self.body = None;
                return self.reject(config, stream, rejection);
            }
            if let HeadersStatus::Stop = self.finish_body(config, stream) {
                return HeadersStatus::Stop;
            }
        }
        let Some(target) = self.forwarded else { return HeadersStatus::Continue };
        let mut trailers = Vec::new();
        if !stream.request_headers(true, &mut trailers) {
            return self.reject(config, stream, Rejection::internal("cannot read the request trailers"));
        }
        outcome::filter_trailers(&config.policy, target, &trailers, &mut self.host(config, stream));
        HeadersStatus::Continue
    }

    /// The response began: counts what the attempts' upstream role handed over so far
    /// ([`super::metrics`]) and an exhausted chain ([`outcome::response_started`]).
    pub fn on_response_headers(&mut self, config: &Config, stream: &mut Stream) {
        if let Some(target) = self.forwarded {
            if let Some(Target::Chain(_)) = target {
                config.counters.take_handed_over(stream);
            }
            outcome::response_started(&config.policy, target, &mut self.host(config, stream));
        }
    }

    /// The stream is over: counts what the attempts' upstream role handed over and no response
    /// took yet (the client went away first).
    pub fn on_stream_complete(&mut self, config: &Config, stream: &mut Stream) {
        if let Some(Some(Target::Chain(_))) = self.forwarded {
            config.counters.take_handed_over(stream);
        }
    }

    /// A hook panicked: answer 500 `internal_error` unless a reply already went out.
    pub fn on_panic(&mut self, config: &Config, stream: &mut Stream) {
        log::error!("the native filter panicked: answering 500 internal_error");
        self.body = None;
        if !self.replied {
            self.reject(config, stream, Rejection::internal("internal error in the filter"));
        }
    }

    /// Feeds the scanner the bytes of `parts` (concatenated) it has not seen yet.
    fn scan_new_bytes(&mut self, config: &Config, stream: &Stream, parts: &[Body]) -> Option<Rejection> {
        let read = self.body.as_mut()?;
        let seen = read.received();
        let mut offset = 0usize;
        for &part in parts {
            let Some(slices) = stream.request_body(part) else {
                return Some(Rejection::internal("cannot read the request body"));
            };
            for slice in slices {
                let end = offset + slice.len();
                if end > seen {
                    let new = slice.get(seen.saturating_sub(offset)..).unwrap_or_default();
                    if let Some(rejection) = read.on_chunk(&config.policy, new) {
                        return Some(rejection);
                    }
                }
                offset = end;
            }
        }
        None
    }

    fn finish_body(&mut self, config: &Config, stream: &mut Stream) -> HeadersStatus {
        let Some(read) = self.body.take() else { return HeadersStatus::Continue };
        // The headers are read again now rather than kept while the body arrives.
        let mut headers = std::mem::take(&mut self.headers);
        if !stream.request_headers(false, &mut headers) {
            return self.reject(config, stream, Rejection::internal("cannot read the request headers"));
        }
        let decision = read.on_end(&config.policy, &headers);
        let status = self.carry_out(config, stream, decision);
        self.headers = headers;
        status
    }

    fn carry_out(
        &mut self,
        config: &Config,
        stream: &mut Stream,
        decision: crate::decision::Decision,
    ) -> HeadersStatus {
        match outcome::carry_out(&config.policy, decision, &mut self.host(config, stream)) {
            Outcome::Forwarded(target) => {
                self.forwarded = Some(target);
                HeadersStatus::Continue
            }
            Outcome::Replied => HeadersStatus::Stop,
        }
    }

    fn reject(&mut self, config: &Config, stream: &mut Stream, rejection: Rejection) -> HeadersStatus {
        outcome::reject(Some(&config.policy), rejection, &mut self.host(config, stream));
        HeadersStatus::Stop
    }
}

/// One stream's filter: the downstream role, or (`"role": "upstream"`, in a cluster's
/// `http_filters`) the upstream role of fallback chains, once per attempt.
pub enum StreamFilter {
    Downstream(Filter),
    Upstream(Upstream),
}

impl StreamFilter {
    pub fn new(config: &Config) -> StreamFilter {
        match config.policy.role {
            Role::Downstream => StreamFilter::Downstream(Filter::default()),
            Role::Upstream => StreamFilter::Upstream(Upstream::default()),
        }
    }

    pub fn on_request_headers(&mut self, config: &Config, stream: &mut Stream, end_of_stream: bool) -> HeadersStatus {
        match self {
            StreamFilter::Downstream(f) => f.on_request_headers(config, stream, end_of_stream),
            StreamFilter::Upstream(u) => u.on_request_headers(config, stream, end_of_stream),
        }
    }

    pub fn on_request_body(&mut self, config: &Config, stream: &mut Stream, end_of_stream: bool) -> BodyStatus {
        match self {
            StreamFilter::Downstream(f) => f.on_request_body(config, stream, end_of_stream),
            StreamFilter::Upstream(u) => u.on_request_body(config, stream, end_of_stream),
        }
    }

    pub fn on_request_trailers(&mut self, config: &Config, stream: &mut Stream) -> HeadersStatus {
        match self {
            StreamFilter::Downstream(f) => f.on_request_trailers(config, stream),
            StreamFilter::Upstream(u) => u.on_request_trailers(config, stream),
        }
    }

    pub fn on_response_headers(&mut self, config: &Config, stream: &mut Stream) {
        if let StreamFilter::Downstream(f) = self {
            f.on_response_headers(config, stream);
        }
    }

    pub fn on_stream_complete(&mut self, config: &Config, stream: &mut Stream) {
        if let StreamFilter::Downstream(f) = self {
            f.on_stream_complete(config, stream);
        }
    }

    pub fn on_panic(&mut self, config: &Config, stream: &mut Stream) {
        match self {
            StreamFilter::Downstream(f) => f.on_panic(config, stream),
            StreamFilter::Upstream(u) => u.on_panic(config, stream),
        }
    }
}

/// Test-only build (`--features native-panic-test`): a request with
/// `x-llm-header-forward-test-panic: headers|body|upstream` panics in that hook (`upstream`: the
/// upstream role's request headers), to prove the guard.
#[cfg(feature = "native-panic-test")]
#[allow(clippy::panic)]
pub(super) fn panic_on_request<'h>(mut headers: impl Iterator<Item = (&'h [u8], &'h [u8])>, hook: &[u8]) {
    if headers.any(|(n, v)| n == b"x-llm-header-forward-test-panic" && v == hook) {
        panic!("panic requested by the test");
    }
}
