//! Thin, panic-free wrappers over proxy-wasm host calls. The SDK's trait helpers unwrap host
//! results (a failed call would panic and kill the VM); these return `Result`s instead.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

pub type HostResult<T> = Result<T, Status>;

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn now_seconds() -> i64 {
    i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX)
}

pub fn plugin_configuration() -> HostResult<Vec<u8>> {
    Ok(hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)?.unwrap_or_default())
}

pub fn request_headers() -> HostResult<Vec<(String, Vec<u8>)>> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
}

pub fn set_request_header(name: &str, value: Option<&str>) -> HostResult<()> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
}

pub fn add_response_header(name: &str, value: &str) -> HostResult<()> {
    hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value)
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

pub fn property_string(path: &[&str]) -> Option<String> {
    property(path)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

/// Envoy encodes boolean properties as one byte.
pub fn property_bool(path: &[&str]) -> bool {
    matches!(property(path).as_deref(), Some([1]) | Some(b"true"))
}

pub fn send_reply(status: u32, headers: &[(String, String)], body: &str) -> HostResult<()> {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::send_http_response(status, h, Some(body.as_bytes()))
}

pub fn resume_request() -> HostResult<()> {
    hostcalls::resume_http_request()
}

pub fn set_effective_context(id: u32) -> HostResult<()> {
    hostcalls::set_effective_context(id)
}

pub fn set_tick_period(ms: u64) -> HostResult<()> {
    hostcalls::set_tick_period(Duration::from_millis(ms))
}

pub fn dispatch_get(
    cluster: &str,
    authority: &str,
    path: &str,
    timeout_ms: u64,
) -> HostResult<u32> {
    hostcalls::dispatch_http_call(
        cluster,
        vec![
            (":method", "GET"),
            (":path", path),
            (":authority", authority),
            ("accept", "application/json"),
        ],
        None,
        vec![],
        Duration::from_millis(timeout_ms),
    )
}

pub fn call_response_status() -> Option<u32> {
    hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
}

pub fn call_response_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn define_counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

pub fn increment(id: u32) {
    let _ = hostcalls::increment_metric(id, 1);
}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Whether Envoy would print a line at `level` (checked before a line is formatted).
pub fn log_enabled(level: LogLevel) -> bool {
    hostcalls::get_log_level().map_or(true, |current| level as u32 >= current as u32)
}
