//! Host-independent policy logic of llm-api-guard. Nothing here depends on proxy-wasm: the
//! filter crate moves bytes between Envoy and these functions, and the CLI uses the same code
//! offline. Time is always passed in (see [`time`]); secrets come through
//! [`config::Environment`].
#![forbid(unsafe_code)]

pub mod apikey;
pub mod auth;
pub mod config;
pub mod jwt;
pub mod limits;
pub mod mtls;
pub mod remote;
pub mod reply;
pub mod time;
