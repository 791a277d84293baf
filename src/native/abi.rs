//! The Envoy 1.40.0 dynamic-module ABI (`v0.2.0`), declared by hand: no SDK for this version exists
//! on crates.io. Every declaration below was checked against the `envoy` binary that `make setup`
//! installs (`nm -D --defined-only` for the names, disassembly for the argument registers) and by
//! behaviour; see /work/shared/notes/envoy-1.40-dynamic-modules.md for what was verified.
//!
//! All of the native build's `unsafe` lives in this file. Envoy's raw pointers never leave it: the
//! hooks wrap them in [`Stream`] and [`ConfigHandle`], whose lifetimes end with the hook call, and
//! every hook runs the glue under `catch_unwind` (a panic unwinding into Envoy aborts the process).
//!
//! A 16-byte `{ptr, length}` struct passed by value takes two integer registers under the x86-64
//! System V ABI, exactly like the two separate arguments older copies of `abi.h` declared.

use super::filter::{BodyStatus, Config, HeadersStatus, StreamFilter};
use std::ffi::{CStr, c_char, c_void};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The ABI version Envoy 1.40.0 expects from `envoy_dynamic_module_on_program_init` (another string
/// only makes Envoy log a warning, and the module is then unsupported).
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// `envoy_dynamic_module_type_envoy_buffer`: a view into memory Envoy owns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: memory the module owns (Envoy copies it during the call).
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer { ptr: bytes.as_ptr().cast(), length: bytes.len() }
    }

    const NULL: ModuleBuffer = ModuleBuffer { ptr: std::ptr::null(), length: 0 };
}

/// `envoy_dynamic_module_type_envoy_http_header` and `..._module_http_header` (same layout).
#[repr(C)]
#[derive(Clone, Copy)]
struct HttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

// `envoy_dynamic_module_type_http_header_type` (a C enum: `int`).
const REQUEST_HEADER: i32 = 0;
const REQUEST_TRAILER: i32 = 1;
const RESPONSE_HEADER: i32 = 2;
// `envoy_dynamic_module_type_http_body_type`.
const RECEIVED_REQUEST_BODY: i32 = 0;
const BUFFERED_REQUEST_BODY: i32 = 1;
// `envoy_dynamic_module_type_metrics_result`.
const METRICS_SUCCESS: i32 = 0;
// `envoy_dynamic_module_type_metadata_source`: Dynamic 0, Route 1, Cluster 2, Host 3 (the chosen
// endpoint, `LbEndpoint.metadata`), HostLocality 4. Checked in 1.40's jump table: of the five cases
// only 3 and 4 go through `upstreamInfo()->upstreamHost()`, and 3 reads the host's own metadata.
const METADATA_SOURCE_HOST: i32 = 3;

// Callbacks: defined by the `envoy` executable, resolved when Envoy dlopens the module.
unsafe extern "C" {
    fn envoy_dynamic_module_callback_http_get_headers_size(filter_envoy: *mut c_void, header_type: i32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy: *mut c_void,
        header_type: i32,
        out: *mut HttpHeader,
    ) -> bool;
    /// A NULL `value.ptr` removes every value of `key`; otherwise every value is replaced.
    fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy: *mut c_void,
        header_type: i32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_clear_route_cache(filter_envoy: *mut c_void);
    /// Two arguments in 1.40 (an older `abi.h` had three).
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter_envoy: *mut c_void, body_type: i32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter_envoy: *mut c_void,
        body_type: i32,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter_envoy: *mut c_void) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy: *mut c_void,
        status: u32,
        headers: *const HttpHeader,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    /// rdi config, rsi/rdx name, rcx label names, r8 their count, r9 the id out; returns a
    /// `metrics_result` (3 = Frozen once configuration is over).
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config_envoy: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_len: usize,
        id: *mut usize,
    ) -> i32;
    /// rdi filter, rsi id (1-based), rdx label values, rcx their count, r8 the increment.
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> i32;
    /// rdi filter, esi header type, rdx/rcx key, r8/r9 value (like `set_header`): adds one value.
    fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy: *mut c_void,
        header_type: i32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// rdi filter, rsi/rdx key, rcx/r8 value. Stores the bytes in the stream's filter state, which
    /// the upstream filters of every attempt share with the downstream filters (verified: the
    /// listener's write is read by every attempt, an attempt's write by the next one, and a later
    /// write of the same key replaces the value without an `envoy_bug`).
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter_envoy: *mut c_void,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// rdi filter, rsi/rdx key, rcx the view out (Envoy writes `{ptr, length}` there).
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter_envoy: *mut c_void,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
    ) -> bool;
    /// rdi filter, esi metadata source, rdx/rcx namespace, r8/r9 key, the view out on the stack
    /// (seventh eightbyte). False unless the value exists and is a string.
    fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter_envoy: *mut c_void,
        source: i32,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
    ) -> bool;
    /// rdi filter, esi body type, rdx bytes: drains up to that many from the front.
    fn envoy_dynamic_module_callback_http_drain_body(filter_envoy: *mut c_void, body_type: i32, n: usize) -> bool;
    /// rdi filter, esi body type, rdx/rcx data (copied by Envoy).
    fn envoy_dynamic_module_callback_http_append_body(
        filter_envoy: *mut c_void,
        body_type: i32,
        data: ModuleBuffer,
    ) -> bool;
    /// Level: Trace 0, Debug 1, Info 2, Warn 3, Error 4, Critical 5; Envoy's `dynamic_modules` logger.
    fn envoy_dynamic_module_callback_log(level: i32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: i32) -> bool;
}

/// Writes a log line through Envoy's `dynamic_modules` logger.
pub fn log(level: i32, message: &str) {
    // SAFETY: the buffer points at `message`, alive for the call; Envoy copies it before returning.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// Whether Envoy's `dynamic_modules` logger writes `level` (follows `/logging` at run time).
pub fn log_enabled(level: i32) -> bool {
    // SAFETY: a plain value in, a bool out; no pointers.
    unsafe { envoy_dynamic_module_callback_log_enabled(level) }
}

/// The filter configuration Envoy is creating, for the duration of `config_new`.
pub struct ConfigHandle<'a> {
    ptr: *mut c_void,
    _call: PhantomData<&'a mut ()>,
}

impl ConfigHandle<'_> {
    /// Defines a counter without labels; its id, or `None` if Envoy refused.
    pub fn define_counter(&mut self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: `ptr` is Envoy's config pointer for this `config_new` call (the only place a
        // ConfigHandle is made); the name is copied by Envoy; no labels (NULL, 0); `id` is a live
        // local for the out-parameter.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (result == METRICS_SUCCESS).then_some(id)
    }
}

/// One HTTP stream, for the duration of one hook call.
pub struct Stream<'a> {
    ptr: *mut c_void,
    _call: PhantomData<&'a mut ()>,
}

/// Which request body buffer to read.
#[derive(Clone, Copy)]
pub enum Body {
    /// What Envoy buffered before this call (we asked it to, by pausing).
    Buffered,
    /// What arrived with this call.
    Received,
}

impl Stream<'_> {
    /// Copies the request headers (`trailers`: the request trailers) into `out`.
    pub fn request_headers(&self, trailers: bool, out: &mut Vec<(String, Vec<u8>)>) -> bool {
        self.headers(if trailers { REQUEST_TRAILER } else { REQUEST_HEADER }, out)
    }

    /// Copies the response headers into `out`.
    pub fn response_headers(&self, out: &mut Vec<(String, Vec<u8>)>) -> bool {
        self.headers(RESPONSE_HEADER, out)
    }

    /// Copies the header map `kind` into `out`.
    fn headers(&self, kind: i32, out: &mut Vec<(String, Vec<u8>)>) -> bool {
        let Some(views) = self.header_views(kind) else { return false };
        views.copy_into(out);
        true
    }

    /// The request headers as views into Envoy's map, without copying them.
    pub fn request_header_views(&self) -> Option<HeaderViews<'_>> {
        self.header_views(REQUEST_HEADER)
    }

    fn header_views(&self, kind: i32) -> Option<HeaderViews<'_>> {
        // SAFETY: `ptr` is the stream of the running hook; `views` has exactly the size Envoy
        // reported, so Envoy writes within it.
        let views = unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(self.ptr, kind);
            let mut views = vec![
                HttpHeader {
                    key_ptr: std::ptr::null(),
                    key_length: 0,
                    value_ptr: std::ptr::null(),
                    value_length: 0
                };
                n
            ];
            if n > 0 && !envoy_dynamic_module_callback_http_get_headers(self.ptr, kind, views.as_mut_ptr()) {
                return None;
            }
            views
        };
        Some(HeaderViews { views, _stream: PhantomData })
    }

    /// Removes every value of a request trailer.
    pub fn remove_request_trailer(&mut self, name: &str) -> bool {
        // SAFETY: `ptr` is the stream of the running hook; the name is alive for the call and
        // copied by Envoy; a NULL value removes.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                REQUEST_TRAILER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::NULL,
            )
        }
    }

    /// Sets (`Some`) or removes (`None`) a request header, every value of it.
    pub fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: `ptr` is the stream of the running hook; both buffers are alive for the call and
        // copied by Envoy.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        }
    }

    /// Sets (`replace`) or adds a value of a request header, as bytes.
    pub fn put_request_header(&mut self, name: &str, value: &[u8], replace: bool) -> bool {
        let (key, value) = (ModuleBuffer::of(name.as_bytes()), ModuleBuffer::of(value));
        // SAFETY: `ptr` is the stream of the running hook; both buffers are alive for the call and
        // copied by Envoy.
        unsafe {
            if replace {
                envoy_dynamic_module_callback_http_set_header(self.ptr, REQUEST_HEADER, key, value)
            } else {
                envoy_dynamic_module_callback_http_add_header(self.ptr, REQUEST_HEADER, key, value)
            }
        }
    }

    /// Stores `value` under `key` in the stream's filter state (replacing an earlier value).
    pub fn set_filter_state(&mut self, key: &str, value: &[u8]) -> bool {
        // SAFETY: `ptr` is the stream of the running hook; both buffers are alive for the call and
        // copied by Envoy into the filter state.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.ptr,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    /// A copy of the filter-state value under `key`, if there is one.
    pub fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: `ptr` is the stream of the running hook; the key is alive for the call; `out` is
        // a live local Envoy writes one view into.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.ptr,
                ModuleBuffer::of(key.as_bytes()),
                &mut out,
            )
        };
        // SAFETY: the view points into the filter state's string, which nothing changes during
        // this `&self` borrow; it is copied before the borrow ends.
        found.then(|| unsafe { bytes(out.ptr, out.length) }.to_vec())
    }

    /// A copy of the string value `filter_metadata[namespace][key]` of the endpoint this (upstream)
    /// stream was sent to, if there is one.
    pub fn endpoint_metadata(&self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: `ptr` is the stream of the running hook; namespace and key are alive for the
        // call; `out` is a live local Envoy writes one view into.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_metadata_string(
                self.ptr,
                METADATA_SOURCE_HOST,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                &mut out,
            )
        };
        // SAFETY: the view points into the host's metadata, which outlives the hook call; it is
        // copied before this `&self` borrow ends.
        found.then(|| unsafe { bytes(out.ptr, out.length) }.to_vec())
    }

    /// Replaces the request body piece this hook received with `with`.
    pub fn replace_received_body(&mut self, with: &[u8]) -> bool {
        // SAFETY: `ptr` is the stream of the running hook; `usize::MAX` drains the whole piece
        // (Envoy drains at most its length); `with` is alive for the call and copied by Envoy.
        unsafe {
            envoy_dynamic_module_callback_http_drain_body(self.ptr, RECEIVED_REQUEST_BODY, usize::MAX)
                && envoy_dynamic_module_callback_http_append_body(
                    self.ptr,
                    RECEIVED_REQUEST_BODY,
                    ModuleBuffer::of(with),
                )
        }
    }

    pub fn clear_route_cache(&mut self) {
        // SAFETY: `ptr` is the stream of the running hook.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.ptr) }
    }

    /// True when Envoy hands its buffered body itself to this call: then [`Body::Received`] is the
    /// whole buffered body and [`Body::Buffered`] must not be read as well.
    pub fn received_is_buffered(&self) -> bool {
        // SAFETY: `ptr` is the stream of the running hook.
        unsafe { envoy_dynamic_module_callback_http_received_buffered_request_body(self.ptr) }
    }

    /// The slices of a request body buffer, in order, as views into Envoy's memory (no copy).
    /// `None` if Envoy could not give them.
    pub fn request_body(&self, which: Body) -> Option<Vec<&[u8]>> {
        let kind = match which {
            Body::Buffered => BUFFERED_REQUEST_BODY,
            Body::Received => RECEIVED_REQUEST_BODY,
        };
        // SAFETY: `ptr` is the stream of the running hook; `views` has exactly the size Envoy
        // reported.
        let views = unsafe {
            let n = envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, kind);
            if n == 0 {
                return Some(Vec::new());
            }
            let mut views = vec![EnvoyBuffer { ptr: std::ptr::null(), length: 0 }; n];
            if !envoy_dynamic_module_callback_http_get_body_chunks(self.ptr, kind, views.as_mut_ptr()) {
                return None;
            }
            views
        };
        // SAFETY: each view points into Envoy's body buffer, which nothing changes while this
        // `&self` borrow lives (the filter only changes headers, through `&mut self`), and which
        // outlives the hook call the borrow is confined to.
        Some(views.iter().map(|v| unsafe { bytes(v.ptr, v.length) }).collect())
    }

    /// Answers the client locally with `status`, `headers` and `body`.
    pub fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &str, details: &str) {
        let headers: Vec<HttpHeader> = headers
            .iter()
            .map(|(k, v)| HttpHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: `ptr` is the stream of the running hook; the header array and both buffers
        // point at memory alive for the call, which Envoy copies.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                status,
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body.as_bytes()),
                ModuleBuffer::of(details.as_bytes()),
            )
        }
    }

    /// Adds `by` to a counter defined in `config_new`.
    pub fn increment_counter(&mut self, id: usize, by: u64) -> bool {
        // SAFETY: `ptr` is the stream of the running hook, created from the config that defined
        // `id`; no labels (NULL, 0).
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(self.ptr, id, std::ptr::null(), 0, by)
                == METRICS_SUCCESS
        }
    }
}

/// A header map as views into Envoy's memory. It borrows the [`Stream`] it came from, so no header
/// can change (every change takes `&mut Stream`) while it lives: the views stay valid.
pub struct HeaderViews<'s> {
    views: Vec<HttpHeader>,
    _stream: PhantomData<&'s ()>,
}

impl HeaderViews<'_> {
    /// Every header, in Envoy's order, as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.views.iter().map(|h| {
            // SAFETY: the views point into Envoy's header map, which cannot change while the
            // `&Stream` borrow this value holds lives (see the type), and outlives the hook call the
            // borrow is confined to.
            unsafe { (bytes(h.key_ptr, h.key_length), bytes(h.value_ptr, h.value_length)) }
        })
    }

    /// Copies every header into `out`.
    pub fn copy_into(&self, out: &mut Vec<(String, Vec<u8>)>) {
        out.clear();
        out.reserve(self.views.len());
        out.extend(self.iter().map(|(key, value)| (String::from_utf8_lossy(key).into_owned(), value.to_vec())));
    }

    /// The value of the first header called `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes())).map(|(_, value)| value)
    }
}

/// A byte slice over memory Envoy owns.
///
/// SAFETY (caller): `ptr` is NULL with `len` 0, or points at `len` readable bytes that stay valid and
/// unchanged for the returned lifetime.
unsafe fn bytes<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: as the caller promised.
    unsafe { std::slice::from_raw_parts(ptr.cast(), len) }
}

// ---------------------------------------------------------------------------------------------
// Hooks: Envoy resolves all of these when it loads the module and refuses the config if one is
// missing. Each runs the glue under `catch_unwind`.

/// What each filter instance owns: the glue's state and the configuration it was created from.
struct Instance {
    /// Owned by Envoy's filter config, which outlives every filter created from it (Envoy's
    /// filter holds a shared pointer to the config).
    config: *const Config,
    filter: StreamFilter,
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    // Nothing to fail here; a panic would only lose the logger.
    let _ = catch_unwind(super::logger::install);
    ABI_VERSION.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    // SAFETY: Envoy passes the view valid for the duration of this call; it is only read inside it.
    let json = unsafe { bytes(config.ptr, config.length) };
    let mut handle = ConfigHandle { ptr: config_envoy, _call: PhantomData };
    match catch_unwind(AssertUnwindSafe(|| Config::new(&mut handle, json))) {
        Ok(Some(config)) => Box::into_raw(Box::new(config)).cast_const().cast(),
        // NULL: Envoy refuses the filter configuration (the problems were logged).
        _ => std::ptr::null(),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config_module: *mut c_void) {
    if config_module.is_null() {
        return;
    }
    // SAFETY: `config_module` came from `Box::into_raw` in `config_new`, and Envoy destroys it once,
    // after every filter made from it.
    let config = unsafe { Box::from_raw(config_module.cast::<Config>()) };
    let _ = catch_unwind(AssertUnwindSafe(|| drop(config)));
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_module: *mut c_void,
    _filter_envoy: *mut c_void,
) -> *mut c_void {
    if config_module.is_null() {
        return std::ptr::null_mut();
    }
    let config: *const Config = config_module.cast_const().cast();
    // SAFETY: `config_module` is the Config this module returned from `config_new` (not NULL:
    // checked above), alive until `config_destroy`, which Envoy calls after every filter made from it.
    let role = catch_unwind(|| StreamFilter::new(unsafe { &*config }));
    match role {
        Ok(filter) => Box::into_raw(Box::new(Instance { config, filter })).cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module: *mut c_void) {
    if filter_module.is_null() {
        return;
    }
    // SAFETY: `filter_module` came from `Box::into_raw` in `filter_new`; Envoy destroys it once.
    let instance = unsafe { Box::from_raw(filter_module.cast::<Instance>()) };
    let _ = catch_unwind(AssertUnwindSafe(|| drop(instance)));
}

/// Runs one stream hook of the glue with its config, filter state and stream; on a panic, answers
/// 500 `internal_error` (unless a reply already went out) and returns `on_panic`.
fn request_hook<T>(
    filter_envoy: *mut c_void,
    filter_module: *mut c_void,
    on_panic: T,
    hook: impl FnOnce(&Config, &mut StreamFilter, &mut Stream) -> T,
) -> T {
    if filter_module.is_null() {
        return on_panic;
    }
    // SAFETY: `filter_module` is the Instance this module returned from `filter_new`, alive until
    // `destroy`; Envoy calls a stream's hooks one at a time on its worker thread, so this is the
    // only reference. Its `config` outlives it (see `Instance`).
    let instance = unsafe { &mut *filter_module.cast::<Instance>() };
    // SAFETY: as above: the config outlives the filter.
    let config = unsafe { &*instance.config };
    let mut stream = Stream { ptr: filter_envoy, _call: PhantomData };
    match catch_unwind(AssertUnwindSafe(|| hook(config, &mut instance.filter, &mut stream))) {
        Ok(status) => status,
        Err(_) => {
            let _ = catch_unwind(AssertUnwindSafe(|| instance.filter.on_panic(config, &mut stream)));
            on_panic
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: *mut c_void,
    filter_module: *mut c_void,
    end_of_stream: bool,
) -> i32 {
    headers_status(request_hook(filter_envoy, filter_module, HeadersStatus::Stop, |config, filter, stream| {
        filter.on_request_headers(config, stream, end_of_stream)
    }))
}

/// Envoy's request headers and trailers status: Continue 0, StopIteration 1.
fn headers_status(status: HeadersStatus) -> i32 {
    match status {
        HeadersStatus::Continue => 0,
        HeadersStatus::Stop => 1,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: *mut c_void,
    filter_module: *mut c_void,
    end_of_stream: bool,
) -> i32 {
    // Request body status: Continue 0, StopIterationAndBuffer 1, StopIterationNoBuffer 3.
    let status = request_hook(filter_envoy, filter_module, BodyStatus::Replied, |config, filter, stream| {
        filter.on_request_body(config, stream, end_of_stream)
    });
    match status {
        BodyStatus::Continue => 0,
        BodyStatus::Buffer => 1,
        BodyStatus::Replied => 3,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter_envoy: *mut c_void,
    filter_module: *mut c_void,
) -> i32 {
    headers_status(request_hook(filter_envoy, filter_module, HeadersStatus::Stop, |config, filter, stream| {
        filter.on_request_trailers(config, stream)
    }))
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: *mut c_void,
    filter_module: *mut c_void,
    _end_of_stream: bool,
) -> i32 {
    // Response headers status: Continue 0.
    request_hook(filter_envoy, filter_module, (), |config, filter, stream| filter.on_response_headers(config, stream));
    0
}

// The rest of the response and of the stream: nothing to do. The trailing arguments these hooks
// receive are not declared; under the System V ABI the caller owns them, so ignoring them is sound.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
    _end_of_stream: bool,
) -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) -> i32 {
    0
}

/// The stream is over (answered, or reset when the client went away): nothing can be answered
/// any more, so a panic here is only caught.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy: *mut c_void,
    filter_module: *mut c_void,
) {
    if filter_module.is_null() {
        return;
    }
    // SAFETY: as in `request_hook`: the Instance from `filter_new`, alive until `destroy` (Envoy
    // calls this hook before it), used by one hook at a time; its config outlives it.
    let instance = unsafe { &mut *filter_module.cast::<Instance>() };
    // SAFETY: as above.
    let config = unsafe { &*instance.config };
    let mut stream = Stream { ptr: filter_envoy, _call: PhantomData };
    let _ = catch_unwind(AssertUnwindSafe(|| instance.filter.on_stream_complete(config, &mut stream)));
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: *mut c_void,
    _filter_module: *mut c_void,
) {
}
