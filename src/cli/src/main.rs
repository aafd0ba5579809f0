//! `llm-api-guard`: API key lifecycle (new, rotate, revoke, list) over a keyset file, and an
//! offline config check that runs the filter's own parser.
//!
//! Conventions: the only thing ever printed on stdout by `keys new` / `keys rotate` is the new
//! key; errors are one line on stderr with a non-zero exit status; the keyset file is replaced
//! atomically (write to a temporary file, then rename) with mode 0600, under an exclusive lock on
//! `<keyset>.lock` so concurrent commands serialise.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use llm_api_guard_policy::apikey::{
    format_key, is_valid_id, is_valid_user, new_record, KeyHasher, KeyRecord, Keyset,
    RevocationReason, SECRET_BYTES,
};
use llm_api_guard_policy::config::{
    self, ProcessEnvironment, DEFAULT_TTL_HOURS, MAX_TTL_HOURS, MIN_PEPPER_BYTES, PEPPER_ENV,
    ROTATION_INTERVAL_DAYS,
};
use llm_api_guard_policy::time::{format_rfc3339, parse_rfc3339};

const USAGE: &str = "usage:
  llm-api-guard keys new --user USER [--ttl-hours H] --keyset FILE [--config CONFIG.json]
  llm-api-guard keys rotate --id ID [--overlap-hours H] [--ttl-hours H] --keyset FILE [--config CONFIG.json]
  llm-api-guard keys revoke --id ID --reason security_event|user_request|key_expiry --keyset FILE
  llm-api-guard keys list --keyset FILE [--expiring-within-days D] [--json] [--config CONFIG.json]
  llm-api-guard config check FILE
The pepper is read from LLM_API_GUARD_PEPPER (or the variable named by storage.pepper_env in --config).";

/// A failure: one line for stderr.
struct Fail(String);

impl<T: std::fmt::Display> From<T> for Fail {
    fn from(e: T) -> Self {
        Fail(e.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("llm-api-guard: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Parsed `--flag value` options; flags without values are stored with an empty value.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String], with_values: &[&str], switches: &[&str]) -> Result<Opts, Fail> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| Fail(format!("unexpected argument `{a}` (see --help)")))?;
            if switches.contains(&name) {
                map.insert(name.to_string(), String::new());
            } else if with_values.contains(&name) {
                let v = it
                    .next()
                    .ok_or_else(|| Fail(format!("--{name} needs a value")))?;
                if map.insert(name.to_string(), v.clone()).is_some() {
                    return Err(Fail(format!("--{name} given twice")));
                }
            } else {
                return Err(Fail(format!("unknown option --{name} (see --help)")));
            }
        }
        Ok(Opts(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, Fail> {
        self.get(name)
            .ok_or_else(|| Fail(format!("--{name} is required")))
    }

    fn number(&self, name: &str) -> Result<Option<u64>, Fail> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Fail(format!("--{name} must be a whole number, got `{v}`")))
            })
            .transpose()
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

fn run(args: &[String]) -> Result<(), Fail> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["--help"] | ["-h"] | ["help"] => {
            println!("{USAGE}");
            Ok(())
        }
        ["config", "check", file] => config_check(file),
        ["config", ..] => Err(Fail("usage: llm-api-guard config check FILE".into())),
        ["keys", cmd, rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            match *cmd {
                "new" => keys_new(&Opts::parse(
                    &rest,
                    &["user", "ttl-hours", "keyset", "config"],
                    &[],
                )?),
                "rotate" => keys_rotate(&Opts::parse(
                    &rest,
                    &["id", "overlap-hours", "ttl-hours", "keyset", "config"],
                    &[],
                )?),
                "revoke" => keys_revoke(&Opts::parse(&rest, &["id", "reason", "keyset"], &[])?),
                "list" => keys_list(&Opts::parse(
                    &rest,
                    &["keyset", "expiring-within-days", "config"],
                    &["json"],
                )?),
                other => Err(Fail(format!(
                    "unknown command `keys {other}` (new, rotate, revoke, list)"
                ))),
            }
        }
        [other, ..] => Err(Fail(format!(
            "unknown command `{other}` (keys, config; see --help)"
        ))),
    }
}

fn config_check(file: &str) -> Result<(), Fail> {
    let bytes = fs::read(file).map_err(|e| Fail(format!("cannot read {file}: {e}")))?;
    let policy = config::parse(&bytes, &ProcessEnvironment)?;
    for w in &policy.warnings {
        eprintln!("warning: {w}");
    }
    println!("{file}: config ok");
    Ok(())
}

/// Key rules and hashing for the CLI: from `--config` (the filter's own parser), else the
/// guide's defaults with the pepper from `LLM_API_GUARD_PEPPER`.
struct KeyContext {
    hasher: KeyHasher,
    default_ttl_hours: u64,
    max_ttl_hours: u64,
    rotation_interval_days: u64,
}

fn key_context(opts: &Opts) -> Result<KeyContext, Fail> {
    if let Some(file) = opts.get("config") {
        let bytes = fs::read(file).map_err(|e| Fail(format!("cannot read {file}: {e}")))?;
        let policy = config::parse(&bytes, &ProcessEnvironment)?;
        let kp = policy
            .keys
            .ok_or_else(|| Fail(format!("{file}: api_key_management is disabled")))?;
        return Ok(KeyContext {
            hasher: kp.hasher,
            default_ttl_hours: kp.default_ttl_hours,
            max_ttl_hours: kp.max_ttl_hours,
            rotation_interval_days: kp
                .rotation_notice
                .map_or(ROTATION_INTERVAL_DAYS, |(i, _)| (i / 86_400) as u64),
        });
    }
    let pepper = std::env::var(PEPPER_ENV).unwrap_or_default();
    if pepper.len() < MIN_PEPPER_BYTES {
        return Err(Fail(format!("{PEPPER_ENV} must hold the pepper (at least {MIN_PEPPER_BYTES} bytes), the same one Envoy passes to the filter")));
    }
    Ok(KeyContext {
        hasher: KeyHasher::peppered(pepper.as_bytes()),
        default_ttl_hours: DEFAULT_TTL_HOURS,
        max_ttl_hours: MAX_TTL_HOURS,
        rotation_interval_days: ROTATION_INTERVAL_DAYS,
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An exclusive advisory lock on `<keyset>.lock`, held while a command reads, changes and
/// replaces the keyset, so two concurrent commands cannot lose each other's update. Released
/// when dropped (or when the process exits).
struct KeysetLock {
    _file: fs::File,
}

fn lock_keyset(path: &Path) -> Result<KeysetLock, Fail> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            Fail(format!(
                "cannot open {}: {e}",
                Path::new(&lock_path).display()
            ))
        })?;
    file.lock().map_err(|e| {
        Fail(format!(
            "cannot lock {}: {e}",
            Path::new(&lock_path).display()
        ))
    })?;
    Ok(KeysetLock { _file: file })
}

fn load_keyset(path: &Path, must_exist: bool) -> Result<Keyset, Fail> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Fail(format!("{}: not a keyset: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(Keyset::default()),
        Err(e) => Err(Fail(format!("cannot read {}: {e}", path.display()))),
    }
}

fn save_keyset(path: &Path, keyset: &Keyset) -> Result<(), Fail> {
    let mut json = serde_json::to_string_pretty(keyset)?;
    json.push('\n');
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Fail(format!("cannot write {}: {e}", path.display()))
    })
}

fn generate(keyset: &Keyset) -> Result<(String, String), Fail> {
    for _ in 0..16 {
        let mut id_random = [0u8; 8];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut id_random)
            .map_err(|e| Fail(format!("the OS random generator failed: {e}")))?;
        getrandom::getrandom(&mut secret)
            .map_err(|e| Fail(format!("the OS random generator failed: {e}")))?;
        let (id, key) = format_key(&id_random, &secret);
        if !keyset.keys.iter().any(|r| r.id == id) {
            return Ok((id, key));
        }
    }
    Err(Fail("could not find a free key id".into()))
}

fn ttl(opts: &Opts, ctx: &KeyContext) -> Result<u64, Fail> {
    let hours = opts.number("ttl-hours")?.unwrap_or(ctx.default_ttl_hours);
    if hours == 0 {
        return Err(Fail("--ttl-hours must be at least 1".into()));
    }
    if hours > ctx.max_ttl_hours {
        return Err(Fail(format!(
            "--ttl-hours {hours} exceeds max_ttl_hours ({})",
            ctx.max_ttl_hours
        )));
    }
    Ok(hours)
}

fn valid_user(user: &str) -> Result<(), Fail> {
    if !is_valid_user(user) {
        return Err(Fail(
            "--user must be 1 to 256 characters without control characters".into(),
        ));
    }
    Ok(())
}

fn keys_new(opts: &Opts) -> Result<(), Fail> {
    let ctx = key_context(opts)?;
    let user = opts.required("user")?;
    valid_user(user)?;
    let path = Path::new(opts.required("keyset")?);
    let hours = ttl(opts, &ctx)?;
    let _lock = lock_keyset(path)?;
    let mut keyset = load_keyset(path, false)?;
    let (id, key) = generate(&keyset)?;
    let t = now();
    keyset.keys.push(new_record(
        &key,
        &id,
        user,
        &ctx.hasher,
        t,
        t + hours as i64 * 3600,
    ));
    save_keyset(path, &keyset)?;
    println!("{key}");
    eprintln!(
        "created key {id} for {user}, expires {}",
        format_rfc3339(t + hours as i64 * 3600)
    );
    Ok(())
}

fn find<'a>(keyset: &'a mut Keyset, id: &str) -> Result<&'a mut KeyRecord, Fail> {
    if !is_valid_id(id) {
        return Err(Fail(format!("`{id}` is not a key id")));
    }
    keyset
        .keys
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| Fail(format!("no key with id {id} in the keyset")))
}

fn keys_rotate(opts: &Opts) -> Result<(), Fail> {
    let ctx = key_context(opts)?;
    let id = opts.required("id")?;
    let path = Path::new(opts.required("keyset")?);
    let overlap = opts.number("overlap-hours")?.unwrap_or(24);
    let hours = ttl(opts, &ctx)?;
    let _lock = lock_keyset(path)?;
    let mut keyset = load_keyset(path, true)?;
    let (new_id, key) = generate(&keyset)?;
    let t = now();
    let old = find(&mut keyset, id)?;
    if old.revoked {
        return Err(Fail(format!(
            "key {id} is revoked; issue a new key with `keys new`"
        )));
    }
    if let Some(next) = &old.rotated_to {
        return Err(Fail(format!("key {id} was already rotated to {next}")));
    }
    let old_expiry =
        parse_rfc3339(&old.expires_at).map_err(|e| Fail(format!("key {id}: expires_at: {e}")))?;
    if old_expiry <= t {
        return Err(Fail(format!(
            "key {id} has expired; issue a new key with `keys new`"
        )));
    }
    let user = old.user.clone();
    let cut = old_expiry.min(t + overlap as i64 * 3600).max(t);
    old.expires_at = format_rfc3339(cut);
    old.rotated_to = Some(new_id.clone());
    let mut rec = new_record(
        &key,
        &new_id,
        &user,
        &ctx.hasher,
        t,
        t + hours as i64 * 3600,
    );
    rec.rotated_from = Some(id.to_string());
    keyset.keys.push(rec);
    save_keyset(path, &keyset)?;
    println!("{key}");
    eprintln!(
        "rotated {id} to {new_id} for {user}; {id} stays valid until {}",
        format_rfc3339(cut)
    );
    Ok(())
}

fn keys_revoke(opts: &Opts) -> Result<(), Fail> {
    let id = opts.required("id")?;
    let reason_s = opts.required("reason")?;
    let reason = RevocationReason::parse(reason_s).ok_or_else(|| {
        Fail(format!(
            "unknown reason `{reason_s}` (security_event, user_request, key_expiry)"
        ))
    })?;
    let path = Path::new(opts.required("keyset")?);
    let _lock = lock_keyset(path)?;
    let mut keyset = load_keyset(path, true)?;
    let rec = find(&mut keyset, id)?;
    if rec.revoked {
        return Err(Fail(format!("key {id} is already revoked")));
    }
    rec.revoked = true;
    rec.revoked_at = Some(format_rfc3339(now()));
    rec.revocation_reason = Some(reason);
    save_keyset(path, &keyset)?;
    eprintln!("revoked {id} ({})", reason.as_str());
    Ok(())
}

fn keys_list(opts: &Opts) -> Result<(), Fail> {
    let path = Path::new(opts.required("keyset")?);
    let within = opts.number("expiring-within-days")?;
    let interval_days = match opts.get("config") {
        Some(_) => key_context(opts)?.rotation_interval_days,
        None => ROTATION_INTERVAL_DAYS,
    };
    let keyset = load_keyset(path, true)?;
    let t = now();
    let mut rows = Vec::new();
    for r in &keyset.keys {
        let expires = parse_rfc3339(&r.expires_at)
            .map_err(|e| Fail(format!("key {}: expires_at: {e}", r.id)))?;
        let created = parse_rfc3339(&r.created_at)
            .map_err(|e| Fail(format!("key {}: created_at: {e}", r.id)))?;
        let due = expires.min(created + interval_days as i64 * 86_400);
        let state = if r.revoked {
            "revoked"
        } else if expires <= t {
            "expired"
        } else if r.rotated_to.is_some() {
            "rotated"
        } else {
            "active"
        };
        if let Some(days) = within {
            if state != "active" || due > t + days as i64 * 86_400 {
                continue;
            }
        }
        rows.push((r, state, due));
    }
    if opts.has("json") {
        let list: Vec<_> = rows
            .iter()
            .map(|(r, state, due)| {
                serde_json::json!({"id": r.id, "user": r.user, "created_at": r.created_at, "expires_at": r.expires_at,
                                   "rotate_by": format_rfc3339(*due), "state": state, "rotated_to": r.rotated_to,
                                   "revocation_reason": r.revocation_reason.map(|x| x.as_str())})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<12}  {:<24}  {:<20}  {:<20}  STATE",
        "ID", "USER", "EXPIRES_AT", "ROTATE_BY"
    );
    for (r, state, due) in rows {
        println!(
            "{:<12}  {:<24}  {:<20}  {:<20}  {state}",
            r.id,
            r.user,
            r.expires_at,
            format_rfc3339(due)
        );
    }
    Ok(())
}
