//! The filter configuration: the guide's four sections with the guide's field names.
//!
//! Parsing happens once (in `on_configure`, or offline in `llm-api-guard config check`) and
//! yields an immutable [`Policy`]. Conventions:
//! - every field is optional; an omitted field takes the guide's value where the guide sets a
//!   policy, and deployment specifics (issuer, audience, JWKS, keys) have no default;
//! - unknown fields, wrong types and impossible values are refused with a [`ConfigError`] that
//!   names the field by its dotted path;
//! - a section with `"enabled": false` is off, and none of its other fields matter beyond type
//!   checking;
//! - guide fields that have no meaning inside a filter are accepted only with the guide's value
//!   (documented in the README), never silently ignored.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::apikey::KeyRecord;
use crate::apikey::{KeyHasher, KeyRules, KeyStore, RecordError, RevocationReason};
use crate::jwt::{Jwks, JwksError, JwtAlgorithm, JwtSettings};
use crate::mtls::{IdentityPattern, MtlsPolicy};

/// A refused configuration: the dotted path of the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "invalid llm-api-guard config: {}", self.message)
        } else {
            write!(
                f,
                "invalid llm-api-guard config at `{}`: {}",
                self.path, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where secrets come from: environment variables that Envoy hands to the VM
/// (`vm_config.environment_variables.host_env_keys`), or the CLI's own environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (WASI's environment inside Envoy, the OS environment in the CLI).
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Environment for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// Raw shape (what users write).

/// A value written either as one item or as a list (`"aud"` or `["a", "b"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A value that is never accepted: reading it raises the given message.
struct Refuse(String);

impl<'de> serde::de::DeserializeSeed<'de> for Refuse {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, _d: D) -> Result<(), D::Error> {
        Err(serde::de::Error::custom(self.0))
    }
}

/// Declares a config section: every field optional, unknown and repeated fields refused, and
/// only a JSON object accepted (serde's derive would also take an array of values in field
/// order, which would let `[5, 300]` mean two limits).
macro_rules! raw {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone, Default)]
        pub struct $name { $(pub $field: Option<$ty>),* }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                const FIELDS: &[&str] = &[$(stringify!($field)),*];
                struct Fields;
                impl<'de> serde::de::Visitor<'de> for Fields {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        use serde::de::Error as _;
                        let mut out = $name::default();
                        let mut seen: Vec<String> = Vec::new();
                        while let Some(key) = map.next_key::<String>()? {
                            // Errors about the key are raised while reading its value, so that
                            // the reported path ends with the key itself.
                            if seen.contains(&key) {
                                let msg = format!("duplicate field `{key}`");
                                return Err(map.next_value_seed(Refuse(msg)).err().unwrap_or_else(|| A::Error::custom("duplicate field")));
                            }
                            match key.as_str() {
                                $(stringify!($field) => out.$field = map.next_value::<Option<$ty>>()?,)*
                                other => {
                                    let msg = format!("unknown field `{other}`, expected one of {}", FIELDS.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "));
                                    return Err(map.next_value_seed(Refuse(msg)).err().unwrap_or_else(|| A::Error::custom("unknown field")));
                                }
                            }
                            seen.push(key);
                        }
                        Ok(out)
                    }
                }
                d.deserialize_struct(stringify!($name), FIELDS, Fields)
            }
        }
    };
}

raw!(RawConfig {
    api_key_management: RawKeyManagement,
    authentication: RawAuthentication,
    gateway_hardening: RawHardening,
    api_rate_limiting: RawRateLimiting,
});

raw!(RawKeyManagement {
    enabled: bool,
    key_generation: RawKeyGeneration,
    expiration: RawExpiration,
    storage: RawStorage,
    rotation: RawRotation,
    revocation: RawRevocation,
    keys: Vec<KeyRecord>,
    keyset: RawRemote,
});
raw!(RawKeyGeneration {
    algorithm: String,
    key_length: u32
});
raw!(RawExpiration {
    default_ttl_hours: u64,
    max_ttl_hours: u64
});
raw!(RawStorage {
    encryption: bool,
    encryption_algorithm: String,
    hash_for_verification: bool,
    pepper_env: String,
    allow_unpeppered_sha256: bool,
});
raw!(RawRotation {
    enabled: bool,
    auto_rotate: bool,
    rotation_interval_days: u64,
    notify_before_rotation_days: u64
});
raw!(RawRevocation {
    enabled: bool,
    revoke_on: OneOrMany
});
raw!(RawRemote {
    cluster: String,
    path: String,
    authority: String,
    refresh_seconds: u64,
    timeout_ms: u64,
    min_refetch_interval_ms: u64,
    max_stale_seconds: u64,
});

raw!(RawAuthentication {
    enabled: bool,
    methods: RawMethods,
    mfa: RawMfa,
    middleware: RawMiddleware
});
raw!(RawMethods {
    jwt: RawJwt,
    api_key: RawApiKey,
    mtls: RawMtls
});
raw!(RawJwt {
    enabled: bool,
    issuer: String,
    audience: OneOrMany,
    audiences: Vec<String>,
    algorithm: String,
    algorithms: Vec<String>,
    jwks: serde_json::Value,
    remote_jwks: RawRemote,
    clock_skew_seconds: u64,
    require_expiration: bool,
    required_claims: Vec<String>,
    user_claim: String,
    claims_to_headers: std::collections::BTreeMap<String, String>,
    token_header: String,
    token_prefix: String,
    forward_token: bool,
    hs256_secret_env: String,
    cache_max_entries: usize,
    cache_max_ttl_seconds: u64,
});
raw!(RawApiKey {
    enabled: bool,
    header_name: String
});
raw!(RawMtls {
    enabled: bool,
    validate_cert_chain: bool,
    validate_cert_expiry: bool,
    allowed_sans: Vec<String>,
    allowed_subjects: Vec<String>,
});
raw!(RawMfa { enabled: bool, require: Vec<AuthMethod> });
raw!(RawMiddleware { except_health_check: bool, health_check_paths: Vec<String> });

raw!(RawHardening {
    enabled: bool,
    waf: RawWaf,
    input_validation: RawInputValidation,
    request_limits: RawRequestLimits,
    response_filtering: RawToggle,
    security_headers: RawToggle,
    cors: RawCors,
});
raw!(RawWaf {
    enabled: bool,
    mode: String,
    paranoia_level: u8,
    anomaly_threshold: u32,
    prompt_inspection: String,
    rules: String,
});
raw!(RawInputValidation {
    enabled: bool,
    llm_profile: serde_json::Value,
    routes: serde_json::Value
});
raw!(RawRequestLimits {
    max_request_size_bytes: u64,
    max_header_size_bytes: u64
});
raw!(RawToggle { enabled: bool });
raw!(RawCors { enabled: bool, allowed_origins: Vec<String> });

raw!(RawRateLimiting {
    enabled: bool,
    strategies: RawStrategies,
    enforcement: RawEnforcement,
    burst: RawBurst
});
raw!(RawStrategies {
    token_based: RawPerKey,
    ip_based: RawPerIp,
    user_based: RawPerUser,
    llm_tokens: RawLlmTokens
});
raw!(RawPerKey {
    enabled: bool,
    per_key_per_minute: u64,
    per_key_per_hour: u64
});
raw!(RawPerIp {
    enabled: bool,
    per_ip_per_minute: u64,
    per_ip_per_hour: u64
});
raw!(RawPerUser {
    enabled: bool,
    per_user_per_minute: u64,
    per_user_per_hour: u64
});
raw!(RawLlmTokens {
    enabled: bool,
    per_key_per_minute: u64,
    per_key_per_hour: u64,
    per_user_per_minute: u64,
    per_user_per_hour: u64,
    default_max_tokens: u64,
});
raw!(RawEnforcement {
    action: String,
    throttle_factor: f64,
    block_message: String
});
raw!(RawBurst {
    enabled: bool,
    burst_multiplier: f64,
    burst_duration_seconds: u64
});

/// An authentication method, as named in `mfa.require` and in `x-auth-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Mtls,
    Jwt,
    ApiKey,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Mtls => "mtls",
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled policy (what the filter runs).

/// A document fetched by the filter from an Envoy cluster (remote keyset, remote JWKS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_seconds: u64,
    pub timeout_ms: u64,
    /// On-demand fetches (an unknown JWT `kid`) start at most this often.
    pub min_refetch_interval_ms: u64,
    /// When set, a document not refreshed successfully for this long is no longer used (fail
    /// closed); unset, the last good document stays in force however old it is.
    pub max_stale_seconds: Option<u64>,
}

/// API key management (AS-1), compiled.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub hasher: KeyHasher,
    pub rules: KeyRules,
    pub default_ttl_hours: u64,
    pub max_ttl_hours: u64,
    /// Inline `keys`, validated strictly.
    pub inline: KeyStore,
    pub remote: Option<RemoteSource>,
    /// `(rotation_interval_seconds, notify_before_seconds)` when rotation notices are on.
    pub rotation_notice: Option<(i64, i64)>,
    pub revocation_reasons: Vec<RevocationReason>,
}

/// The JWT method, compiled.
#[derive(Debug)]
pub struct JwtMethod {
    pub settings: JwtSettings,
    pub inline_jwks: Option<Jwks>,
    pub remote_jwks: Option<RemoteSource>,
    /// Lower-case header name carrying the token.
    pub token_header: String,
    /// Prefix before the token, matched case-insensitively (`"Bearer "`); empty for none.
    pub token_prefix: String,
    /// Whether the token header goes upstream after verification (default false: the LLM
    /// provider never sees the client's token).
    pub forward_token: bool,
    /// `(claim, lower-case header)` pairs forwarded upstream after verification.
    pub claims_to_headers: Vec<(String, String)>,
    pub cache_max_entries: usize,
    pub cache_max_ttl_seconds: u64,
}

/// Request authentication (AS-2), compiled.
#[derive(Debug)]
pub struct AuthPolicy {
    pub jwt: Option<JwtMethod>,
    /// Lower-case header name of the API key method, when enabled.
    pub api_key_header: Option<String>,
    /// The same header name as configured (for `www-authenticate`).
    pub api_key_header_display: String,
    pub mtls: Option<MtlsPolicy>,
    /// With MFA, every method here must succeed; otherwise `None` (any one method suffices).
    pub mfa_require: Option<Vec<AuthMethod>>,
    /// Exact paths (query aside) exempt from authentication; empty when there is no exemption.
    pub health_check_paths: Vec<String>,
}

impl AuthPolicy {
    /// The methods that are enabled, in evaluation order.
    pub fn enabled_methods(&self) -> Vec<AuthMethod> {
        let mut v = Vec::new();
        if self.mtls.is_some() {
            v.push(AuthMethod::Mtls);
        }
        if self.jwt.is_some() {
            v.push(AuthMethod::Jwt);
        }
        if self.api_key_header.is_some() {
            v.push(AuthMethod::ApiKey);
        }
        v
    }
}

/// Request size limits (AS-3 `request_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_request_size_bytes: u64,
    pub max_header_size_bytes: u64,
}

/// The whole compiled, immutable policy.
#[derive(Debug)]
pub struct Policy {
    pub keys: Option<KeyPolicy>,
    pub auth: Option<AuthPolicy>,
    pub limits: Option<RequestLimits>,
    /// Accepted but noteworthy settings, logged once when the config loads.
    pub warnings: Vec<String>,
}

impl Policy {
    /// The `www-authenticate` challenges of the enabled methods.
    pub fn challenges(&self) -> crate::reply::Challenges {
        let auth = self.auth.as_ref();
        crate::reply::Challenges {
            api_key_header: auth.and_then(|a| {
                a.api_key_header
                    .as_ref()
                    .map(|_| a.api_key_header_display.clone())
            }),
            bearer: auth.is_some_and(|a| a.jwt.is_some()),
        }
    }
}

// Guide defaults.
pub const DEFAULT_TTL_HOURS: u64 = 24;
pub const MAX_TTL_HOURS: u64 = 168;
pub const ROTATION_INTERVAL_DAYS: u64 = 30;
pub const NOTIFY_BEFORE_ROTATION_DAYS: u64 = 7;
pub const MAX_REQUEST_SIZE_BYTES: u64 = 1_048_576;
pub const MAX_HEADER_SIZE_BYTES: u64 = 8192;
pub const PEPPER_ENV: &str = "LLM_API_GUARD_PEPPER";
pub const MIN_PEPPER_BYTES: usize = 16;
/// The filter buffers bodies in the VM; larger limits belong to a streaming design.
pub const MAX_BODY_LIMIT: u64 = 32 * 1_048_576;
pub const DEFAULT_HEALTH_PATHS: [&str; 3] = ["/healthz", "/health", "/ready"];

/// Parses and validates a JSON config. An empty document means `{}`.
pub fn parse(json: &[u8], env: &dyn Environment) -> Result<Policy, ConfigError> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    let raw: RawConfig = match first {
        None => RawConfig::default(),
        Some(b'{') => from_json(json)?,
        Some(_) => {
            return Err(ConfigError::new(
                "",
                "the configuration must be a JSON object with the sections api_key_management, authentication, gateway_hardening, api_rate_limiting",
            ))
        }
    };
    compile(raw, env)
}

fn from_json<T: DeserializeOwned>(json: &[u8]) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // "." is the root and "?" an unknown position (a syntax error): no field to name.
        let path = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

fn on(enabled: Option<bool>, default: bool) -> bool {
    enabled.unwrap_or(default)
}

fn compile(raw: RawConfig, env: &dyn Environment) -> Result<Policy, ConfigError> {
    let mut warnings = Vec::new();
    let km = raw.api_key_management.unwrap_or_default();
    let keys = if on(km.enabled, true) {
        Some(compile_keys(km, env, &mut warnings)?)
    } else {
        None
    };

    let au = raw.authentication.unwrap_or_default();
    let auth = if on(au.enabled, true) {
        Some(compile_auth(au, keys.is_some(), env)?)
    } else {
        None
    };
    if keys.is_some() && auth.as_ref().is_none_or(|a| a.api_key_header.is_none()) {
        warnings.push("api_key_management is enabled but the api_key authentication method is not: keys are not checked".into());
    }

    let gh = raw.gateway_hardening.unwrap_or_default();
    let limits = if on(gh.enabled, true) {
        compile_hardening(gh)?
    } else {
        None
    };

    let rl = raw.api_rate_limiting.unwrap_or_default();
    if on(rl.enabled, true) {
        return Err(not_implemented(
            "api_rate_limiting",
            "api_rate_limiting.enabled",
        ));
    }
    Ok(Policy {
        keys,
        auth,
        limits,
        warnings,
    })
}

fn not_implemented(path: &str, switch: &str) -> ConfigError {
    ConfigError::new(
        path,
        format!("this control is not implemented yet in this version of llm-api-guard; set `{switch}` to false"),
    )
}

fn positive(path: &str, v: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    let v = v.unwrap_or(default);
    if v == 0 {
        return Err(ConfigError::new(path, "must be at least 1"));
    }
    Ok(v)
}

fn compile_keys(
    km: RawKeyManagement,
    env: &dyn Environment,
    warnings: &mut Vec<String>,
) -> Result<KeyPolicy, ConfigError> {
    const P: &str = "api_key_management";
    if let Some(kg) = km.key_generation {
        if let Some(alg) = kg.algorithm {
            if alg != "AES-256-GCM" {
                return Err(ConfigError::new(
                    format!("{P}.key_generation.algorithm"),
                    "only \"AES-256-GCM\" (the guide's value) is accepted: keys are 256-bit secrets from the OS CSPRNG, as strong as an AES-256 key",
                ));
            }
        }
        if kg.key_length.is_some_and(|l| l != 256) {
            return Err(ConfigError::new(
                format!("{P}.key_generation.key_length"),
                "must be 256: every key carries 256 bits of secret",
            ));
        }
    }
    let ex = km.expiration.unwrap_or_default();
    let default_ttl = positive(
        &format!("{P}.expiration.default_ttl_hours"),
        ex.default_ttl_hours,
        DEFAULT_TTL_HOURS,
    )?;
    let max_ttl = positive(
        &format!("{P}.expiration.max_ttl_hours"),
        ex.max_ttl_hours,
        MAX_TTL_HOURS,
    )?;
    if max_ttl < default_ttl {
        return Err(ConfigError::new(
            format!("{P}.expiration.max_ttl_hours"),
            format!("must be at least default_ttl_hours ({default_ttl})"),
        ));
    }
    if max_ttl > 24 * 366 * 10 {
        return Err(ConfigError::new(
            format!("{P}.expiration.max_ttl_hours"),
            "must be at most 87840 (10 years)",
        ));
    }

    let st = km.storage.unwrap_or_default();
    if st.hash_for_verification == Some(false) {
        return Err(ConfigError::new(
            format!("{P}.storage.hash_for_verification"),
            "must be true: llm-api-guard stores only one-way hashes of keys, never keys",
        ));
    }
    if st.encryption == Some(false) {
        return Err(ConfigError::new(
            format!("{P}.storage.encryption"),
            "must be true: stored records hold only HMAC-SHA-256 digests, which protect keys more than reversible encryption would",
        ));
    }
    if let Some(alg) = st.encryption_algorithm {
        if alg != "AES-256-GCM" {
            return Err(ConfigError::new(
                format!("{P}.storage.encryption_algorithm"),
                "only \"AES-256-GCM\" (the guide's value) is accepted; records are protected by HMAC-SHA-256 with the pepper",
            ));
        }
    }
    let pepper_env = st.pepper_env.unwrap_or_else(|| PEPPER_ENV.to_string());
    let hasher = match env.var(&pepper_env).filter(|p| !p.is_empty()) {
        Some(p) if p.len() < MIN_PEPPER_BYTES => {
            return Err(ConfigError::new(
                format!("{P}.storage.pepper_env"),
                format!("the pepper in {pepper_env} must be at least {MIN_PEPPER_BYTES} bytes (32 random bytes recommended)"),
            ));
        }
        Some(p) => KeyHasher::peppered(p.as_bytes()),
        None if st.allow_unpeppered_sha256 == Some(true) => {
            warnings.push(format!("no pepper in {pepper_env}: API keys are hashed with unpeppered SHA-256 (allow_unpeppered_sha256)"));
            KeyHasher::Unpeppered
        }
        None => {
            return Err(ConfigError::new(
                format!("{P}.storage.pepper_env"),
                format!("environment variable {pepper_env} is not set or empty: pass it to the VM with vm_config.environment_variables.host_env_keys (or set storage.allow_unpeppered_sha256: true)"),
            ));
        }
    };

    let ro = km.rotation.unwrap_or_default();
    let rotation_notice = if on(ro.enabled, true) {
        let interval = positive(
            &format!("{P}.rotation.rotation_interval_days"),
            ro.rotation_interval_days,
            ROTATION_INTERVAL_DAYS,
        )?;
        let notify = ro
            .notify_before_rotation_days
            .unwrap_or(NOTIFY_BEFORE_ROTATION_DAYS);
        if notify >= interval {
            return Err(ConfigError::new(
                format!("{P}.rotation.notify_before_rotation_days"),
                format!("must be less than rotation_interval_days ({interval})"),
            ));
        }
        Some((interval as i64 * 86_400, notify as i64 * 86_400))
    } else {
        None
    };

    let rv = km.revocation.unwrap_or_default();
    if rv.enabled == Some(false) {
        return Err(ConfigError::new(
            format!("{P}.revocation.enabled"),
            "revocation cannot be disabled: a revoked key is always refused",
        ));
    }
    let revocation_reasons = match rv.revoke_on {
        None => RevocationReason::ALL.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for item in list
                .into_vec()
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let r = RevocationReason::parse(item).ok_or_else(|| {
                    ConfigError::new(
                        format!("{P}.revocation.revoke_on"),
                        format!("unknown reason \"{item}\" (known: security_event, user_request, key_expiry)"),
                    )
                })?;
                out.push(r);
            }
            out
        }
    };

    let rules = KeyRules {
        max_ttl_seconds: max_ttl as i64 * 3600,
    };
    let records = km.keys.unwrap_or_default();
    let (inline, _) =
        KeyStore::build(&records, &hasher, &rules, true).map_err(|e: RecordError| {
            ConfigError::new(format!("{P}.keys[{}].{}", e.index, e.field), e.message)
        })?;
    let remote = km
        .keyset
        .map(|r| compile_remote(&format!("{P}.keyset"), r, 30))
        .transpose()?;
    if inline.is_empty() && remote.is_none() {
        warnings
            .push("api_key_management has no keys and no keyset: every API key is refused".into());
    }
    Ok(KeyPolicy {
        hasher,
        rules,
        default_ttl_hours: default_ttl,
        max_ttl_hours: max_ttl,
        inline,
        remote,
        rotation_notice,
        revocation_reasons,
    })
}

fn compile_remote(
    path: &str,
    r: RawRemote,
    default_refresh: u64,
) -> Result<RemoteSource, ConfigError> {
    let cluster = r.cluster.filter(|c| !c.is_empty()).ok_or_else(|| {
        ConfigError::new(
            format!("{path}.cluster"),
            "is required: the Envoy cluster to fetch from",
        )
    })?;
    let doc = r.path.unwrap_or_default();
    if !doc.starts_with('/') {
        return Err(ConfigError::new(
            format!("{path}.path"),
            "is required and must start with /",
        ));
    }
    let refresh = positive(
        &format!("{path}.refresh_seconds"),
        r.refresh_seconds,
        default_refresh,
    )?;
    let timeout_ms = positive(&format!("{path}.timeout_ms"), r.timeout_ms, 5000)?;
    if timeout_ms > 60_000 {
        return Err(ConfigError::new(
            format!("{path}.timeout_ms"),
            "must be at most 60000",
        ));
    }
    if let Some(stale) = r.max_stale_seconds {
        if stale < refresh {
            return Err(ConfigError::new(
                format!("{path}.max_stale_seconds"),
                format!("must be at least refresh_seconds ({refresh})"),
            ));
        }
    }
    Ok(RemoteSource {
        max_stale_seconds: r.max_stale_seconds,
        authority: r.authority.unwrap_or_else(|| cluster.clone()),
        cluster,
        path: doc,
        refresh_seconds: refresh,
        timeout_ms,
        min_refetch_interval_ms: r.min_refetch_interval_ms.unwrap_or(1000),
    })
}

fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
    if !ok {
        return Err(ConfigError::new(
            path,
            format!("\"{name}\" is not a valid HTTP header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn compile_auth(
    au: RawAuthentication,
    keys_enabled: bool,
    env: &dyn Environment,
) -> Result<AuthPolicy, ConfigError> {
    const P: &str = "authentication";
    let methods = au.methods.unwrap_or_default();

    let jwt_raw = methods.jwt.unwrap_or_default();
    let jwt = if on(jwt_raw.enabled, true) {
        Some(compile_jwt(jwt_raw, env)?)
    } else {
        None
    };

    let ak = methods.api_key.unwrap_or_default();
    let api_key_header = if on(ak.enabled, true) {
        let path = format!("{P}.methods.api_key.header_name");
        let h = header_name(&path, ak.header_name.as_deref().unwrap_or("X-API-Key"))?;
        if !keys_enabled {
            return Err(ConfigError::new(
                format!("{P}.methods.api_key.enabled"),
                "the api_key method needs api_key_management to be enabled (it holds the keys)",
            ));
        }
        Some(h)
    } else {
        None
    };

    let mt = methods.mtls.unwrap_or_default();
    let mtls = if on(mt.enabled, true) {
        Some(compile_mtls(mt)?)
    } else {
        None
    };

    let api_key_header_display = ak.header_name.clone().unwrap_or_else(|| "X-API-Key".into());
    let mut policy = AuthPolicy {
        jwt,
        api_key_header,
        api_key_header_display,
        mtls,
        mfa_require: None,
        health_check_paths: Vec::new(),
    };
    let enabled = policy.enabled_methods();
    if enabled.is_empty() {
        return Err(ConfigError::new(
            format!("{P}.methods"),
            "authentication is enabled but no method is: enable jwt, api_key or mtls, or set authentication.enabled to false",
        ));
    }

    let mfa = au.mfa.unwrap_or_default();
    if on(mfa.enabled, false) {
        let mut require = mfa.require.unwrap_or_else(|| enabled.clone());
        require.sort();
        require.dedup();
        if let Some(m) = require.iter().find(|m| !enabled.contains(m)) {
            return Err(ConfigError::new(
                format!("{P}.mfa.require"),
                format!("method {} is not enabled", m.as_str()),
            ));
        }
        if require.len() < 2 {
            return Err(ConfigError::new(
                format!("{P}.mfa.require"),
                "multi-factor authentication needs at least two methods",
            ));
        }
        policy.mfa_require = Some(require);
    }

    let mw = au.middleware.unwrap_or_default();
    if on(mw.except_health_check, true) {
        let paths = mw
            .health_check_paths
            .unwrap_or_else(|| DEFAULT_HEALTH_PATHS.iter().map(|s| s.to_string()).collect());
        for (i, p) in paths.iter().enumerate() {
            let clean = p.starts_with('/')
                && !p.contains("//")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
                && !p.split('/').any(|seg| seg == "." || seg == "..");
            if !clean {
                return Err(ConfigError::new(
                    format!("{P}.middleware.health_check_paths[{i}]"),
                    "must be a plain absolute path (letters, digits, / - _ .; no dot segments, no query)",
                ));
            }
        }
        policy.health_check_paths = paths;
    }
    Ok(policy)
}

fn compile_jwt(j: RawJwt, env: &dyn Environment) -> Result<JwtMethod, ConfigError> {
    const P: &str = "authentication.methods.jwt";
    let issuer = j.issuer.filter(|s| !s.is_empty()).ok_or_else(|| {
        ConfigError::new(
            format!("{P}.issuer"),
            "is required when the jwt method is enabled",
        )
    })?;
    let mut audiences = j.audience.map(OneOrMany::into_vec).unwrap_or_default();
    audiences.extend(j.audiences.unwrap_or_default());
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            format!("{P}.audience"),
            "is required when the jwt method is enabled (a non-empty string or list)",
        ));
    }
    let names: Vec<(String, String)> = match (j.algorithm, j.algorithms) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("{P}.algorithms"),
                "set either algorithm or algorithms, not both",
            ))
        }
        (Some(a), None) => vec![(format!("{P}.algorithm"), a)],
        (None, Some(list)) => list
            .into_iter()
            .enumerate()
            .map(|(i, a)| (format!("{P}.algorithms[{i}]"), a))
            .collect(),
        (None, None) => vec![(format!("{P}.algorithm"), "RS256".to_string())],
    };
    if names.is_empty() {
        return Err(ConfigError::new(
            format!("{P}.algorithms"),
            "must name at least one algorithm",
        ));
    }
    let mut algorithms = Vec::new();
    for (path, name) in names {
        let alg = JwtAlgorithm::parse(&name).ok_or_else(|| {
            ConfigError::new(path, format!("unsupported algorithm \"{name}\" (supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256)"))
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    let hs256_secret = if algorithms.contains(&JwtAlgorithm::HS256) {
        let var = j.hs256_secret_env.ok_or_else(|| ConfigError::new(format!("{P}.hs256_secret_env"), "is required when HS256 is allowed: name the environment variable that holds the secret"))?;
        let secret = env.var(&var).filter(|s| s.len() >= 32).ok_or_else(|| {
            ConfigError::new(
                format!("{P}.hs256_secret_env"),
                format!("environment variable {var} must hold a secret of at least 32 bytes"),
            )
        })?;
        Some(secret.into_bytes())
    } else {
        if j.hs256_secret_env.is_some() {
            return Err(ConfigError::new(
                format!("{P}.hs256_secret_env"),
                "is set but HS256 is not among the allowed algorithms",
            ));
        }
        None
    };
    let asymmetric = algorithms.iter().any(|a| *a != JwtAlgorithm::HS256);
    let remote_jwks = j
        .remote_jwks
        .map(|r| compile_remote(&format!("{P}.remote_jwks"), r, 300))
        .transpose()?;
    let inline_jwks = match j.jwks {
        None => None,
        Some(v) => match Jwks::from_value(&v) {
            Ok(jwks) => Some(jwks),
            // `"jwks": {"keys": []}` next to a remote JWKS: nothing pinned.
            Err(JwksError::NoUsableKeys { total: 0 }) if remote_jwks.is_some() => None,
            Err(e) => return Err(ConfigError::new(format!("{P}.jwks"), e.to_string())),
        },
    };
    if inline_jwks.is_none() && remote_jwks.is_none() && asymmetric {
        return Err(ConfigError::new(
            format!("{P}.jwks"),
            "is required (or remote_jwks): the public keys that verify token signatures",
        ));
    }
    let user_claim = j.user_claim.unwrap_or_else(|| "sub".into());
    let mut claims_to_headers = Vec::new();
    for (claim, header) in j.claims_to_headers.unwrap_or_default() {
        let h = header_name(&format!("{P}.claims_to_headers.{claim}"), &header)?;
        if h.starts_with("x-auth-") || h == "authorization" || h.starts_with(':') {
            return Err(ConfigError::new(
                format!("{P}.claims_to_headers.{claim}"),
                "x-auth-* and authorization are reserved",
            ));
        }
        claims_to_headers.push((claim, h));
    }
    let skew = j.clock_skew_seconds.unwrap_or(60);
    if skew > 3600 {
        return Err(ConfigError::new(
            format!("{P}.clock_skew_seconds"),
            "must be at most 3600",
        ));
    }
    let settings = JwtSettings {
        issuer,
        audiences,
        algorithms,
        clock_skew_seconds: skew,
        require_exp: j.require_expiration.unwrap_or(true),
        required_claims: j.required_claims.unwrap_or_default(),
        subject_claim: user_claim,
        hs256_secret,
        max_token_bytes: 16_384,
    };
    Ok(JwtMethod {
        settings,
        inline_jwks,
        remote_jwks,
        token_header: header_name(
            &format!("{P}.token_header"),
            j.token_header.as_deref().unwrap_or("authorization"),
        )?,
        token_prefix: j.token_prefix.unwrap_or_else(|| "Bearer ".into()),
        forward_token: j.forward_token.unwrap_or(false),
        claims_to_headers,
        cache_max_entries: j.cache_max_entries.unwrap_or(1024).min(65_536),
        cache_max_ttl_seconds: j.cache_max_ttl_seconds.unwrap_or(300),
    })
}

fn compile_mtls(m: RawMtls) -> Result<MtlsPolicy, ConfigError> {
    const P: &str = "authentication.methods.mtls";
    if m.validate_cert_chain == Some(false) || m.validate_cert_expiry == Some(false) {
        return Err(ConfigError::new(
            format!("{P}.validate_cert_chain"),
            "must be true: Envoy verifies chain and expiry (validation_context), and the filter accepts only connections whose certificate Envoy verified",
        ));
    }
    let mut sans = Vec::new();
    for (i, s) in m.allowed_sans.unwrap_or_default().into_iter().enumerate() {
        sans.push(
            IdentityPattern::san(&s)
                .map_err(|e| ConfigError::new(format!("{P}.allowed_sans[{i}]"), e))?,
        );
    }
    let mut subjects = Vec::new();
    for (i, s) in m
        .allowed_subjects
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        subjects.push(
            IdentityPattern::subject(&s)
                .map_err(|e| ConfigError::new(format!("{P}.allowed_subjects[{i}]"), e))?,
        );
    }
    Ok(MtlsPolicy {
        allowed_sans: sans,
        allowed_subjects: subjects,
    })
}

fn compile_hardening(gh: RawHardening) -> Result<Option<RequestLimits>, ConfigError> {
    const P: &str = "gateway_hardening";
    if on(gh.waf.unwrap_or_default().enabled, true) {
        return Err(not_implemented(
            &format!("{P}.waf"),
            "gateway_hardening.waf.enabled",
        ));
    }
    if on(gh.input_validation.unwrap_or_default().enabled, true) {
        return Err(not_implemented(
            &format!("{P}.input_validation"),
            "gateway_hardening.input_validation.enabled",
        ));
    }
    if on(gh.response_filtering.unwrap_or_default().enabled, true) {
        return Err(not_implemented(
            &format!("{P}.response_filtering"),
            "gateway_hardening.response_filtering.enabled",
        ));
    }
    if on(gh.security_headers.unwrap_or_default().enabled, true) {
        return Err(not_implemented(
            &format!("{P}.security_headers"),
            "gateway_hardening.security_headers.enabled",
        ));
    }
    if on(gh.cors.unwrap_or_default().enabled, false) {
        return Err(not_implemented(
            &format!("{P}.cors"),
            "gateway_hardening.cors.enabled",
        ));
    }
    let rl = gh.request_limits.unwrap_or_default();
    let body = positive(
        &format!("{P}.request_limits.max_request_size_bytes"),
        rl.max_request_size_bytes,
        MAX_REQUEST_SIZE_BYTES,
    )?;
    if body > MAX_BODY_LIMIT {
        return Err(ConfigError::new(
            format!("{P}.request_limits.max_request_size_bytes"),
            format!("must be at most {MAX_BODY_LIMIT} (the filter buffers the body)"),
        ));
    }
    let headers = positive(
        &format!("{P}.request_limits.max_header_size_bytes"),
        rl.max_header_size_bytes,
        MAX_HEADER_SIZE_BYTES,
    )?;
    if !(256..=1_048_576).contains(&headers) {
        return Err(ConfigError::new(
            format!("{P}.request_limits.max_header_size_bytes"),
            "must be between 256 and 1048576",
        ));
    }
    Ok(Some(RequestLimits {
        max_request_size_bytes: body,
        max_header_size_bytes: headers,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PEPPER: &str = "unit-test-pepper-0123456789abcdef";

    fn env() -> HashMap<String, String> {
        HashMap::from([(PEPPER_ENV.to_string(), PEPPER.to_string())])
    }

    /// Everything not under test switched off.
    fn base() -> serde_json::Value {
        serde_json::json!({
            "api_key_management": {"enabled": false},
            "authentication": {"enabled": false},
            "gateway_hardening": {"waf": {"enabled": false}, "input_validation": {"enabled": false},
                                  "response_filtering": {"enabled": false}, "security_headers": {"enabled": false}},
            "api_rate_limiting": {"enabled": false}
        })
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn with(patch: serde_json::Value) -> Result<Policy, ConfigError> {
        let mut v = base();
        merge(&mut v, patch);
        parse(v.to_string().as_bytes(), &env())
    }

    fn err(patch: serde_json::Value) -> ConfigError {
        with(patch).expect_err("config should be refused")
    }

    #[test]
    fn disabled_everything_is_valid_and_defaults_apply() {
        let p = with(serde_json::json!({})).unwrap();
        assert!(p.keys.is_none() && p.auth.is_none());
        assert_eq!(
            p.limits,
            Some(RequestLimits {
                max_request_size_bytes: 1_048_576,
                max_header_size_bytes: 8192
            })
        );
    }

    #[test]
    fn unknown_fields_and_types_name_the_path() {
        let e = err(serde_json::json!({"gateway_hardening": {"waf": {"foo": 1}}}));
        assert_eq!(e.path, "gateway_hardening.waf.foo");
        assert!(e.message.contains("unknown field `foo`"), "{e}");
        let e = err(
            serde_json::json!({"gateway_hardening": {"request_limits": {"max_request_size_bytes": "big"}}}),
        );
        assert_eq!(
            e.path,
            "gateway_hardening.request_limits.max_request_size_bytes"
        );
        let e = err(
            serde_json::json!({"gateway_hardening": {"request_limits": {"max_request_size_bytes": -1}}}),
        );
        assert_eq!(
            e.path,
            "gateway_hardening.request_limits.max_request_size_bytes"
        );
        let e = err(
            serde_json::json!({"gateway_hardening": {"request_limits": {"max_request_size_bytes": 0}}}),
        );
        assert!(e.message.contains("at least 1"));
        let e = err(serde_json::json!({"nonsense": true}));
        assert_eq!(e.path, "nonsense");
        assert!(parse(b"[1]", &env())
            .unwrap_err()
            .message
            .contains("JSON object"));
        assert!(parse(b"{", &env()).is_err());
        assert_eq!(
            err(serde_json::json!({"api_key_management": 5})).path,
            "api_key_management"
        );
    }

    #[test]
    fn unimplemented_controls_are_refused_when_enabled() {
        for (patch, path) in [
            (
                serde_json::json!({"gateway_hardening": {"waf": {"enabled": true}}}),
                "gateway_hardening.waf",
            ),
            (
                serde_json::json!({"gateway_hardening": {"cors": {"enabled": true}}}),
                "gateway_hardening.cors",
            ),
            (
                serde_json::json!({"api_rate_limiting": {"enabled": true}}),
                "api_rate_limiting",
            ),
        ] {
            let e = err(patch);
            assert_eq!(e.path, path);
            assert!(e.message.contains("not implemented yet"));
        }
        // Omitted sections take the guide's value: enabled.
        let e = parse(b"{}", &env()).unwrap_err();
        assert!(
            e.message.contains("not implemented yet") || e.message.contains("required"),
            "{e}"
        );
    }

    /// The guide's AS-1 block, converted from YAML to JSON as a user would.
    #[test]
    fn guide_as1_block_is_accepted() {
        let p = with(serde_json::json!({"api_key_management": {
            "enabled": true,
            "key_generation": {"algorithm": "AES-256-GCM", "key_length": 256},
            "expiration": {"default_ttl_hours": 24, "max_ttl_hours": 168},
            "storage": {"encryption": true, "encryption_algorithm": "AES-256-GCM", "hash_for_verification": true},
            "rotation": {"enabled": true, "auto_rotate": true, "rotation_interval_days": 30, "notify_before_rotation_days": 7},
            "revocation": {"enabled": true, "revoke_on": "security_event, user_request, key_expiry"}
        }}))
        .unwrap();
        let k = p.keys.unwrap();
        assert_eq!((k.default_ttl_hours, k.max_ttl_hours), (24, 168));
        assert_eq!(k.rotation_notice, Some((30 * 86_400, 7 * 86_400)));
        assert_eq!(k.revocation_reasons.len(), 3);
        assert!(p.warnings.iter().any(|w| w.contains("no keys")));
    }

    #[test]
    fn key_management_values_are_checked() {
        let on = |patch: serde_json::Value| {
            let mut v = serde_json::json!({"api_key_management": {"enabled": true}});
            merge(&mut v, serde_json::json!({"api_key_management": patch}));
            v
        };
        let e = err(on(
            serde_json::json!({"expiration": {"default_ttl_hours": 48, "max_ttl_hours": 24}}),
        ));
        assert_eq!(e.path, "api_key_management.expiration.max_ttl_hours");
        assert_eq!(
            err(on(
                serde_json::json!({"key_generation": {"algorithm": "DES"}})
            ))
            .path,
            "api_key_management.key_generation.algorithm"
        );
        assert_eq!(
            err(on(
                serde_json::json!({"storage": {"hash_for_verification": false}})
            ))
            .path,
            "api_key_management.storage.hash_for_verification"
        );
        assert_eq!(
            err(on(serde_json::json!({"revocation": {"enabled": false}}))).path,
            "api_key_management.revocation.enabled"
        );
        assert_eq!(
            err(on(
                serde_json::json!({"revocation": {"revoke_on": "whenever"}})
            ))
            .path,
            "api_key_management.revocation.revoke_on"
        );
        assert_eq!(
            err(on(serde_json::json!({"keyset": {"path": "/k.json"}}))).path,
            "api_key_management.keyset.cluster"
        );
        let stale = serde_json::json!({"keyset": {"cluster": "k", "path": "/k.json", "refresh_seconds": 30, "max_stale_seconds": 10}});
        assert_eq!(
            err(on(stale)).path,
            "api_key_management.keyset.max_stale_seconds"
        );
        let e = err(on(
            serde_json::json!({"keys": [{"id": "x", "hash": "h", "user": "u", "created_at": "t", "expires_at": "t"}]}),
        ));
        assert_eq!(e.path, "api_key_management.keys[0].id");
        // No pepper: refused unless explicitly relaxed.
        let cfg = on(serde_json::json!({}));
        let mut full = base();
        merge(&mut full, cfg);
        let e = parse(
            full.to_string().as_bytes(),
            &HashMap::<String, String>::new(),
        )
        .unwrap_err();
        assert_eq!(e.path, "api_key_management.storage.pepper_env");
        merge(
            &mut full,
            serde_json::json!({"api_key_management": {"storage": {"allow_unpeppered_sha256": true}}}),
        );
        let p = parse(
            full.to_string().as_bytes(),
            &HashMap::<String, String>::new(),
        )
        .unwrap();
        assert!(p.warnings.iter().any(|w| w.contains("unpeppered")));
        let short = HashMap::from([(PEPPER_ENV.to_string(), "short".to_string())]);
        assert!(parse(full.to_string().as_bytes(), &short)
            .unwrap_err()
            .message
            .contains("at least 16"));
    }

    #[test]
    fn authentication_is_checked() {
        let auth = |methods: serde_json::Value| serde_json::json!({"authentication": {"enabled": true, "methods": methods}});
        let e = err(auth(
            serde_json::json!({"jwt": {"enabled": false}, "api_key": {"enabled": false}, "mtls": {"enabled": false}}),
        ));
        assert_eq!(e.path, "authentication.methods");
        // The guide's AS-2 JWT block lacks its keys: refused with a clear message.
        let e = err(auth(
            serde_json::json!({"jwt": {"enabled": true, "issuer": "https://clawguru.org", "audience": "moltbot-api", "algorithm": "RS256"},
                                            "api_key": {"enabled": false}, "mtls": {"enabled": false}}),
        ));
        assert_eq!(e.path, "authentication.methods.jwt.jwks");
        let e = err(auth(
            serde_json::json!({"jwt": {"enabled": true, "audience": "a", "jwks": {"keys": []}}, "api_key": {"enabled": false}}),
        ));
        assert_eq!(e.path, "authentication.methods.jwt.issuer");
        // The contract's form: an empty inline set next to a remote JWKS pins nothing.
        let remote = serde_json::json!({"cluster": "idp", "path": "/.well-known/jwks.json"});
        let p = with(auth(serde_json::json!({"jwt": {"enabled": true, "issuer": "i", "audience": "a", "jwks": {"keys": []},
                                                      "remote_jwks": remote}, "api_key": {"enabled": false}, "mtls": {"enabled": false}})))
        .unwrap();
        let j = p.auth.unwrap().jwt.unwrap();
        assert!(j.inline_jwks.is_none() && j.remote_jwks.is_some());
        let e = err(auth(
            serde_json::json!({"jwt": {"enabled": true, "issuer": "i", "audience": "a", "jwks": {"keys": []}},
                                            "api_key": {"enabled": false}, "mtls": {"enabled": false}}),
        ));
        assert_eq!(e.path, "authentication.methods.jwt.jwks");
        let e = err(auth(
            serde_json::json!({"jwt": {"enabled": false}, "mtls": {"enabled": false}, "api_key": {"enabled": true}}),
        ));
        assert_eq!(e.path, "authentication.methods.api_key.enabled");
        let e = err(auth(
            serde_json::json!({"jwt": {"enabled": false}, "api_key": {"enabled": false},
                                            "mtls": {"enabled": true, "allowed_sans": ["a.*.example"]}}),
        ));
        assert_eq!(e.path, "authentication.methods.mtls.allowed_sans[0]");
        let e = err(auth(
            serde_json::json!({"jwt": {"enabled": false}, "api_key": {"enabled": false},
                                            "mtls": {"enabled": true, "validate_cert_chain": false}}),
        ));
        assert!(e.message.contains("Envoy verifies"));
        // mTLS alone, guide fields accepted; health paths default.
        let p = with(auth(serde_json::json!({"jwt": {"enabled": false}, "api_key": {"enabled": false},
                                             "mtls": {"enabled": true, "validate_cert_chain": true, "validate_cert_expiry": true}})))
        .unwrap();
        let a = p.auth.unwrap();
        assert_eq!(a.enabled_methods(), vec![AuthMethod::Mtls]);
        assert_eq!(a.health_check_paths, vec!["/healthz", "/health", "/ready"]);
        // MFA needs two enabled methods.
        let mut v = auth(
            serde_json::json!({"jwt": {"enabled": false}, "api_key": {"enabled": false}, "mtls": {"enabled": true}}),
        );
        merge(
            &mut v,
            serde_json::json!({"authentication": {"mfa": {"enabled": true}}}),
        );
        assert_eq!(err(v.clone()).path, "authentication.mfa.require");
        merge(
            &mut v,
            serde_json::json!({"authentication": {"mfa": {"require": ["mtls", "jwt"]}}}),
        );
        assert!(err(v).message.contains("jwt is not enabled"));
        let mut v = auth(
            serde_json::json!({"jwt": {"enabled": false}, "api_key": {"enabled": false}, "mtls": {"enabled": true}}),
        );
        merge(
            &mut v,
            serde_json::json!({"authentication": {"middleware": {"health_check_paths": ["/ok/../x"]}}}),
        );
        assert_eq!(
            err(v).path,
            "authentication.middleware.health_check_paths[0]"
        );
    }
}
