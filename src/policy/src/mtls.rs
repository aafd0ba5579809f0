//! mTLS client identities. Envoy performs the handshake and verifies chain and expiry against
//! its `validation_context`; the filter sees only the verified peer's identities and decides
//! whether they are allowed.

use regex_lite::Regex;

/// One allowed identity: an exact value, a DNS name with one leading `*.` label wildcard, or
/// (subjects only) a `regex:` pattern that must match the whole subject.
#[derive(Debug, Clone)]
pub enum IdentityPattern {
    Exact(String),
    /// `*.example.org`: stored as `.example.org`; matches exactly one extra leading label.
    DnsWildcard(String),
    Regex(Regex),
}

impl IdentityPattern {
    /// A SAN pattern (URI or DNS SAN): exact, or `*.` + DNS name.
    pub fn san(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err("must be a non-empty SAN without spaces".into());
        }
        if let Some(rest) = s.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') || rest.contains('/') || rest.contains(':') {
                return Err(
                    "a wildcard is allowed only as one leading `*.` label of a DNS name".into(),
                );
            }
            return Ok(IdentityPattern::DnsWildcard(format!(
                ".{}",
                rest.to_ascii_lowercase()
            )));
        }
        if s.contains('*') {
            return Err(
                "a wildcard is allowed only as one leading `*.` label of a DNS name".into(),
            );
        }
        Ok(IdentityPattern::Exact(s.to_string()))
    }

    /// A subject pattern: exact (as Envoy prints it, e.g. `CN=client,O=Example`) or
    /// `regex:<pattern>` matched against the whole subject.
    pub fn subject(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("regex:") {
            return Regex::new(&format!("^(?:{p})$"))
                .map(IdentityPattern::Regex)
                .map_err(|e| format!("invalid regex: {e}"));
        }
        if s.is_empty() {
            return Err("must be non-empty".into());
        }
        Ok(IdentityPattern::Exact(s.to_string()))
    }

    fn matches_san(&self, value: &str, is_dns: bool) -> bool {
        match self {
            IdentityPattern::Exact(e) if is_dns => e.eq_ignore_ascii_case(value),
            IdentityPattern::Exact(e) => e == value,
            IdentityPattern::DnsWildcard(suffix) => {
                let v = value.to_ascii_lowercase();
                is_dns
                    && v.len() > suffix.len()
                    && v.ends_with(suffix.as_str())
                    && !v[..v.len() - suffix.len()].contains('.')
            }
            IdentityPattern::Regex(r) => r.is_match(value),
        }
    }

    fn matches_subject(&self, value: &str) -> bool {
        match self {
            IdentityPattern::Exact(e) => e == value,
            IdentityPattern::Regex(r) => r.is_match(value),
            IdentityPattern::DnsWildcard(_) => false,
        }
    }
}

/// The verified client certificate, as Envoy reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub subject: Option<String>,
}

impl PeerCertificate {
    /// The identity forwarded upstream: the first URI SAN, else the first DNS SAN, else the subject.
    fn identity(&self) -> String {
        self.uri_sans
            .first()
            .or(self.dns_sans.first())
            .or(self.subject.as_ref())
            .cloned()
            .unwrap_or_default()
    }
}

/// The compiled mTLS method. Both lists empty: any certificate Envoy verified is allowed.
#[derive(Debug, Clone, Default)]
pub struct MtlsPolicy {
    pub allowed_sans: Vec<IdentityPattern>,
    pub allowed_subjects: Vec<IdentityPattern>,
}

/// Why a client certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtlsDenial {
    /// No verified client certificate on the connection.
    CertificateRequired,
    /// A verified certificate whose identities are not on the allowlists.
    NotAllowed { identity: String },
}

impl MtlsPolicy {
    /// Checks the peer certificate; `None` means the connection carries no verified one.
    /// Returns the identity that matched (or the certificate's identity when lists are empty).
    pub fn check(&self, peer: Option<&PeerCertificate>) -> Result<String, MtlsDenial> {
        let peer = peer.ok_or(MtlsDenial::CertificateRequired)?;
        if self.allowed_sans.is_empty() && self.allowed_subjects.is_empty() {
            return Ok(peer.identity());
        }
        for p in &self.allowed_sans {
            if let Some(v) = peer.uri_sans.iter().find(|v| p.matches_san(v, false)) {
                return Ok(v.clone());
            }
            if let Some(v) = peer.dns_sans.iter().find(|v| p.matches_san(v, true)) {
                return Ok(v.clone());
            }
        }
        if let Some(subject) = &peer.subject {
            if self
                .allowed_subjects
                .iter()
                .any(|p| p.matches_subject(subject))
            {
                return Ok(subject.clone());
            }
        }
        Err(MtlsDenial::NotAllowed {
            identity: peer.identity(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(uri: &[&str], dns: &[&str], subject: Option<&str>) -> PeerCertificate {
        PeerCertificate {
            uri_sans: uri.iter().map(|s| s.to_string()).collect(),
            dns_sans: dns.iter().map(|s| s.to_string()).collect(),
            subject: subject.map(str::to_string),
        }
    }

    #[test]
    fn sans_exact_and_wildcard() {
        let p = MtlsPolicy {
            allowed_sans: vec![
                IdentityPattern::san("spiffe://example.org/ns/apps/sa/client").unwrap(),
                IdentityPattern::san("*.svc.example.org").unwrap(),
            ],
            allowed_subjects: vec![],
        };
        assert_eq!(
            p.check(Some(&peer(
                &["spiffe://example.org/ns/apps/sa/client"],
                &[],
                None
            )))
            .unwrap(),
            "spiffe://example.org/ns/apps/sa/client"
        );
        assert!(p
            .check(Some(&peer(
                &["spiffe://example.org/ns/apps/sa/other"],
                &[],
                None
            )))
            .is_err());
        assert!(p
            .check(Some(&peer(&[], &["a.svc.example.org"], None)))
            .is_ok());
        assert!(p
            .check(Some(&peer(&[], &["A.SVC.example.org"], None)))
            .is_ok());
        assert!(p
            .check(Some(&peer(&[], &["a.b.svc.example.org"], None)))
            .is_err());
        assert!(p
            .check(Some(&peer(&[], &["svc.example.org"], None)))
            .is_err());
        assert!(p
            .check(Some(&peer(&["*.svc.example.org"], &[], None)))
            .is_err());
        assert_eq!(p.check(None), Err(MtlsDenial::CertificateRequired));
        assert!(IdentityPattern::san("a.*.org").is_err());
        assert!(IdentityPattern::san("spiffe://*/x").is_err());
    }

    #[test]
    fn subjects_and_any() {
        let p = MtlsPolicy {
            allowed_sans: vec![],
            allowed_subjects: vec![
                IdentityPattern::subject("regex:CN=client-[0-9]+,O=Example").unwrap()
            ],
        };
        assert!(p
            .check(Some(&peer(&[], &[], Some("CN=client-7,O=Example"))))
            .is_ok());
        assert!(p
            .check(Some(&peer(&[], &[], Some("CN=client-7,O=Example,OU=x"))))
            .is_err());
        let any = MtlsPolicy::default();
        assert_eq!(
            any.check(Some(&peer(&[], &["d.example"], Some("CN=x"))))
                .unwrap(),
            "d.example"
        );
    }
}
