//! Configuration: built-in defaults, then the TOML file given with `--config`, then flags (flags
//! win). A leaf: nothing of the broker above it is imported here.
//!
//! - `settings.rs`: [`Settings`], every flag and file key declared once, with the defaults.
//! - `values.rs`: the value types (addresses, sizes, seconds, ...) that check themselves.
//! - `cluster.rs`: the `cluster_*` keys resolved into a [`ClusterConfig`].
//! - `tls.rs`: the `tls_*` keys read and checked into a [`ServerTls`] (rustls).
//! - this file: [`Config`], the whole resolved configuration as one value (what a reload
//!   replaces), and [`Source`], which remembers where it came from so it can be read again.
//!
//! Sizes take plain bytes or a unit: `64MiB`, `512KiB`, `1G`.

mod cluster;
mod settings;
mod tls;
mod users;
mod values;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use cluster::{
    check_prefix, ClusterAuth, ClusterConfig, ClusterTls, DEFAULT_OUTBOUND_LIMIT, DEFAULT_PREFIX,
};
pub use settings::Settings;
pub use tls::ServerTls;
pub use users::{PayloadPolicy, Payloads, Permissions, User, UserSettings, Users, DEFAULT_USER};
pub use values::{
    read_secret, redact, Count, ListenAddr, LogFormat, MetricsAddr, Seconds, Secret, Size,
    SlowConsumer, Urls,
};

/// A configuration that cannot be used, said in one line that names the setting.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Flags(String),
    #[error(
        "invalid listen address {0:?}: use host:port, [v6]:port, unix:/path, unix:@name or \
         tls://host:port"
    )]
    Listen(String),
    #[error("listen: give at least one address")]
    NoListen,
    #[error("invalid metrics address {0:?}: use host:port or off")]
    Metrics(String),
    #[error("invalid size {0:?}: use bytes, or a number with KiB, MiB, GiB (or K, M, G)")]
    Size(String),
    #[error("invalid time {0:?}: give seconds above 0 and below 86400")]
    Seconds(String),
    #[error("invalid count {0:?}: give a whole number above 0")]
    Count(String),
    #[error("{0} must be above 0")]
    Zero(&'static str),
    #[error("cannot read authkey file {path}")]
    AuthkeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the authkey is empty: give at least one byte (a long random key is best)")]
    EmptyAuthkey,
    #[error(
        "refusing to listen on {0} without an authkey (protected mode): anyone who can reach \
         it could publish and subscribe. Set an authkey with --authkey-file PATH or the \
         MPHUB_AUTHKEY environment variable, give users keys of their own ([[users]] in the \
         --config file), or listen on loopback or a Unix socket"
    )]
    Protected(String),
    #[error("{0} is given but no cluster: add --cluster nats://host:4222 (or remove {0})")]
    ClusterKeyWithoutCluster(&'static str),
    #[error("cluster URL {url:?}: {why}; use nats://host:4222 (or tls://host:4222)")]
    ClusterUrl { url: String, why: String },
    #[error("cluster_prefix {0:?}: give topic tokens ending in \".\" (like \"mphub.\"), or \"\"")]
    ClusterPrefix(String),
    #[error(
        "give one kind of NATS credentials: cluster_token_file, cluster_user with \
         cluster_password_file, or cluster_creds_file"
    )]
    ClusterCredentials,
    #[error("{0} and {1} go together")]
    Together(&'static str, &'static str),
    #[error("{key}: cannot read {path}")]
    File {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {path} is empty")]
    EmptySecret { key: &'static str, path: PathBuf },
    #[error("user {user:?}: {why}")]
    User { user: String, why: String },
    #[error(
        "users {0:?} and {1:?} have the same key: a client's answer could not tell them apart \
         (the shared key is the user \"default\")"
    )]
    SameKey(String, String),
    #[error(
        "listen {0} is tls:// but there is no certificate: give --tls-cert PATH and --tls-key \
         PATH (PEM files; file keys tls_cert, tls_key)"
    )]
    TlsWithoutCert(String),
    #[error(
        "{0} is given but no listener is tls://: add --listen tls://HOST:PORT (or remove {0})"
    )]
    TlsWithoutListener(&'static str),
    #[error("{key} {path}: {why}")]
    Tls {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("allow_globals: {0:?} is not a module.qualname name (like \"datetime.datetime\")")]
    Global(String),
    #[error("log_level {0:?}: {1} (give error, warn, info, debug, trace, or RUST_LOG directives)")]
    LogLevel(String, String),
}

/// The broker's whole configuration, resolved and checked: one value, so a reload can replace
/// it at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Every setting as given (defaults, file, flags).
    pub settings: Settings,
    /// Every user (the shared key is the user `default`) and the key ring that tells them
    /// apart; without any key, no ring: no handshake (loopback and Unix sockets only).
    pub users: Users,
    /// The NATS deployment to join; `None` is a single node.
    pub cluster: Option<ClusterConfig>,
    /// The top-level payload policy (`payloads`, `allow_globals`): every user's default, and
    /// what messages arriving from other nodes are judged by.
    pub payloads: PayloadPolicy,
    /// TLS for `tls://` listeners: the certificates as read when this configuration was
    /// resolved (a reload reads them again); `None` without a `tls://` listener.
    pub tls: Option<ServerTls>,
}

impl Config {
    /// The defaults with these listeners, the HTTP endpoint off, and `authkey` as the shared
    /// key: what in-process tests and programs embedding the broker start from.
    pub fn with_listeners(listen: Vec<ListenAddr>, authkey: Option<&[u8]>) -> Config {
        let shared = authkey.map(|k| Secret::new(k.to_vec()));
        Config {
            settings: Settings {
                listen,
                metrics: MetricsAddr::Off,
                ..Settings::default()
            },
            // One key (or none) cannot collide with another, nor have a bad name.
            users: Users::resolve(shared, &[], Payloads::Any, &[])
                .unwrap_or_else(|e| unreachable!("one shared key: {e}")),
            cluster: None,
            payloads: PayloadPolicy::Any,
            tls: None,
        }
    }

    /// The defaults: no key (development mode), loopback only.
    pub fn defaults() -> Config {
        Config::with_listeners(Settings::default().listen, None)
    }

    /// Resolves settings: reads the key files (the shared one, else `env_authkey`,
    /// `MPHUB_AUTHKEY`; each user's), checks what one setting cannot check alone, and resolves
    /// the cluster's settings.
    pub fn resolve(settings: Settings, env_authkey: Option<Secret>) -> Result<Config, ConfigError> {
        if settings.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        if settings.outbound_limit.bytes() == 0 {
            return Err(ConfigError::Zero("outbound_limit"));
        }
        let authkey = match &settings.authkey_file {
            Some(path) => Some(
                read_secret(path).map_err(|source| ConfigError::AuthkeyFile {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => env_authkey,
        };
        if authkey.as_ref().is_some_and(|k| k.expose().is_empty()) {
            return Err(ConfigError::EmptyAuthkey);
        }
        let users = Users::resolve(
            authkey,
            &settings.users,
            settings.payloads,
            &settings.allow_globals,
        )?;
        // A level the log filter cannot read fails here, so that a reload with it changes
        // nothing (rather than everything but the level).
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log_level) {
            return Err(ConfigError::LogLevel(
                settings.log_level.clone(),
                e.to_string(),
            ));
        }
        protected_mode(&settings.listen, &users)?;
        let cluster = ClusterConfig::from_settings(&settings)?;
        let payloads = PayloadPolicy::new(settings.payloads, &settings.allow_globals)?;
        let tls = ServerTls::from_settings(&settings)?;
        Ok(Config {
            settings,
            users,
            cluster,
            payloads,
            tls,
        })
    }
}

/// Protected mode (PROTOCOL §3): with no key at all, only loopback and Unix sockets may listen.
/// Checked when a configuration is resolved and again when a reload keeps the listeners it
/// started with (they are what is open, whatever the new file says).
pub fn protected_mode(listen: &[ListenAddr], users: &Users) -> Result<(), ConfigError> {
    if users.ring().is_none() {
        if let Some(open) = listen.iter().find(|l| !l.is_local()) {
            return Err(ConfigError::Protected(open.to_string()));
        }
    }
    Ok(())
}

/// Where the configuration comes from: a file (maybe), the flags given, the environment's key.
/// Kept for the broker's life so the file can be read again with the same flags over it.
#[derive(Debug, Clone)]
pub struct Source {
    file: Option<PathBuf>,
    flags: clap::ArgMatches,
    env_authkey: Option<Secret>,
}

impl Source {
    /// `flags` are matches of a command that includes [`Settings`]' arguments.
    pub fn new(
        file: Option<PathBuf>,
        flags: clap::ArgMatches,
        env_authkey: Option<Secret>,
    ) -> Self {
        Source {
            file,
            flags,
            env_authkey,
        }
    }

    /// The config file, if one was given.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the file (if any), lays the flags over it and resolves the result.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut settings = match &self.file {
            Some(path) => load_file(path)?,
            None => Settings::default(),
        };
        settings
            .apply_flags(&self.flags)
            .map_err(|e| ConfigError::Flags(e.to_string()))?;
        Config::resolve(settings, self.env_authkey.clone())
    }
}

/// Reads and parses a TOML file; keys it does not set keep their defaults.
pub fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    Settings::from_toml(&text).map_err(|e| {
        // One line: where (toml's own Display spans several lines with a source excerpt).
        let at = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        ConfigError::Parse {
            path: path.to_owned(),
            message: match at {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_owned(),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_mode_refuses_open_addresses_without_a_key() {
        let open = Settings {
            listen: vec!["0.0.0.0:6000".parse().unwrap()],
            ..Settings::default()
        };
        let err = Config::resolve(open.clone(), None).unwrap_err();
        assert!(err.to_string().contains("MPHUB_AUTHKEY"), "{err}");
        assert!(Config::resolve(open, Some(Secret::new(b"k".to_vec()))).is_ok());
    }

    #[test]
    fn an_empty_key_or_no_listener_is_refused() {
        let err = Config::resolve(Settings::default(), Some(Secret::new(Vec::new())));
        assert!(matches!(err, Err(ConfigError::EmptyAuthkey)));
        let none = Settings {
            listen: Vec::new(),
            ..Settings::default()
        };
        assert!(matches!(
            Config::resolve(none, None),
            Err(ConfigError::NoListen)
        ));
    }

    #[test]
    fn a_user_with_the_shared_key_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("mphub-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k");
        std::fs::write(&key, "shared\n").unwrap();
        let settings = Settings::from_toml(&format!(
            "[[users]]\nname = \"ingest\"\nauthkey_file = {:?}\n",
            key.display().to_string()
        ))
        .unwrap();
        let err = Config::resolve(settings, Some(Secret::new(b"shared".to_vec())))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"ingest\"") && !err.contains("shared\""),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_key_never_prints() {
        let c =
            Config::resolve(Settings::default(), Some(Secret::new(b"hunter2".to_vec()))).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
