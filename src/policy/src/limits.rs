//! Request size limits (AS-3 `request_limits`).
//!
//! Header size is the sum of name and value lengths of every header the filter sees,
//! pseudo-headers included (so a long `:path` counts). Body size is checked against
//! `content-length` up front and against the running count of received bytes, so chunked and
//! length-less bodies are cut off as soon as they pass the limit; exactly the limit passes.

use crate::config::RequestLimits;
use crate::reply::Denial;

pub fn header_bytes<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> u64 {
    headers
        .into_iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

impl RequestLimits {
    pub fn check_headers(&self, total: u64) -> Result<(), Denial> {
        if total > self.max_header_size_bytes {
            return Err(Denial::HeadersTooLarge {
                limit: self.max_header_size_bytes,
            });
        }
        Ok(())
    }

    /// `content-length`, when present. A value that is not a decimal number is left to Envoy's
    /// codec, which refuses it before the filter runs.
    pub fn check_content_length(&self, value: Option<&str>) -> Result<(), Denial> {
        match value.map(str::trim).and_then(|v| v.parse::<u64>().ok()) {
            Some(n) if n > self.max_request_size_bytes => Err(Denial::BodyTooLarge {
                limit: self.max_request_size_bytes,
            }),
            _ => Ok(()),
        }
    }

    /// `received` is the total number of body bytes seen so far.
    pub fn check_body(&self, received: u64) -> Result<(), Denial> {
        if received > self.max_request_size_bytes {
            return Err(Denial::BodyTooLarge {
                limit: self.max_request_size_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive() {
        let l = RequestLimits {
            max_request_size_bytes: 10,
            max_header_size_bytes: 20,
        };
        assert!(l.check_body(10).is_ok());
        assert!(l.check_body(11).is_err());
        assert!(l.check_content_length(Some("10")).is_ok());
        assert!(l.check_content_length(Some(" 11 ")).is_err());
        assert!(l.check_content_length(None).is_ok());
        assert!(l.check_headers(20).is_ok());
        assert!(l.check_headers(21).is_err());
        assert_eq!(
            header_bytes([("ab", &b"cde"[..]), (":path", &b"/"[..])]),
            11
        );
    }
}
