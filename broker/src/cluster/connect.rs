//! The NATS connection options, built from the resolved [`ClusterConfig`].

use std::time::Duration;

use async_nats::ConnectOptions;

use crate::config::{ClusterAuth, ClusterConfig};

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

/// NATS connection options for `config`, naming the connection `name`: no echo (a node never
/// hears its own publishes back), retry from the start (a node serves local clients while NATS
/// is away), quick reconnects.
pub async fn options(config: &ClusterConfig, name: &str) -> std::io::Result<ConnectOptions> {
    let mut o = match &config.auth {
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
        .require_tls(config.tls.required);
    if let Some(ca) = &config.tls.ca {
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls.client {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_start_at_once_then_back_off_to_two_seconds() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(3), Duration::from_millis(100));
        assert_eq!(reconnect_delay(100), Duration::from_secs(2));
    }
}
