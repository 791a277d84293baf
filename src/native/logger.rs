//! The `log` crate's records (the core logs through it) written by Envoy's `dynamic_modules`
//! logger, whose level (`--component-log-level dynamic_modules:debug`, admin `/logging`) decides
//! what is written; nothing below it is even formatted. Never header values (the core's rule).

use super::abi;

struct EnvoyLog;

static LOGGER: EnvoyLog = EnvoyLog;

/// Envoy's numbering: Trace 0, Debug 1, Info 2, Warn 3, Error 4.
fn envoy_level(level: log::Level) -> i32 {
    match level {
        log::Level::Trace => 0,
        log::Level::Debug => 1,
        log::Level::Info => 2,
        log::Level::Warn => 3,
        log::Level::Error => 4,
    }
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        abi::log_enabled(envoy_level(metadata.level()))
    }

    fn log(&self, record: &log::Record) {
        let level = envoy_level(record.level());
        if abi::log_enabled(level) {
            abi::log(level, &format!("llm-header-forward: {}", record.args()));
        }
    }

    fn flush(&self) {}
}

/// Called once when Envoy loads the module: the logger, and a panic hook that logs where a panic
/// happened (the guard in every hook turns it into a 500).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        log::error!("panic at {at}");
    }));
}
