//! The cluster's settings (`--cluster` and the `cluster_*` keys), checked at start. How they
//! become NATS connection options is the bridge's business (`cluster/connect.rs`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_nats::ServerAddr;
use mphub_protocol::topic::validate_topic;

use super::values::redact;
use super::{ConfigError, Settings};

/// The default subject prefix: topic `a.b` travels on NATS subject `mphub.a.b`.
pub const DEFAULT_PREFIX: &str = "mphub.";
/// The default limit on bytes waiting to be handed to NATS: half a subscriber's default
/// outbound limit, so that a backlog NATS takes at once when it recovers (plus what socket
/// buffers hold on the way) cannot by itself cut off a subscriber that keeps up.
pub const DEFAULT_OUTBOUND_LIMIT: u64 = 16 << 20;
/// The default reconnect buffer: publishes held while NATS is away (nats.go's default).
pub const DEFAULT_RECONNECT_BUFFER: u64 = 8 << 20;

/// How the node proves itself to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum ClusterAuth {
    /// No credentials, or those in the URLs (`nats://user:pass@host`).
    None,
    /// A token.
    Token(String),
    /// A user name and password.
    UserPassword(String, String),
    /// A NATS `.creds` file (JWT and NKey seed).
    CredsFile(PathBuf),
}

impl fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        match self {
            ClusterAuth::None => write!(f, "None"),
            ClusterAuth::Token(_) => write!(f, "Token(<secret>)"),
            ClusterAuth::UserPassword(u, _) => write!(f, "UserPassword({u:?}, <secret>)"),
            ClusterAuth::CredsFile(p) => write!(f, "CredsFile({p:?})"),
        }
    }
}

/// TLS towards NATS. `tls://` URLs or a server that demands TLS turn it on as well.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTls {
    /// Refuse a server that does not offer TLS.
    pub required: bool,
    /// Extra root certificates (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Everything the node needs to join a NATS deployment.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS servers to try, as given (checked to parse).
    pub urls: Vec<String>,
    /// Put before every topic to make its NATS subject; empty or ending in `.`.
    pub prefix: String,
    /// Credentials.
    pub auth: ClusterAuth,
    /// TLS options.
    pub tls: ClusterTls,
    /// Bytes waiting to be handed to NATS before further publishes are counted and not forwarded.
    pub outbound_limit: u64,
    /// Bytes of publishes held while NATS is away, sent when it is back; 0 holds none.
    pub reconnect_buffer: u64,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("urls", &self.redacted_urls())
            .field("prefix", &self.prefix)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("outbound_limit", &self.outbound_limit)
            .field("reconnect_buffer", &self.reconnect_buffer)
            .finish()
    }
}

impl ClusterConfig {
    /// The URLs with passwords hidden.
    pub fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact(u)).collect()
    }

    /// A warning when what NATS may take at once on recovering (the backlog while connected, or
    /// the reconnect buffer) is over half a connection's outbound limit (`outbound_limit`,
    /// bytes): released in one go, with what socket buffers hold on the way, it could cut off
    /// subscribers on other nodes that keep up.
    pub fn burst_warning(&self, outbound_limit: u64) -> Option<String> {
        let (key, bytes) = if self.outbound_limit >= self.reconnect_buffer {
            ("cluster_outbound_limit", self.outbound_limit)
        } else {
            ("cluster_reconnect_buffer", self.reconnect_buffer)
        };
        (bytes > outbound_limit / 2).then(|| {
            format!(
                "{key} ({bytes} bytes) is over half of outbound_limit ({outbound_limit} bytes): \
                 a backlog NATS takes at once when it recovers may cut off subscribers on other \
                 nodes as slow consumers; keep it at most half of outbound_limit"
            )
        })
    }

    /// Checks every `cluster*` setting and reads the secret files; `None` without `cluster`.
    pub fn from_settings(s: &Settings) -> Result<Option<ClusterConfig>, ConfigError> {
        // Every `cluster_*` key: given without `cluster`, it is a mistake worth stopping for.
        let keys = [
            ("cluster_prefix", s.cluster_prefix.is_some()),
            ("cluster_token_file", s.cluster_token_file.is_some()),
            ("cluster_user", s.cluster_user.is_some()),
            ("cluster_password_file", s.cluster_password_file.is_some()),
            ("cluster_creds_file", s.cluster_creds_file.is_some()),
            ("cluster_tls_required", s.cluster_tls_required.is_some()),
            ("cluster_tls_ca", s.cluster_tls_ca.is_some()),
            ("cluster_tls_cert", s.cluster_tls_cert.is_some()),
            ("cluster_tls_key", s.cluster_tls_key.is_some()),
            ("cluster_outbound_limit", s.cluster_outbound_limit.is_some()),
            (
                "cluster_reconnect_buffer",
                s.cluster_reconnect_buffer.is_some(),
            ),
        ];
        let urls = s.cluster.0.clone();
        if urls.is_empty() {
            return match keys.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(ConfigError::ClusterKeyWithoutCluster(key)),
                None => Ok(None),
            };
        }
        for u in &urls {
            check_url(u)?;
        }
        let prefix = s
            .cluster_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        check_prefix(&prefix)?;
        let auth = match (
            &s.cluster_token_file,
            &s.cluster_user,
            &s.cluster_password_file,
            &s.cluster_creds_file,
        ) {
            (None, None, None, None) => ClusterAuth::None,
            (Some(t), None, None, None) => {
                ClusterAuth::Token(read_secret(t, "cluster_token_file")?)
            }
            (None, Some(u), Some(p), None) => {
                ClusterAuth::UserPassword(u.clone(), read_secret(p, "cluster_password_file")?)
            }
            (None, None, None, Some(c)) => {
                readable(c, "cluster_creds_file")?;
                ClusterAuth::CredsFile(c.clone())
            }
            (None, Some(_), None, None) | (None, None, Some(_), None) => {
                return Err(ConfigError::Together(
                    "cluster_user",
                    "cluster_password_file",
                ))
            }
            _ => return Err(ConfigError::ClusterCredentials),
        };
        let client = match (&s.cluster_tls_cert, &s.cluster_tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                readable(c, "cluster_tls_cert")?;
                readable(k, "cluster_tls_key")?;
                Some((c.clone(), k.clone()))
            }
            _ => return Err(ConfigError::Together("cluster_tls_cert", "cluster_tls_key")),
        };
        if let Some(ca) = &s.cluster_tls_ca {
            readable(ca, "cluster_tls_ca")?;
        }
        let outbound_limit = s
            .cluster_outbound_limit
            .map_or(DEFAULT_OUTBOUND_LIMIT, |l| l.bytes());
        if outbound_limit == 0 {
            return Err(ConfigError::Zero("cluster_outbound_limit"));
        }
        let reconnect_buffer = s
            .cluster_reconnect_buffer
            .map_or(DEFAULT_RECONNECT_BUFFER, |l| l.bytes());
        Ok(Some(ClusterConfig {
            urls,
            prefix,
            auth,
            tls: ClusterTls {
                required: s.cluster_tls_required.unwrap_or(false),
                ca: s.cluster_tls_ca.clone(),
                client,
            },
            outbound_limit,
            reconnect_buffer,
        }))
    }
}

fn read_secret(path: &Path, key: &'static str) -> Result<String, ConfigError> {
    let unreadable = |source| ConfigError::File {
        key,
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(ConfigError::EmptySecret {
            key,
            path: path.to_owned(),
        });
    }
    Ok(secret)
}

fn readable(path: &Path, key: &'static str) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| ConfigError::File {
            key,
            path: path.to_owned(),
            source,
        })
}

/// Checks one NATS URL: `nats://` or `tls://` (or a bare `host:port`), which async-nats parses.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let bad = |why: String| ConfigError::ClusterUrl {
        url: redact(url),
        why,
    };
    match url.split_once("://") {
        Some(("nats" | "tls", _)) => {}
        Some((scheme, _)) => return Err(bad(format!("scheme {scheme:?} is not NATS"))),
        None if url.contains('/') => return Err(bad("not a URL".into())),
        None => {}
    }
    ServerAddr::from_str(url)
        .map(|_| ())
        .map_err(|e| bad(e.to_string()))
}

/// Checks the prefix: empty, or valid topic tokens followed by one `.`.
pub fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('.') {
        Some(head) if validate_topic(head).is_ok() && !head.starts_with('$') => Ok(()),
        _ => Err(ConfigError::ClusterPrefix(prefix.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(urls: &str) -> Settings {
        Settings {
            cluster: urls.parse().unwrap_or_default(),
            ..Settings::default()
        }
    }

    #[test]
    fn no_url_means_no_cluster() {
        assert_eq!(
            ClusterConfig::from_settings(&Settings::default()).unwrap(),
            None
        );
    }

    #[test]
    fn urls_take_the_default_prefix() {
        let c = ClusterConfig::from_settings(&cluster("nats://a:4222, nats://b:4222"))
            .unwrap()
            .unwrap();
        assert_eq!(c.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(c.prefix, "mphub.");
    }

    #[test]
    fn only_nats_urls_pass() {
        assert!(check_url("nats://127.0.0.1:4222").is_ok());
        assert!(check_url("tls://nats.example:4222").is_ok());
        assert!(check_url("localhost:4222").is_ok());
        assert!(check_url("http://host:4222").is_err());
        assert!(check_url("http//nope").is_err());
    }

    #[test]
    fn prefixes_are_tokens_ending_in_a_dot_or_empty() {
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("mphub.").is_ok());
        assert!(check_prefix("prod.hub.").is_ok());
        assert!(check_prefix("mphub").is_err());
        assert!(check_prefix("a..").is_err());
        assert!(check_prefix("a.*.").is_err());
        assert!(check_prefix("$sys.").is_err());
    }

    #[test]
    fn every_cluster_key_without_a_cluster_is_an_error() {
        let names: Vec<String> = Settings::names()
            .into_iter()
            .filter(|n| n.starts_with("cluster_"))
            .collect();
        assert_eq!(names.len(), 11, "a new cluster_* key must join the check");
        let flags = [
            "--cluster-prefix=x.",
            "--cluster-token-file=t",
            "--cluster-user=u",
            "--cluster-password-file=p",
            "--cluster-creds-file=c",
            "--cluster-tls-required",
            "--cluster-tls-ca=a",
            "--cluster-tls-cert=c",
            "--cluster-tls-key=k",
            "--cluster-outbound-limit=1",
            "--cluster-reconnect-buffer=1",
        ];
        let cmd = <Settings as clap::Args>::augment_args(clap::Command::new("t"));
        for flag in flags {
            let m = cmd.clone().try_get_matches_from(["t", flag]).unwrap();
            let mut s = Settings::default();
            s.apply_flags(&m).unwrap();
            let err = ClusterConfig::from_settings(&s).unwrap_err().to_string();
            assert!(err.contains("no cluster"), "{flag}: {err}");
        }
    }

    #[test]
    fn the_reconnect_buffer_defaults_to_8_mib_and_may_be_off() {
        let c = ClusterConfig::from_settings(&cluster("nats://a:4222"))
            .unwrap()
            .unwrap();
        assert_eq!((c.outbound_limit, c.reconnect_buffer), (16 << 20, 8 << 20));
        let mut s = cluster("nats://a:4222");
        s.cluster_reconnect_buffer = Some("0".parse().unwrap());
        let off = ClusterConfig::from_settings(&s).unwrap().unwrap();
        assert_eq!(off.reconnect_buffer, 0);
    }

    #[test]
    fn a_backlog_over_half_a_subscribers_limit_is_warned_about() {
        let mut c = ClusterConfig::from_settings(&cluster("nats://a:4222"))
            .unwrap()
            .unwrap();
        assert_eq!(
            c.burst_warning(32 << 20),
            None,
            "the defaults: 16 MiB, half of 32"
        );
        let w = c.burst_warning(30 << 20).unwrap();
        assert!(w.contains("cluster_outbound_limit"), "{w}");
        c.reconnect_buffer = 64 << 20;
        let w = c.burst_warning(32 << 20).unwrap();
        assert!(w.contains("cluster_reconnect_buffer"), "{w}");
    }

    #[test]
    fn one_kind_of_credentials_at_a_time() {
        let mut s = cluster("nats://a:4222");
        s.cluster_user = Some("u".into());
        let err = ClusterConfig::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://***@h:4222");
        let c = ClusterConfig::from_settings(&cluster("nats://u:secret@h:4222"))
            .unwrap()
            .unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }
}
