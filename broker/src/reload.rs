//! What a reload (SIGHUP) may change while the broker runs, and what needs a restart.
//!
//! Live: users, keys, permissions, payload policies, TLS certificates (read again; new
//! connections get them), limits (frame size, outbound limit and policy, connections,
//! subscriptions, timeouts) and the log level. Connections apply a new configuration to their
//! next frame; a connection whose user was removed or whose key changed is closed. Not live: the listeners, the HTTP address and the cluster, which sockets and
//! the NATS connection were made from; a reload keeps them as they are and says they need a
//! restart.

use crate::config::{protected_mode, Config, ConfigError};

/// What a reload does with a freshly loaded configuration.
#[derive(Debug)]
pub struct Outcome {
    /// The configuration to run with: the new one, with what cannot change live kept as is.
    pub config: Config,
    /// Settings that differ in the file but need a restart to take effect.
    pub needs_restart: Vec<&'static str>,
}

/// Lays `new` over `old`, keeping what cannot change while running. `Err` when the result
/// would break protected mode: the new file may listen on loopback only and have no keys, but
/// the listeners kept are the old ones.
pub fn merge(old: &Config, mut new: Config) -> Result<Outcome, ConfigError> {
    let mut needs_restart = Vec::new();
    let (o, n) = (&old.settings, &mut new.settings);
    if o.listen != n.listen {
        needs_restart.push("listen");
        n.listen.clone_from(&o.listen);
        // The new file may have dropped its tls:// listener with its certificate; the kept
        // listener keeps the certificate it has.
        if new.tls.is_none() {
            new.tls.clone_from(&old.tls);
        }
    }
    if o.metrics != n.metrics {
        needs_restart.push("metrics");
        n.metrics = o.metrics;
    }
    if o.log_format != n.log_format {
        needs_restart.push("log_format");
        n.log_format = o.log_format;
    }
    if o.arriving_limit != n.arriving_limit {
        // One budget shared by every connection, sized at start.
        needs_restart.push("arriving_limit");
        n.arriving_limit = o.arriving_limit;
    }
    if old.cluster != new.cluster {
        needs_restart.push("cluster");
        new.cluster.clone_from(&old.cluster);
    }
    protected_mode(&new.settings.listen, &new.users)?;
    Ok(Outcome {
        config: new,
        needs_restart,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ListenAddr, Size};

    #[test]
    fn listeners_stay_and_limits_change() {
        let old = Config::with_listeners(vec![ListenAddr::parse("127.0.0.1:1").unwrap()], None);
        let mut new = Config::with_listeners(vec![ListenAddr::parse("127.0.0.1:2").unwrap()], None);
        new.settings.max_frame = Size(10);
        let out = merge(&old, new).unwrap();
        assert_eq!(out.needs_restart, vec!["listen"]);
        assert_eq!(out.config.settings.listen, old.settings.listen);
        assert_eq!(out.config.settings.max_frame, Size(10));
    }

    #[test]
    fn a_reload_cannot_drop_every_key_while_an_open_address_is_kept() {
        let open = vec![ListenAddr::parse("0.0.0.0:1").unwrap()];
        let old = Config::with_listeners(open, Some(b"k"));
        // Loopback only and no key: fine as a file of its own, but the open listener stays.
        let new = Config::with_listeners(vec![ListenAddr::parse("127.0.0.1:1").unwrap()], None);
        let err = merge(&old, new).unwrap_err();
        assert!(
            matches!(err, ConfigError::Protected(ref a) if a.contains("0.0.0.0")),
            "{err}"
        );
    }
}
