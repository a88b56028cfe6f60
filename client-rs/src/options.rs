//! [`ConnectOptions`]: how a [`Client`](crate::Client) connects and behaves.

use std::time::Duration;

/// Options for [`Client::connect`](crate::Client::connect); `ConnectOptions::new()` gives the
/// defaults, each setter returns the options for chaining.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) authkey: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) reconnect: bool,
    pub(crate) max_reconnect_attempts: Option<u32>,
    pub(crate) reconnect_wait: (Duration, Duration),
    pub(crate) max_pending: usize,
    pub(crate) send_queue: usize,
    pub(crate) max_frame: u64,
    pub(crate) name: String,
    pub(crate) ping_interval: Duration,
    pub(crate) max_outstanding_pings: u32,
    pub(crate) tls: Option<crate::tls::Config>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("authkey", &self.authkey.as_ref().map(|_| "<set>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect", &self.reconnect)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("reconnect_wait", &self.reconnect_wait)
            .field("max_pending", &self.max_pending)
            .field("send_queue", &self.send_queue)
            .field("max_frame", &self.max_frame)
            .field("name", &self.name)
            .field("ping_interval", &self.ping_interval)
            .field("max_outstanding_pings", &self.max_outstanding_pings)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            authkey: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            reconnect: true,
            max_reconnect_attempts: Some(60),
            reconnect_wait: (Duration::from_millis(50), Duration::from_secs(2)),
            max_pending: 65_536,
            send_queue: 8_192,
            max_frame: crate::connection::DEFAULT_MAX_FRAME,
            name: default_name(),
            ping_interval: Duration::from_secs(20),
            max_outstanding_pings: 2,
            tls: None,
        }
    }
}

/// The program's name and pid, `loadgen[4242]`: what a client calls its connection unless told
/// otherwise (as the Python client does).
fn default_name() -> String {
    let prog = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let prog: String = prog
        .chars()
        .map(|c| {
            if mphub_protocol::name::check(&c.to_string()).is_ok() {
                c
            } else {
                '?'
            }
        })
        .collect();
    let prog = if prog.is_empty() {
        "rust".to_owned()
    } else {
        prog
    };
    let pid = format!("[{}]", std::process::id());
    let keep = mphub_protocol::name::MAX_NAME.saturating_sub(pid.len());
    prog.chars().take(keep).chain(pid.chars()).collect()
}

impl ConnectOptions {
    /// The defaults: no authkey, reconnect on (60 attempts, 50 ms doubling to 2 s), 65,536
    /// pending messages per subscription, 8,192 queued outgoing frames, 64 MiB frames, named
    /// after the program and its pid, keepalive pings after 20 s of silence (2 unanswered:
    /// dead).
    pub fn new() -> Self {
        Self::default()
    }

    /// The broker's (or Listener's) authkey. Without one there is no handshake.
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// Time allowed for dialling and the handshake (default 5 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Time `subscribe` and `flush` wait for the broker's answer (default 10 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Reconnect and resubscribe after a lost connection (default true).
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// Attempts before giving up; `None` retries forever (default 60).
    pub fn max_reconnect_attempts(mut self, n: Option<u32>) -> Self {
        self.max_reconnect_attempts = n;
        self
    }

    /// First and longest wait between reconnect attempts (doubling, with jitter).
    pub fn reconnect_wait(mut self, first: Duration, most: Duration) -> Self {
        self.reconnect_wait = (first, most.max(first));
        self
    }

    /// Messages a subscription holds before it drops (and counts) new ones (default 65,536).
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// Outgoing frames queued before `publish` waits (default 8,192). While disconnected,
    /// publishes wait here for the reconnect.
    pub fn send_queue(mut self, n: usize) -> Self {
        self.send_queue = n.max(1);
        self
    }

    /// Largest frame accepted from the broker (default 64 MiB; match the broker's).
    pub fn max_frame(mut self, bytes: u64) -> Self {
        self.max_frame = bytes;
        self
    }

    /// What the broker's logs and status page call this connection (sent as `$hello` on every
    /// connect): 1 to 64 printable characters, checked by `connect` ([`Error::Name`]).
    /// Default: the program's name and pid, `loadgen[4242]`.
    ///
    /// [`Error::Name`]: crate::Error::Name
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Keepalive: after this long with nothing from the broker, send a `$ping` (default 20 s;
    /// zero turns keepalive off). Traffic makes pings unnecessary: any frame received counts.
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every;
        self
    }

    /// Unanswered keepalive pings after which, one `ping_interval` later, the connection is
    /// dead: it is closed and re-established as after any loss, subscriptions restored
    /// (default 2). A broker that stops answering is noticed within
    /// `ping_interval * (max_outstanding_pings + 1)`.
    pub fn max_outstanding_pings(mut self, n: u32) -> Self {
        self.max_outstanding_pings = n;
        self
    }

    /// Connect with TLS using `config` (feature `tls`): for a `host:port` or `tls://host:port`
    /// address. Without it, a `tls://` address trusts the system's CAs. Build `config` with
    /// the [`rustls`](crate::rustls) this crate re-exports, e.g. with the roots of a private CA
    /// and, for a broker with `tls_client_ca`, a client certificate.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }
}
