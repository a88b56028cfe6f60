//! mphub-client: Rust programs on an mphub bus, and on any Python `multiprocessing` Listener.
//!
//! - [`Client`] (in `client.rs`): publish, subscribe, queue groups, request/reply and the
//!   `$ping` barrier over one connection shared by cheap clones; a driver task (`driver.rs`)
//!   batches writes, routes what arrives to [`Subscription`]s (`subscription.rs`,
//!   `state.rs`) and reconnects with backoff, restoring subscriptions.
//! - [`Connection`] (`connection.rs`): a plain multiprocessing peer — send and receive pickles
//!   or raw frames — for talking to a Python `Listener` with no broker in between.
//! - Payloads are pickled and unpickled with `serde-pickle` ([`Message::decode`]); a pickle
//!   received from Python can be forwarded unchanged ([`Client::publish_pickled`]).
//! - Worker metrics ([`MetricOp`], [`Client::send_metrics`]): counters, gauges, histograms
//!   and summaries the broker aggregates and serves on `/metrics` (`metrics.rs`).
//! - Addresses ([`Address`]): `host:port`, `unix:/path`, `unix:@abstract`, and with the `tls`
//!   feature `tls://host:port` (`tls.rs`: rustls; `ConnectOptions::tls` for a private CA or a
//!   client certificate). Both handshake generations: CPython 3.11's MD5 and 3.12+'s
//!   `{sha256}`.
//!
//! ```no_run
//! # async fn demo() -> mphub_client::Result<()> {
//! use mphub_client::{Client, ConnectOptions};
//! use std::time::Duration;
//!
//! let client = Client::connect("127.0.0.1:6000", ConnectOptions::new().authkey(b"secret")).await?;
//! let mut jobs = client.subscribe_group("jobs.*", "workers").await?;
//! client.publish("jobs.resize", &("cat.png", 640)).await?;
//! let job = jobs.next().await.expect("a job");
//! let (file, width): (String, u32) = job.decode()?;
//! let reply: serde_pickle::Value =
//!     client.request("svc.echo", &"hi", Duration::from_secs(2)).await?;
//! client.flush().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod address;
mod client;
mod connection;
mod driver;
mod error;
mod message;
mod metrics;
mod options;
mod state;
mod subscription;
mod tls;
mod wire;

pub use address::Address;
pub use client::Client;
pub use connection::{Connection, DEFAULT_MAX_FRAME};
pub use error::{Error, Result};
pub use message::Message;
pub use metrics::{GaugeMode, MetricKind, MetricOp};
pub use options::ConnectOptions;
pub use subscription::Subscription;

/// The serde-pickle crate, for [`serde_pickle::Value`] and its options.
pub use serde_pickle;

/// The rustls crate (feature `tls`), for building a [`ConnectOptions::tls`] configuration.
#[cfg(feature = "tls")]
pub use rustls;
#[cfg(feature = "tls")]
pub use tls::default_config as default_tls_config;
