//! The upstream role's glue in the dynamic module (SPEC §8): Envoy runs it once per attempt, in the
//! chain's cluster `http_filters` before `upstream_codec`. It reads the handover, the chosen
//! endpoint's provider and the earlier attempts' records from Envoy, hands them to
//! [`crate::attempt::decide_attempt`], and carries the result out through
//! [`crate::attempt_outcome`], like the wasm glue. No rule lives here.
//!
//! The model rewrite never holds the body in Envoy: [`PieceRewrite`] decides what becomes of each
//! piece (drained and kept up to the end of the model's value, or replaced by the rewritten prefix
//! plus the rest of the piece), and everything after flows on.

use super::abi::{Body, Stream};
use super::filter::{BodyStatus, Config, HeadersStatus, Native};
use crate::attempt::decide_attempt;
use crate::attempt_outcome::{self, AttemptHost, AttemptOutcome};
use crate::handover::{ATTEMPTS_KEY, HANDOVER_KEY, decode_names};
use crate::model_rewrite::{Piece, PieceRewrite};
use crate::outcome;
use crate::rejection::Rejection;

/// Where the chosen endpoint names its provider: `filter_metadata.llm_header_forward.provider`.
const ENDPOINT_NAMESPACE: &str = "llm_header_forward";
const ENDPOINT_KEY: &str = "provider";

#[derive(Default)]
pub struct Upstream {
    /// Set while this attempt's body still needs its model replaced.
    model: Option<PieceRewrite>,
    replied: bool,
}

impl Upstream {
    pub fn on_request_headers(&mut self, config: &Config, stream: &mut Stream, end_of_stream: bool) -> HeadersStatus {
        let policy = &config.policy;
        let mut headers = Vec::new();
        if !stream.request_headers(false, &mut headers) {
            return self.refuse(config, stream, Rejection::internal("cannot read the request headers"));
        }
        #[cfg(feature = "native-panic-test")]
        super::filter::panic_on_request(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())), b"upstream");
        let handover = stream.filter_state(HANDOVER_KEY);
        let endpoint = stream.endpoint_metadata(ENDPOINT_NAMESPACE, ENDPOINT_KEY);
        let earlier = earlier_attempts(stream);
        let attempt = decide_attempt(policy, handover.as_deref(), &headers, endpoint.as_deref(), &earlier);
        match attempt_outcome::carry_out(policy, attempt, &mut Native::new(config, stream, &mut self.replied)) {
            AttemptOutcome::Replied => HeadersStatus::Stop,
            AttemptOutcome::Forwarded { model: Some(model), original_length } if !end_of_stream => {
                self.model = Some(PieceRewrite::new(model, original_length));
                // Held until the body piece holding the model's value is rewritten.
                HeadersStatus::Stop
            }
            AttemptOutcome::Forwarded { .. } => HeadersStatus::Continue,
        }
    }

    pub fn on_request_body(&mut self, config: &Config, stream: &mut Stream, end_of_stream: bool) -> BodyStatus {
        if self.replied {
            return BodyStatus::Replied;
        }
        let Some(rewrite) = self.model.as_mut() else { return BodyStatus::Continue };
        let Some(piece) = stream.request_body(Body::Received) else {
            self.refuse(config, stream, Rejection::internal("cannot read the request body"));
            return BodyStatus::Replied;
        };
        let next = rewrite.piece(&piece, end_of_stream);
        drop(piece);
        match next {
            Piece::NoModel => {
                self.refuse(config, stream, attempt_outcome::no_model_to_replace());
                BodyStatus::Replied
            }
            // Kept by the rewrite: Envoy need not buffer it.
            Piece::Drain if stream.replace_received_body(&[]) => BodyStatus::Buffer,
            Piece::Drain => {
                self.refuse(config, stream, Rejection::internal("cannot drain the request body"));
                BodyStatus::Replied
            }
            Piece::Replace { bytes, content_length } => {
                self.model = None;
                if !stream.replace_received_body(&bytes) {
                    self.refuse(config, stream, Rejection::internal("cannot rewrite the request body"));
                    return BodyStatus::Replied;
                }
                let length = content_length.map(|l| l.to_string());
                if let Some(length) = length
                    && !stream.put_request_header("content-length", length.as_bytes(), true)
                {
                    self.refuse(config, stream, Rejection::internal("cannot set content-length"));
                    return BodyStatus::Replied;
                }
                BodyStatus::Continue
            }
        }
    }

    /// Trailers end a body whose model was never found: refused like a body that ends without one.
    pub fn on_request_trailers(&mut self, config: &Config, stream: &mut Stream) -> HeadersStatus {
        if self.replied || self.model.is_none() {
            return HeadersStatus::Continue;
        }
        self.model = None;
        self.refuse(config, stream, attempt_outcome::no_model_to_replace())
    }

    /// A hook panicked: answer 500 `internal_error` unless a reply already went out.
    pub fn on_panic(&mut self, config: &Config, stream: &mut Stream) {
        log::error!("the native filter's upstream role panicked: answering 500 internal_error");
        self.model = None;
        if !self.replied {
            outcome::reject(
                Some(&config.policy),
                Rejection::internal("internal error in the filter"),
                &mut self.host(config, stream),
            );
        }
    }

    fn host<'s, 'a>(&'s mut self, config: &'s Config, stream: &'s mut Stream<'a>) -> Native<'s, 'a> {
        Native::new(config, stream, &mut self.replied)
    }

    fn refuse(&mut self, config: &Config, stream: &mut Stream, rejection: Rejection) -> HeadersStatus {
        self.model = None;
        attempt_outcome::refuse(&config.policy, rejection, &mut self.host(config, stream));
        HeadersStatus::Stop
    }
}

/// The header names the attempts before this one set (their record in filter state).
fn earlier_attempts(stream: &Stream) -> Vec<String> {
    stream.filter_state(ATTEMPTS_KEY).and_then(|b| decode_names(&b)).unwrap_or_default()
}

impl AttemptHost for Native<'_, '_> {
    fn remove_header(&mut self, name: &str) -> bool {
        self.stream.set_request_header(name, None)
    }

    fn set_header(&mut self, name: &str, value: &[u8]) -> bool {
        self.stream.put_request_header(name, value, true)
    }

    fn add_header(&mut self, name: &str, value: &[u8]) -> bool {
        self.stream.put_request_header(name, value, false)
    }

    /// One key for every attempt, as in the wasm build: a later attempt's record replaces the
    /// earlier one's (verified with Envoy 1.40: the second attempt reads the first one's record,
    /// and its own write then reads back, without an `envoy_bug`).
    fn record_attempt(&mut self, names: &[u8]) -> bool {
        self.stream.set_filter_state(ATTEMPTS_KEY, names)
    }
}
