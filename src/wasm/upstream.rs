//! The upstream role's glue (SPEC §8): Envoy runs it once per attempt, in the chain's cluster
//! before `upstream_codec`. It reads the handover, the chosen endpoint's provider and the earlier
//! attempts' record from Envoy, hands them to [`crate::attempt::decide_attempt`], and carries the
//! result out through [`crate::attempt_outcome`] (and the model splice to the body). No rule lives
//! here.

use super::READ_PIECE;
use super::filter::{Wasm, reject};
use crate::attempt::decide_attempt;
use crate::attempt_outcome::{self, AttemptHost, AttemptOutcome};
use crate::handover::{ATTEMPTS_KEY, HANDOVER_KEY, decode_names};
use crate::model_rewrite::ModelRewrite;
use crate::policy::Policy;
use crate::rejection::Rejection;
use crate::wasm::metrics::Metrics;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

/// Where the chosen endpoint names its provider: `filter_metadata.llm_header_forward.provider`.
const ENDPOINT_PROVIDER: [&str; 5] =
    ["xds", "upstream_host_metadata", "filter_metadata", "llm_header_forward", "provider"];

pub(super) struct Upstream {
    pub(super) ready: Option<Rc<(Policy, Metrics)>>,
    /// Set when this attempt rewrites the model: the body is read up to the end of its value.
    pub(super) model: Option<ModelRewrite>,
    pub(super) read: usize,
    /// The client's `content-length`, if it sent one (set again after the splice).
    pub(super) original_length: Option<usize>,
}

impl Context for Upstream {}

impl HttpContext for Upstream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(ready) = self.ready.clone() else {
            return reject(None, Rejection::internal("the filter is not configured"));
        };
        let policy = &ready.0;
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(_) => return self.fail(Rejection::internal("cannot read the request headers")),
        };
        let handover = hostcalls::get_property(vec![HANDOVER_KEY]).ok().flatten();
        let endpoint = hostcalls::get_property(ENDPOINT_PROVIDER.to_vec()).ok().flatten();
        let earlier = hostcalls::get_property(vec![ATTEMPTS_KEY])
            .ok()
            .flatten()
            .and_then(|b| decode_names(&b))
            .unwrap_or_default();
        let attempt = decide_attempt(policy, handover.as_deref(), &headers, endpoint.as_deref(), &earlier);
        match attempt_outcome::carry_out(policy, attempt, &mut Wasm::new(Some(&ready))) {
            AttemptOutcome::Replied => Action::Pause,
            AttemptOutcome::Forwarded { model: Some(model), original_length } if !end_of_stream => {
                self.original_length = original_length;
                self.model = Some(ModelRewrite::new(model));
                Action::Pause
            }
            AttemptOutcome::Forwarded { .. } => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(rewrite) = self.model.as_mut() else { return Action::Continue };
        // Only the bytes up to the end of the model value are copied in, a bounded piece at a time.
        while !rewrite.found() && self.read < body_size {
            let piece = match hostcalls::get_buffer(
                BufferType::HttpRequestBody,
                self.read,
                READ_PIECE.min(body_size - self.read),
            ) {
                Ok(Some(piece)) if !piece.is_empty() => piece,
                Ok(_) => break,
                Err(_) => return self.fail(Rejection::internal("cannot read the request body")),
            };
            self.read += piece.len();
            rewrite.feed(&piece);
        }
        // Spliced as soon as the value's end is known: a body that ends with trailers never
        // brings `end_of_stream` here.
        if rewrite.found() {
            return self.splice();
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.fail(attempt_outcome::no_model_to_replace())
    }

    /// Trailers end a body whose model was never found: refused like a body that ends without one.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.model.is_none() {
            return Action::Continue;
        }
        self.fail(attempt_outcome::no_model_to_replace())
    }
}

impl Upstream {
    /// Swaps the body's prefix up to the end of the model's value (Envoy holds the body read so
    /// far) and lets the rest flow on, with `content-length` fixed when the client sent one.
    fn splice(&mut self) -> Action {
        let Some(splice) = self.model.take().and_then(ModelRewrite::splice) else {
            return self.fail(attempt_outcome::no_model_to_replace());
        };
        if hostcalls::set_buffer(BufferType::HttpRequestBody, 0, splice.drain, &splice.replacement).is_err() {
            return self.fail(Rejection::internal("cannot rewrite the request body"));
        }
        if let Some(length) = self.original_length {
            let length = splice.new_length(length).to_string();
            if hostcalls::set_map_value(MapType::HttpRequestHeaders, "content-length", Some(&length)).is_err() {
                return self.fail(Rejection::internal("cannot set content-length"));
            }
        }
        Action::Continue
    }

    fn fail(&mut self, rejection: Rejection) -> Action {
        self.model = None;
        if let Some(ready) = self.ready.as_deref() {
            attempt_outcome::refuse(&ready.0, rejection, &mut Wasm::new(Some(ready)));
            return Action::Pause;
        }
        reject(None, rejection)
    }
}

impl AttemptHost for Wasm<'_> {
    fn remove_header(&mut self, name: &str) -> bool {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).is_ok()
    }

    fn set_header(&mut self, name: &str, value: &[u8]) -> bool {
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value)).is_ok()
    }

    fn add_header(&mut self, name: &str, value: &[u8]) -> bool {
        hostcalls::add_map_value_bytes(MapType::HttpRequestHeaders, name, value).is_ok()
    }

    /// Each attempt's record replaces the last one's (filter state written through `set_property`
    /// reaches the next attempt).
    fn record_attempt(&mut self, names: &[u8]) -> bool {
        hostcalls::set_property(vec![ATTEMPTS_KEY], Some(names)).is_ok()
    }
}
