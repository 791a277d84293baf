//! The floor for `make bench`. With no configuration it does nothing: every callback takes the SDK
//! default (continue), which is the cost of V8 and the callbacks alone. For diagnosing where a
//! filter's cost goes, the plugin configuration may name one host interaction to add:
//!   "pause"   - hold the headers until the body has ended (what reading the model needs)
//!   "read"    - "pause", and copy each new body chunk into the VM once
//!   "headers" - read all request headers, set six, remove two, clear the route cache
//!   "get"     - only read all request headers
//!   "set"     - only set six headers
//!   "clear"   - only clear the route cache
//!   "pairs"   - like "headers", but write the whole header map back in one call
//!   "add"     - only add six headers (no replace)
//! and, for the failure tests, "crash": panic (killing the VM) on a request with `x-crash`, and hold
//! every other request with a body until the body ends (as the filter does while it reads the model).
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(Mode::Nothing)) });
}}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nothing,
    Pause,
    Read,
    Headers,
    Get,
    Set,
    Clear,
    Pairs,
    Add,
    Crash,
}

struct Root(Mode);
impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten();
        self.0 = match config.as_deref() {
            Some(b"pause") => Mode::Pause,
            Some(b"read") => Mode::Read,
            Some(b"headers") => Mode::Headers,
            Some(b"get") => Mode::Get,
            Some(b"set") => Mode::Set,
            Some(b"clear") => Mode::Clear,
            Some(b"pairs") => Mode::Pairs,
            Some(b"add") => Mode::Add,
            Some(b"crash") => Mode::Crash,
            _ => Mode::Nothing,
        };
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop { mode: self.0, seen: 0 }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    mode: Mode,
    seen: usize,
}
impl Context for Noop {}
impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        match self.mode {
            Mode::Nothing => Action::Continue,
            Mode::Pause | Mode::Read if !end_of_stream => Action::Pause,
            Mode::Pause | Mode::Read => Action::Continue,
            Mode::Headers => {
                let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
                for (name, _) in headers.iter().take(2).filter(|(n, _)| n.starts_with("x-llamastack")) {
                    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
                }
                for name in ["authorization", "x-tenant-id", "x-maas-subscription", "x-maas-region", "x-llm-provider", "x-llm-model"] {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some("bench-value"));
                }
                let _ = hostcalls::call_foreign_function("clear_route_cache", None);
                Action::Continue
            }
            Mode::Get => {
                let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
                Action::Continue
            }
            Mode::Set => {
                for name in ["authorization", "x-tenant-id", "x-maas-subscription", "x-maas-region", "x-llm-provider", "x-llm-model"] {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some("bench-value"));
                }
                Action::Continue
            }
            Mode::Pairs => {
                let mut headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
                headers.retain(|(n, _)| !n.starts_with("x-llamastack"));
                for name in ["authorization", "x-tenant-id", "x-maas-subscription", "x-maas-region", "x-llm-provider", "x-llm-model"] {
                    headers.push((name.to_string(), b"bench-value".to_vec()));
                }
                let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
                let _ = hostcalls::set_map_bytes(MapType::HttpRequestHeaders, pairs);
                let _ = hostcalls::call_foreign_function("clear_route_cache", None);
                Action::Continue
            }
            Mode::Add => {
                for name in ["authorization", "x-tenant-id", "x-maas-subscription", "x-maas-region", "x-llm-provider", "x-llm-model"] {
                    let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, "bench-value");
                }
                Action::Continue
            }
            Mode::Crash => {
                if hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-crash").ok().flatten().is_some() {
                    panic!("crash requested by the test");
                }
                if end_of_stream { Action::Continue } else { Action::Pause }
            }
            Mode::Clear => {
                let _ = hostcalls::call_foreign_function("clear_route_cache", None);
                Action::Continue
            }
        }
    }
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.mode == Mode::Read && body_size > self.seen {
            let chunk = hostcalls::get_buffer(BufferType::HttpRequestBody, self.seen, body_size - self.seen);
            self.seen += chunk.ok().flatten().map_or(0, |c| c.len());
        }
        match self.mode {
            Mode::Pause | Mode::Read | Mode::Crash if !end_of_stream => Action::Pause,
            _ => Action::Continue,
        }
    }
}
