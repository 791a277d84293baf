//! The native floor for `make bench`: every hook Envoy 1.40 resolves (see src/native/abi.rs of
//! llm-header-forward for the ABI), each doing nothing and continuing. Calls no Envoy callback, so
//! it needs no declarations; a panic cannot happen (nothing here can fail).
use std::ffi::{c_char, c_void};

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

/// Any non-NULL pointer accepts the configuration; it is never dereferenced.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(_: *mut c_void) -> *const c_void {
    std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(_: *mut c_void, _: *mut c_void) -> *mut c_void {
    std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
}

macro_rules! status_hooks {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(_: *mut c_void, _: *mut c_void) -> i32 {
            0 // Continue
        }
    )*};
}

macro_rules! void_hooks {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(_: *mut c_void) {}
    )*};
}

status_hooks!(
    envoy_dynamic_module_on_http_filter_request_headers,
    envoy_dynamic_module_on_http_filter_request_body,
    envoy_dynamic_module_on_http_filter_request_trailers,
    envoy_dynamic_module_on_http_filter_response_headers,
    envoy_dynamic_module_on_http_filter_response_body,
    envoy_dynamic_module_on_http_filter_response_trailers
);

void_hooks!(
    envoy_dynamic_module_on_http_filter_config_destroy,
    envoy_dynamic_module_on_http_filter_destroy,
    envoy_dynamic_module_on_http_filter_stream_complete,
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark,
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark,
    envoy_dynamic_module_on_http_filter_http_callout_done,
    envoy_dynamic_module_on_http_filter_http_stream_headers,
    envoy_dynamic_module_on_http_filter_http_stream_data,
    envoy_dynamic_module_on_http_filter_http_stream_trailers,
    envoy_dynamic_module_on_http_filter_http_stream_complete,
    envoy_dynamic_module_on_http_filter_http_stream_reset,
    envoy_dynamic_module_on_http_filter_scheduled
);
