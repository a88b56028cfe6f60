//! Every setting, declared once. A field of [`Settings`] is at the same time a flag (its name
//! with `-`, help from its doc comment), a key of the TOML file (its name), and a resolved value
//! (its type checks itself: see `values.rs`); [`Settings::default`] holds the defaults.
//!
//! Flags beat the file: the file is read into a `Settings` (missing keys take the defaults), then
//! clap's `update_from_arg_matches` overwrites exactly the fields whose flag was given. For that
//! to hold, no flag has a clap default: every field is `required = false` without
//! `default_value`, and switches take an optional value (`--cluster-tls-required[=false]`).
//!
//! Adding a setting: a field here, its default in `Default`, a row in docs/configuration.md and
//! a line in deploy/mphub.toml (a test checks both).

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::users::{Payloads, UserSettings};
use super::values::{Count, ListenAddr, LogFormat, MetricsAddr, Seconds, Size, SlowConsumer, Urls};

/// Every flag and file key. Secrets are never here, only the files that hold them.
#[derive(Debug, Clone, PartialEq, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    // Not a doc comment: rustdoc would read `[v6]` as a link.
    #[arg(
        long,
        value_name = "ADDR",
        required = false,
        help = "Address to accept clients on: host:port, [v6]:port, unix:/path, unix:@name, or \
                tls://host:port (TLS; needs --tls-cert and --tls-key). Repeat for several. \
                Default 127.0.0.1:6000."
    )]
    pub listen: Vec<ListenAddr>,
    /// HTTP address for /metrics and /healthz, or `off`. Default 127.0.0.1:6001.
    #[arg(long, value_name = "ADDR|off", required = false)]
    pub metrics: MetricsAddr,
    /// File holding the authkey (one trailing newline is stripped). Else MPHUB_AUTHKEY.
    #[arg(long, value_name = "PATH")]
    pub authkey_file: Option<PathBuf>,
    /// Payloads every user without a policy of its own may publish: any, or data (a pickle
    /// that imports anything outside --allow-globals is refused). Default any.
    #[arg(long, value_enum, required = false)]
    pub payloads: Payloads,
    /// Globals a `data` payload may import, as module.qualname (datetime.datetime),
    /// comma-separated. Default none.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', required = false)]
    pub allow_globals: Vec<String>,
    /// Named users, each with its own key and permissions (file only: `[[users]]`).
    #[arg(skip)]
    pub users: Vec<UserSettings>,
    /// Largest frame accepted (bytes, or 64MiB style). Default 64MiB.
    #[arg(long, value_name = "BYTES", required = false)]
    pub max_frame: Size,
    /// Bytes queued for one connection before the slow-consumer policy applies. Default 32MiB.
    #[arg(long, value_name = "BYTES", required = false)]
    pub outbound_limit: Size,
    /// What to do with a connection past its outbound limit. Default disconnect.
    #[arg(long, value_enum, required = false)]
    pub slow_consumer: SlowConsumer,
    /// Most connections at once. Default 10000.
    #[arg(long, value_name = "N", required = false)]
    pub max_connections: Count,
    /// Most subscriptions one connection may hold. Default 10000.
    #[arg(long, value_name = "N", required = false)]
    pub max_subscriptions: Count,
    /// Certificate chain (PEM, the server's certificate first) for tls:// listeners.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM): tls:// clients must then present a certificate signed by one.
    #[arg(long, value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds allowed for the authentication handshake. Default 5.
    #[arg(long, value_name = "SECONDS", required = false)]
    pub handshake_timeout: Seconds,
    /// Seconds a frame has to arrive whole after its first byte, or the connection is closed
    /// and the memory it held is freed. Default 60.
    #[arg(long, value_name = "SECONDS", required = false)]
    pub frame_timeout: Seconds,
    /// Bytes of large frames still arriving, all connections together (at least max_frame);
    /// past it the broker reads no new large frame until one finishes. Default 256MiB.
    #[arg(long, value_name = "BYTES", required = false)]
    pub arriving_limit: Size,
    /// Seconds allowed at shutdown to flush queued messages. Default 5.
    #[arg(long, value_name = "SECONDS", required = false)]
    pub shutdown_timeout: Seconds,
    /// TCP keepalive on client connections: seconds of silence before the kernel probes a peer,
    /// and between probes (a vanished peer is dropped after about ten). Default 30.
    #[arg(long, value_name = "SECONDS", required = false)]
    pub keepalive: Seconds,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive). Default info.
    #[arg(long, value_name = "LEVEL", required = false)]
    pub log_level: String,
    /// Log format. Default text.
    #[arg(long, value_enum, required = false)]
    pub log_format: LogFormat,
    /// Join a NATS deployment: nats://host:4222[,nats://...] (tls:// for TLS). Default none.
    #[arg(long, value_name = "URLS", required = false)]
    pub cluster: Urls,
    /// Put before every topic to make its NATS subject. Default `mphub.`.
    #[arg(long, value_name = "PREFIX")]
    pub cluster_prefix: Option<String>,
    /// File holding the NATS token.
    #[arg(long, value_name = "PATH")]
    pub cluster_token_file: Option<PathBuf>,
    /// NATS user name (with --cluster-password-file).
    #[arg(long, value_name = "USER")]
    pub cluster_user: Option<String>,
    /// File holding the NATS password.
    #[arg(long, value_name = "PATH")]
    pub cluster_password_file: Option<PathBuf>,
    /// NATS credentials file (.creds: JWT and NKey seed).
    #[arg(long, value_name = "PATH")]
    pub cluster_creds_file: Option<PathBuf>,
    /// Refuse a NATS server without TLS.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub cluster_tls_required: Option<bool>,
    /// Extra CA certificates (PEM) to trust for NATS.
    #[arg(long, value_name = "PATH")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS, with --cluster-tls-key.
    #[arg(long, value_name = "PATH")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for NATS.
    #[arg(long, value_name = "PATH")]
    pub cluster_tls_key: Option<PathBuf>,
    /// Bytes waiting to go to NATS before more are counted and not forwarded. Default 16MiB.
    #[arg(long, value_name = "BYTES")]
    pub cluster_outbound_limit: Option<Size>,
    /// Bytes of publishes held while NATS is away, sent in order when it is back (0: none).
    /// Default 8MiB.
    #[arg(long, value_name = "BYTES")]
    pub cluster_reconnect_buffer: Option<Size>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: vec![ListenAddr::Tcp(([127, 0, 0, 1], 6000).into())],
            metrics: MetricsAddr::At(([127, 0, 0, 1], 6001).into()),
            authkey_file: None,
            payloads: Payloads::Any,
            allow_globals: Vec::new(),
            users: Vec::new(),
            max_frame: Size(64 << 20),
            outbound_limit: Size(32 << 20),
            slow_consumer: SlowConsumer::Disconnect,
            max_connections: Count(10_000),
            max_subscriptions: Count(10_000),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            handshake_timeout: Seconds::whole(5),
            frame_timeout: Seconds::whole(60),
            arriving_limit: Size(256 << 20),
            shutdown_timeout: Seconds::whole(5),
            keepalive: Seconds::whole(30),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            cluster: Urls::default(),
            cluster_prefix: None,
            cluster_token_file: None,
            cluster_user: None,
            cluster_password_file: None,
            cluster_creds_file: None,
            cluster_tls_required: None,
            cluster_tls_ca: None,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            cluster_outbound_limit: None,
            cluster_reconnect_buffer: None,
        }
    }
}

impl Settings {
    /// Every setting's name (the file key; the flag is the same with `-`), in declaration order.
    pub fn names() -> Vec<String> {
        Settings::augment_args(clap::Command::new("mphub"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    }

    /// Parses a TOML document; keys it does not set keep their defaults.
    pub fn from_toml(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }

    /// Lays the flags given in `matches` over these settings.
    pub fn apply_flags(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        clap::FromArgMatches::update_from_arg_matches(self, matches)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn with_flags(file: &str, flags: &[&str]) -> Settings {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("mphub").chain(flags.iter().copied()))
            .unwrap();
        let mut s = Settings::from_toml(file).unwrap();
        s.apply_flags(&matches).unwrap();
        s
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_the_defaults() {
        let s = with_flags(
            "max_frame = \"1MiB\"\nslow_consumer = \"drop\"\ncluster_tls_required = true",
            &["--max-frame", "10"],
        );
        assert_eq!(s.max_frame, Size(10));
        assert_eq!(s.slow_consumer, SlowConsumer::Drop);
        assert_eq!(s.cluster_tls_required, Some(true));
        assert_eq!(s.outbound_limit, Settings::default().outbound_limit);
    }

    #[test]
    fn no_flag_leaves_everything_as_the_file_says() {
        let file = "listen = [\"unix:/tmp/a.sock\"]\nmetrics = \"off\"\nmax_connections = 7";
        assert_eq!(with_flags(file, &[]), Settings::from_toml(file).unwrap());
    }

    #[test]
    fn a_switch_takes_an_optional_value() {
        assert_eq!(
            with_flags("", &["--cluster-tls-required"]).cluster_tls_required,
            Some(true)
        );
        assert_eq!(
            with_flags(
                "cluster_tls_required = true",
                &["--cluster-tls-required=false"]
            )
            .cluster_tls_required,
            Some(false)
        );
    }

    #[test]
    fn every_flag_is_a_file_key() {
        for name in Settings::names() {
            let err = Settings::from_toml(&format!("{name} = {{}}"))
                .expect_err("a table is never a valid value")
                .to_string();
            assert!(!err.contains("unknown field"), "{name}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let err = Settings::from_toml("max_frames = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_frames"), "{err}");
        let err = Settings::from_toml("max_frame = \"12 parsecs\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("12 parsecs"), "{err}");
        assert!(Settings::from_toml("max_connections = 0").is_err());
        assert!(Settings::from_toml("handshake_timeout = -1").is_err());
    }
}
