//! Configuration: defaults, the TOML file, then command-line flags (flags win).
//!
//! Every flag has a key of the same name in the file, with `_` for `-`
//! (`--max-frame` is `max_frame`). Sizes take plain bytes or a suffix: `64MiB`, `512KiB`, `1G`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// A configuration that cannot be used, said in one line.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid listen address {0:?}: use host:port, [v6]:port, unix:/path or unix:@name")]
    Listen(String),
    #[error("invalid metrics address {0:?}: use host:port or off")]
    Metrics(String),
    #[error("invalid size {0:?}: use bytes, or a number with KiB, MiB, GiB (or K, M, G)")]
    Size(String),
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
         MPHUB_AUTHKEY environment variable, or listen on loopback or a Unix socket"
    )]
    Protected(String),
    #[error("{0}")]
    Invalid(String),
}

/// Where to listen for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// TCP, IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A Unix socket at a path.
    Unix(PathBuf),
    /// A Linux abstract Unix socket (`unix:@name`; Python's `"\0name"`).
    Abstract(String),
}

impl ListenAddr {
    /// Parses `host:port`, `[v6]:port`, `unix:/path` or `unix:@name`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        if let Some(rest) = s.strip_prefix("unix:") {
            return match rest.strip_prefix('@') {
                Some(name) if !name.is_empty() => Ok(ListenAddr::Abstract(name.to_owned())),
                None if !rest.is_empty() => Ok(ListenAddr::Unix(PathBuf::from(rest))),
                _ => Err(ConfigError::Listen(s.to_owned())),
            };
        }
        let s2 = s.replace("localhost:", "127.0.0.1:");
        s2.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| ConfigError::Listen(s.to_owned()))
    }

    /// True where a peer from another machine cannot connect.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(a) => a.ip().is_loopback(),
            ListenAddr::Unix(_) | ListenAddr::Abstract(_) => true,
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Abstract(n) => write!(f, "unix:@{n}"),
        }
    }
}

/// What happens when a connection's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// Close that connection (counted and logged).
    Disconnect,
    /// Drop new messages for it (counted).
    Drop,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// The broker's settings, resolved.
#[derive(Clone)]
pub struct Config {
    /// Client listeners.
    pub listen: Vec<ListenAddr>,
    /// The HTTP listener for `/metrics` and `/healthz`; `None` is off.
    pub metrics: Option<SocketAddr>,
    /// The shared secret; `None` means no handshake (loopback and Unix sockets only).
    pub authkey: Option<Vec<u8>>,
    /// Largest frame body accepted, in bytes.
    pub max_frame: u64,
    /// Bytes queued for one connection before the slow-consumer policy applies.
    pub outbound_limit: u64,
    /// The slow-consumer policy.
    pub slow_consumer: SlowConsumer,
    /// Most connections at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Most subscriptions (patterns and group memberships) one connection may hold.
    pub max_subscriptions: usize,
    /// Time allowed for the authentication handshake.
    pub handshake_timeout: Duration,
    /// Time allowed at shutdown to flush outbound queues.
    pub shutdown_timeout: Duration,
    /// `tracing` filter, e.g. `info` or `mphub_broker=debug`.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// The NATS deployment to join; `None` is a single node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("metrics", &self.metrics)
            .field("authkey", &self.authkey.as_ref().map(|_| "<set>"))
            .field("max_frame", &self.max_frame)
            .field("outbound_limit", &self.outbound_limit)
            .field("slow_consumer", &self.slow_consumer)
            .field("max_connections", &self.max_connections)
            .field("max_subscriptions", &self.max_subscriptions)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 6000)))],
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 6001))),
            authkey: None,
            max_frame: 64 << 20,
            outbound_limit: 32 << 20,
            slow_consumer: SlowConsumer::Disconnect,
            max_connections: 10_000,
            max_subscriptions: 10_000,
            handshake_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            cluster: None,
        }
    }
}

/// NATS URLs in the file: one string (comma-separated) or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    fn into_vec(self) -> Vec<String> {
        match self {
            Urls::One(s) => vec![s],
            Urls::Many(v) => v,
        }
    }
}

/// A size in the file: a number of bytes or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<u64, ConfigError> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => parse_size(s),
        }
    }
}

/// Parses `1048576`, `64MiB`, `512 KiB`, `1G`.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| ConfigError::Size(s.to_owned()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(ConfigError::Size(s.to_owned())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| ConfigError::Size(s.to_owned()))
}

/// The config file's keys: each flag's name with `_` for `-`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<Vec<String>>,
    pub metrics: Option<String>,
    pub authkey_file: Option<PathBuf>,
    pub max_frame: Option<Size>,
    pub outbound_limit: Option<Size>,
    pub slow_consumer: Option<SlowConsumer>,
    pub max_connections: Option<usize>,
    pub max_subscriptions: Option<usize>,
    pub handshake_timeout: Option<f64>,
    pub shutdown_timeout: Option<f64>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub cluster: Option<Urls>,
    pub cluster_prefix: Option<String>,
    pub cluster_token_file: Option<PathBuf>,
    pub cluster_user: Option<String>,
    pub cluster_password_file: Option<PathBuf>,
    pub cluster_creds_file: Option<PathBuf>,
    pub cluster_tls_required: Option<bool>,
    pub cluster_tls_ca: Option<PathBuf>,
    pub cluster_tls_cert: Option<PathBuf>,
    pub cluster_tls_key: Option<PathBuf>,
    pub cluster_outbound_limit: Option<Size>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Lays `over` on top of `self`: every key `over` sets wins.
    pub fn merge(self, over: FileConfig) -> FileConfig {
        FileConfig {
            listen: over.listen.or(self.listen),
            metrics: over.metrics.or(self.metrics),
            authkey_file: over.authkey_file.or(self.authkey_file),
            max_frame: over.max_frame.or(self.max_frame),
            outbound_limit: over.outbound_limit.or(self.outbound_limit),
            slow_consumer: over.slow_consumer.or(self.slow_consumer),
            max_connections: over.max_connections.or(self.max_connections),
            max_subscriptions: over.max_subscriptions.or(self.max_subscriptions),
            handshake_timeout: over.handshake_timeout.or(self.handshake_timeout),
            shutdown_timeout: over.shutdown_timeout.or(self.shutdown_timeout),
            log_level: over.log_level.or(self.log_level),
            log_format: over.log_format.or(self.log_format),
            cluster: over.cluster.or(self.cluster),
            cluster_prefix: over.cluster_prefix.or(self.cluster_prefix),
            cluster_token_file: over.cluster_token_file.or(self.cluster_token_file),
            cluster_user: over.cluster_user.or(self.cluster_user),
            cluster_password_file: over.cluster_password_file.or(self.cluster_password_file),
            cluster_creds_file: over.cluster_creds_file.or(self.cluster_creds_file),
            cluster_tls_required: over.cluster_tls_required.or(self.cluster_tls_required),
            cluster_tls_ca: over.cluster_tls_ca.or(self.cluster_tls_ca),
            cluster_tls_cert: over.cluster_tls_cert.or(self.cluster_tls_cert),
            cluster_tls_key: over.cluster_tls_key.or(self.cluster_tls_key),
            cluster_outbound_limit: over.cluster_outbound_limit.or(self.cluster_outbound_limit),
        }
    }

    /// Resolves to a [`Config`]; `env_authkey` is `MPHUB_AUTHKEY` when set.
    pub fn resolve(self, env_authkey: Option<Vec<u8>>) -> Result<Config, ConfigError> {
        let d = Config::default();
        let listen = match self.listen {
            Some(l) if l.is_empty() => {
                return Err(ConfigError::Invalid(
                    "listen: give at least one address".into(),
                ))
            }
            Some(l) => l
                .iter()
                .map(|s| ListenAddr::parse(s))
                .collect::<Result<_, _>>()?,
            None => d.listen,
        };
        let metrics = match self.metrics.as_deref() {
            None => d.metrics,
            Some("off") => None,
            Some(s) => Some(
                s.replace("localhost:", "127.0.0.1:")
                    .parse()
                    .map_err(|_| ConfigError::Metrics(s.to_owned()))?,
            ),
        };
        let authkey = match self.authkey_file {
            Some(path) => {
                let mut key = std::fs::read(&path)
                    .map_err(|source| ConfigError::AuthkeyFile { path, source })?;
                if key.last() == Some(&b'\n') {
                    key.pop();
                }
                Some(key)
            }
            None => env_authkey,
        };
        if authkey.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::EmptyAuthkey);
        }
        if authkey.is_none() {
            if let Some(open) = listen.iter().find(|l| !l.is_local()) {
                return Err(ConfigError::Protected(open.to_string()));
            }
        }
        let secs =
            |v: Option<f64>, default: Duration, name: &str| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) if s.is_finite() && s > 0.0 && s < 86_400.0 => {
                        Ok(Duration::from_secs_f64(s))
                    }
                    Some(s) => Err(ConfigError::Invalid(format!(
                        "{name} = {s}: give seconds between 0 and 86400"
                    ))),
                }
            };
        let max_frame = self
            .max_frame
            .map(|s| s.bytes())
            .transpose()?
            .unwrap_or(d.max_frame);
        let outbound_limit = self
            .outbound_limit
            .map(|s| s.bytes())
            .transpose()?
            .unwrap_or(d.outbound_limit);
        if outbound_limit == 0 {
            return Err(ConfigError::Invalid(
                "outbound_limit must be above 0".into(),
            ));
        }
        let max_connections = self.max_connections.unwrap_or(d.max_connections);
        if max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections must be above 0".into(),
            ));
        }
        let cluster = crate::cluster::options::ClusterKeys {
            urls: self.cluster.map(Urls::into_vec).unwrap_or_default(),
            prefix: self.cluster_prefix,
            token_file: self.cluster_token_file,
            user: self.cluster_user,
            password_file: self.cluster_password_file,
            creds_file: self.cluster_creds_file,
            tls_required: self.cluster_tls_required,
            tls_ca: self.cluster_tls_ca,
            tls_cert: self.cluster_tls_cert,
            tls_key: self.cluster_tls_key,
            outbound_limit: self.cluster_outbound_limit.map(|s| s.bytes()).transpose()?,
        }
        .resolve()?;
        Ok(Config {
            cluster,
            listen,
            metrics,
            authkey,
            max_frame,
            outbound_limit,
            slow_consumer: self.slow_consumer.unwrap_or(d.slow_consumer),
            max_connections,
            max_subscriptions: self.max_subscriptions.unwrap_or(d.max_subscriptions),
            handshake_timeout: secs(
                self.handshake_timeout,
                d.handshake_timeout,
                "handshake_timeout",
            )?,
            shutdown_timeout: secs(
                self.shutdown_timeout,
                d.shutdown_timeout,
                "shutdown_timeout",
            )?,
            log_level: self.log_level.unwrap_or(d.log_level),
            log_format: self.log_format.unwrap_or(d.log_format),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_every_kind_parse() {
        assert_eq!(
            ListenAddr::parse("127.0.0.1:6000").unwrap(),
            ListenAddr::Tcp("127.0.0.1:6000".parse().unwrap())
        );
        assert!(matches!(ListenAddr::parse("[::1]:0").unwrap(), ListenAddr::Tcp(a) if a.is_ipv6()));
        assert_eq!(
            ListenAddr::parse("unix:/tmp/x.sock").unwrap(),
            ListenAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            ListenAddr::parse("unix:@hub").unwrap(),
            ListenAddr::Abstract("hub".into())
        );
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("nonsense").is_err());
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("2 G").unwrap(), 2 << 30);
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn protected_mode_refuses_open_addresses_without_a_key() {
        let open = FileConfig {
            listen: Some(vec!["0.0.0.0:6000".into()]),
            ..Default::default()
        };
        let err = open.clone().resolve(None).unwrap_err();
        assert!(err.to_string().contains("MPHUB_AUTHKEY"), "{err}");
        assert!(open.resolve(Some(b"k".to_vec())).is_ok());
    }

    #[test]
    fn flags_beat_the_file() {
        let file: FileConfig =
            toml::from_str("max_frame = \"1MiB\"\nslow_consumer = \"drop\"").unwrap();
        let flags = FileConfig {
            max_frame: Some(Size::Bytes(10)),
            ..Default::default()
        };
        let c = file.merge(flags).resolve(None).unwrap();
        assert_eq!(c.max_frame, 10);
        assert_eq!(c.slow_consumer, SlowConsumer::Drop);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<FileConfig>("max_frames = 1").is_err());
    }
}
