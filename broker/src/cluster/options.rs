//! The cluster's settings (`--cluster` and the `cluster_*` keys), checked at start, and the NATS
//! connection options built from them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use mphub_protocol::topic::validate_topic;

use crate::config::ConfigError;

/// The default subject prefix: topic `a.b` travels on NATS subject `mphub.a.b`.
pub const DEFAULT_PREFIX: &str = "mphub.";
/// The default limit on bytes waiting to be handed to NATS.
pub const DEFAULT_OUTBOUND_LIMIT: u64 = 64 << 20;
/// How often the NATS connection is pinged: a dead server is noticed within two of these.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Reconnect delays double from this...
const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// ...up to this.
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Messages async-nats holds per NATS subscription before it drops and reports a slow
/// consumer (its own default). 8,192 lost messages on this 2-core machine when the node was
/// starved of CPU for a moment at 300k msgs/s; 65,536 lost none.
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

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
            ClusterAuth::Token(_) => write!(f, "Token(<set>)"),
            ClusterAuth::UserPassword(u, _) => write!(f, "UserPassword({u:?}, <set>)"),
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
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("urls", &self.redacted_urls())
            .field("prefix", &self.prefix)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("outbound_limit", &self.outbound_limit)
            .finish()
    }
}

/// The `cluster*` keys as given, before checking.
#[derive(Debug, Default)]
pub struct ClusterKeys {
    pub urls: Vec<String>,
    pub prefix: Option<String>,
    pub token_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub tls_required: Option<bool>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub outbound_limit: Option<u64>,
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

fn read_secret(path: &PathBuf, key: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("{key}: cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(invalid(format!("{key}: {} is empty", path.display())));
    }
    Ok(secret)
}

fn readable(path: &PathBuf, key: &str) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| invalid(format!("{key}: cannot read {}: {e}", path.display())))
}

/// Checks one NATS URL: `nats://` or `tls://` (or a bare `host:port`), which async-nats parses.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let bad = |why: String| {
        invalid(format!(
            "cluster URL {:?}: {why}; use nats://host:4222 (or tls://host:4222)",
            redact(url)
        ))
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
        _ => Err(invalid(format!(
            "cluster_prefix {prefix:?}: give topic tokens ending in \".\" (like \"mphub.\"), or \"\""
        ))),
    }
}

impl ClusterKeys {
    /// Checks every key and reads the secret files; `None` when no cluster is configured.
    pub fn resolve(self) -> Result<Option<ClusterConfig>, ConfigError> {
        let urls: Vec<String> = self
            .urls
            .iter()
            .flat_map(|u| u.split(','))
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            let set = self.prefix.is_some()
                || self.token_file.is_some()
                || self.user.is_some()
                || self.creds_file.is_some()
                || self.tls_ca.is_some();
            if set {
                return Err(invalid(
                    "cluster_* settings are given but no cluster: add --cluster nats://host:4222"
                        .into(),
                ));
            }
            return Ok(None);
        }
        for u in &urls {
            check_url(u)?;
        }
        let prefix = self.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        check_prefix(&prefix)?;
        let auth = match (
            self.token_file,
            self.user,
            self.password_file,
            self.creds_file,
        ) {
            (None, None, None, None) => ClusterAuth::None,
            (Some(t), None, None, None) => {
                ClusterAuth::Token(read_secret(&t, "cluster_token_file")?)
            }
            (None, Some(u), Some(p), None) => {
                ClusterAuth::UserPassword(u, read_secret(&p, "cluster_password_file")?)
            }
            (None, None, None, Some(c)) => {
                readable(&c, "cluster_creds_file")?;
                ClusterAuth::CredsFile(c)
            }
            (None, Some(_), None, None) | (None, None, Some(_), None) => {
                return Err(invalid(
                    "cluster_user and cluster_password_file go together".into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "give one kind of NATS credentials: cluster_token_file, cluster_user with \
                     cluster_password_file, or cluster_creds_file"
                        .into(),
                ))
            }
        };
        let client = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                readable(&c, "cluster_tls_cert")?;
                readable(&k, "cluster_tls_key")?;
                Some((c, k))
            }
            _ => {
                return Err(invalid(
                    "cluster_tls_cert and cluster_tls_key go together".into(),
                ))
            }
        };
        if let Some(ca) = &self.tls_ca {
            readable(ca, "cluster_tls_ca")?;
        }
        let outbound_limit = self.outbound_limit.unwrap_or(DEFAULT_OUTBOUND_LIMIT);
        if outbound_limit == 0 {
            return Err(invalid("cluster_outbound_limit must be above 0".into()));
        }
        Ok(Some(ClusterConfig {
            urls,
            prefix,
            auth,
            tls: ClusterTls {
                required: self.tls_required.unwrap_or(false),
                ca: self.tls_ca,
                client,
            },
            outbound_limit,
        }))
    }
}

/// A URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// No wait before the first attempt, then 50 ms doubling up to 2 s.
fn reconnect_delay(attempts: usize) -> Duration {
    match attempts {
        0 | 1 => Duration::ZERO,
        n => {
            let shift = u32::try_from(n - 2).unwrap_or(u32::MAX).min(8);
            (RECONNECT_MIN * 2u32.pow(shift)).min(RECONNECT_MAX)
        }
    }
}

impl ClusterConfig {
    /// The URLs with passwords hidden.
    pub fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact(u)).collect()
    }

    /// NATS connection options: no echo (a node never hears its own publishes back), retry from
    /// the start (a node serves local clients while NATS is away), quick reconnects.
    pub async fn connect_options(&self, name: &str) -> std::io::Result<ConnectOptions> {
        let mut o = match &self.auth {
            ClusterAuth::None => ConnectOptions::new(),
            ClusterAuth::Token(t) => ConnectOptions::with_token(t.clone()),
            ClusterAuth::UserPassword(u, p) => {
                ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            ClusterAuth::CredsFile(path) => ConnectOptions::with_credentials_file(path).await?,
        };
        o = o
            .name(name)
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .ping_interval(PING_INTERVAL)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .reconnect_delay_callback(reconnect_delay)
            .require_tls(self.tls.required);
        if let Some(ca) = &self.tls.ca {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(urls: &str) -> ClusterKeys {
        ClusterKeys {
            urls: vec![urls.into()],
            ..Default::default()
        }
    }

    #[test]
    fn reconnects_start_at_once_then_back_off_to_two_seconds() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(3), Duration::from_millis(100));
        assert_eq!(reconnect_delay(100), Duration::from_secs(2));
    }

    #[test]
    fn no_url_means_no_cluster() {
        assert_eq!(ClusterKeys::default().resolve().unwrap(), None);
    }

    #[test]
    fn urls_split_on_commas_and_take_the_default_prefix() {
        let c = keys("nats://a:4222, nats://b:4222")
            .resolve()
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
    fn cluster_settings_without_a_cluster_are_an_error() {
        let k = ClusterKeys {
            prefix: Some("x.".into()),
            ..Default::default()
        };
        assert!(k.resolve().is_err());
    }

    #[test]
    fn one_kind_of_credentials_at_a_time() {
        let mut k = keys("nats://a:4222");
        k.user = Some("u".into());
        let err = k.resolve().unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://***@h:4222");
        let c = keys("nats://u:secret@h:4222").resolve().unwrap().unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }
}
