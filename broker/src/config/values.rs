//! The value types of settings: each parses from a flag's text (`FromStr`, for clap) and from
//! the TOML file (`Deserialize`), and checks itself while doing so, so a bad value is refused
//! in one place whichever way it came.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::ConfigError;

/// Implements `Deserialize` through `FromStr`, for values the file writes as strings.
macro_rules! deserialize_from_str {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
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
    /// TCP with TLS (`tls://host:port`): the same protocol inside TLS (`tls_cert`, `tls_key`).
    Tls(SocketAddr),
}

impl ListenAddr {
    /// Parses `host:port`, `[v6]:port`, `localhost:port`, `unix:/path`, `unix:@name` or
    /// `tls://host:port`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        s.parse()
    }

    /// True where a peer from another machine cannot connect.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(a) | ListenAddr::Tls(a) => a.ip().is_loopback(),
            ListenAddr::Unix(_) | ListenAddr::Abstract(_) => true,
        }
    }

    /// True for a `tls://` address.
    pub fn is_tls(&self) -> bool {
        matches!(self, ListenAddr::Tls(_))
    }
}

impl FromStr for ListenAddr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if let Some(rest) = s.strip_prefix("unix:") {
            return match rest.strip_prefix('@') {
                Some(name) if !name.is_empty() => Ok(ListenAddr::Abstract(name.to_owned())),
                None if !rest.is_empty() => Ok(ListenAddr::Unix(PathBuf::from(rest))),
                _ => Err(ConfigError::Listen(s.to_owned())),
            };
        }
        if let Some(rest) = s.strip_prefix("tls://") {
            return socket_addr(rest)
                .map(ListenAddr::Tls)
                .ok_or_else(|| ConfigError::Listen(s.to_owned()));
        }
        socket_addr(s)
            .map(ListenAddr::Tcp)
            .ok_or_else(|| ConfigError::Listen(s.to_owned()))
    }
}

deserialize_from_str!(
    ListenAddr,
    "an address: host:port, [v6]:port, unix:/path, unix:@name or tls://host:port"
);

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Abstract(n) => write!(f, "unix:@{n}"),
            ListenAddr::Tls(a) => write!(f, "tls://{a}"),
        }
    }
}

/// `host:port` with `localhost` read as `127.0.0.1` (no name lookups at start).
fn socket_addr(s: &str) -> Option<SocketAddr> {
    s.replace("localhost:", "127.0.0.1:").parse().ok()
}

/// The HTTP listener for `/metrics` and `/healthz`, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// `off`: no HTTP listener.
    Off,
    /// Serve on this address.
    At(SocketAddr),
}

impl MetricsAddr {
    /// The address, unless off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            MetricsAddr::Off => None,
            MetricsAddr::At(a) => Some(a),
        }
    }
}

impl FromStr for MetricsAddr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if s == "off" {
            return Ok(MetricsAddr::Off);
        }
        socket_addr(s)
            .map(MetricsAddr::At)
            .ok_or_else(|| ConfigError::Metrics(s.to_owned()))
    }
}

deserialize_from_str!(MetricsAddr, "host:port or \"off\"");

/// A number of bytes: plain, or with a unit (`64MiB`, `512 KiB`, `1G`; K, M, G are binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
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
            .map(Size)
            .ok_or_else(|| ConfigError::Size(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes, or a string like \"64MiB\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom(ConfigError::Size(n.to_string())))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in seconds, above 0 and below a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(Duration);

impl Seconds {
    /// Whole seconds (for defaults).
    pub const fn whole(s: u64) -> Seconds {
        Seconds(Duration::from_secs(s))
    }

    /// Checks the range: above 0 and below 86,400.
    pub fn new(s: f64) -> Result<Seconds, ConfigError> {
        if s.is_finite() && s > 0.0 && s < 86_400.0 {
            Ok(Seconds(Duration::from_secs_f64(s)))
        } else {
            Err(ConfigError::Seconds(s.to_string()))
        }
    }

    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Seconds {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let n: f64 = s
            .trim()
            .parse()
            .map_err(|_| ConfigError::Seconds(s.to_owned()))?;
        Seconds::new(n)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Seconds::new(f64::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// A count that must be at least 1 (connections, subscriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(pub(super) usize);

impl Count {
    /// `n`, which must be above 0 (checked when read from a flag or file).
    pub const fn new(n: usize) -> Option<Count> {
        if n == 0 {
            None
        } else {
            Some(Count(n))
        }
    }

    /// The number.
    pub fn get(self) -> usize {
        self.0
    }
}

impl FromStr for Count {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        s.trim()
            .parse()
            .ok()
            .and_then(Count::new)
            .ok_or_else(|| ConfigError::Count(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        usize::try_from(n)
            .ok()
            .and_then(Count::new)
            .ok_or_else(|| de::Error::custom(ConfigError::Count(n.to_string())))
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

/// NATS URLs: comma-separated in a flag or a file string, or a list in the file. Printed with
/// `{:?}` (a `Settings` or `Config` in a log line), passwords are hidden ([`redact`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Urls(pub Vec<String>);

impl fmt::Debug for Urls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|u| redact(u)))
            .finish()
    }
}

/// A URL with any user and password replaced (`nats://***@host:4222`), for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl FromStr for Urls {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Urls(
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for Urls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let all = match Form::deserialize(d)? {
            Form::One(s) => s,
            Form::Many(v) => v.join(","),
        };
        let Ok(urls) = all.parse();
        Ok(urls)
    }
}

/// A secret read from a file or the environment: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps the secret's bytes.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Reads a secret file: its bytes with one trailing newline (`\n` or `\r\n`) stripped.
pub fn read_secret(path: &std::path::Path) -> std::io::Result<Secret> {
    let mut key = std::fs::read(path)?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    Ok(Secret(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_password_never_prints() {
        let urls: Urls = "nats://u:secret@h:4222, nats://plain:4222".parse().unwrap();
        let shown = format!("{urls:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("nats://***@h:4222") && shown.contains("nats://plain:4222"));
        let settings = crate::config::Settings {
            cluster: urls,
            ..Default::default()
        };
        assert!(!format!("{settings:?}").contains("secret"));
    }

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
        assert_eq!(
            ListenAddr::parse("tls://localhost:6443").unwrap(),
            ListenAddr::Tls("127.0.0.1:6443".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("tls://[::1]:0").unwrap().to_string(),
            "tls://[::1]:0"
        );
        assert!(ListenAddr::parse("tls://0.0.0.0:1").unwrap().is_tls());
        assert!(!ListenAddr::parse("tls://0.0.0.0:1").unwrap().is_local());
        assert!(ListenAddr::parse("tls://").is_err());
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("nonsense").is_err());
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!("1024".parse::<Size>().unwrap(), Size(1024));
        assert_eq!("64MiB".parse::<Size>().unwrap(), Size(64 << 20));
        assert_eq!("2 G".parse::<Size>().unwrap(), Size(2 << 30));
        assert!("12 parsecs".parse::<Size>().is_err());
    }

    #[test]
    fn seconds_and_counts_check_their_range() {
        assert!("0".parse::<Seconds>().is_err());
        assert!("NaN".parse::<Seconds>().is_err());
        assert_eq!(
            "2.5".parse::<Seconds>().unwrap().duration().as_millis(),
            2500
        );
        assert!("0".parse::<Count>().is_err());
        assert_eq!("3".parse::<Count>().unwrap().get(), 3);
    }

    #[test]
    fn urls_split_on_commas() {
        let Ok(u) = "nats://a:4222, nats://b:4222,".parse::<Urls>();
        assert_eq!(u.0, vec!["nats://a:4222", "nats://b:4222"]);
    }

    #[test]
    fn a_secret_never_prints() {
        assert_eq!(format!("{:?}", Secret::new(b"k".to_vec())), "<secret>");
    }
}
