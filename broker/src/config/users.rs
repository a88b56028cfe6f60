//! Named users (`[[users]]` in the config file): each with a key of its own, permissions and a
//! payload policy. The shared key (`--authkey-file`, `MPHUB_AUTHKEY`) is the user `default`,
//! allowed everything. See docs/users.md.
//!
//! Permissions follow NATS's `permissions` (publish/subscribe allow and deny lists): publish to
//! topic T is allowed when T matches an allow pattern (or there is no allow list) and no deny
//! pattern; a subscription to P when an allow pattern *covers* P and no deny pattern covers it.
//! A P that merely overlaps a deny pattern is accepted, and the topics the deny pattern matches
//! are never delivered to it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use mphub_protocol::handshake::KeyRing;
use mphub_protocol::topic::{covers, matches, validate_group, validate_pattern};
use mphub_protocol::Policy;
use serde::Deserialize;

use super::values::{read_secret, Count, Secret};
use super::ConfigError;

/// The name of the user the shared key authenticates.
pub const DEFAULT_USER: &str = "default";

/// What payloads a user may publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Payloads {
    /// Any pickle (the payload is never looked at).
    #[default]
    Any,
    /// Inert data only: a pickle that imports anything outside `allow_globals` is refused.
    Data,
}

/// One `[[users]]` entry as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// The user's name: a token (no dots, no whitespace, no wildcards).
    pub name: String,
    /// File holding the user's key (one trailing newline stripped).
    pub authkey_file: PathBuf,
    /// Patterns the user may publish to; absent = every topic, `[]` = none.
    pub publish: Option<Vec<String>>,
    /// Patterns the user may subscribe to; absent = every pattern, `[]` = none.
    pub subscribe: Option<Vec<String>>,
    /// Patterns the user may never publish to.
    #[serde(default)]
    pub deny_publish: Vec<String>,
    /// Patterns the user may never receive.
    #[serde(default)]
    pub deny_subscribe: Vec<String>,
    /// Whether the user may send `$metrics`.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Payload policy (`any` or `data`); default: the top-level `payloads`. Read as text so a
    /// wrong value is reported with the user's name.
    pub payloads: Option<String>,
    /// Globals a `data` payload may import; default: the top-level `allow_globals`.
    pub allow_globals: Option<Vec<String>>,
    /// Most connections of this user at once; default: no limit of its own.
    pub max_connections: Option<Count>,
}

fn yes() -> bool {
    true
}

/// What one user may do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Allowed publish patterns; `None` allows every topic.
    pub publish: Option<Vec<String>>,
    /// Denied publish patterns.
    pub deny_publish: Vec<String>,
    /// Allowed subscribe patterns; `None` allows every pattern.
    pub subscribe: Option<Vec<String>>,
    /// Denied subscribe patterns (and topics never delivered).
    pub deny_subscribe: Vec<String>,
    /// May send `$metrics`.
    pub metrics: bool,
}

impl Permissions {
    /// Everything allowed: the shared key's user, and any user without rules.
    pub fn all() -> Self {
        Permissions {
            metrics: true,
            ..Permissions::default()
        }
    }

    /// True when nothing is restricted (no check is needed on any frame).
    pub fn is_unrestricted(&self) -> bool {
        *self == Permissions::all()
    }

    /// Whether publishing to `topic` (a valid topic) is allowed.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|p| matches(p, topic)))
            && !self.deny_publish.iter().any(|p| matches(p, topic))
    }

    /// Whether subscribing to `pattern` (a valid pattern) is allowed.
    pub fn may_subscribe(&self, pattern: &str) -> bool {
        self.subscribe
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|p| covers(p, pattern)))
            && !self.deny_subscribe.iter().any(|p| covers(p, pattern))
    }

    /// Whether a message on `topic` must never be delivered to this user.
    pub fn denies_delivery(&self, topic: &str) -> bool {
        self.deny_subscribe.iter().any(|p| matches(p, topic))
    }
}

/// A payload policy: what a publish's pickle may import.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PayloadPolicy {
    /// Anything (the payload is not looked at).
    #[default]
    Any,
    /// Nothing but the globals the policy allows (`module.qualname`), judged by the scanner.
    Data(Arc<Policy>),
}

impl PayloadPolicy {
    /// Resolves `payloads` and `allow_globals` (whose entries must be `module.qualname`).
    pub fn new(payloads: Payloads, allow_globals: &[String]) -> Result<Self, ConfigError> {
        let policy = Policy::data_only(allow_globals).map_err(|bad| ConfigError::Global(bad.0))?;
        Ok(match payloads {
            Payloads::Any => PayloadPolicy::Any,
            Payloads::Data => PayloadPolicy::Data(Arc::new(policy)),
        })
    }

    /// The scanner's policy, when payloads are judged.
    pub fn data(&self) -> Option<&Policy> {
        match self {
            PayloadPolicy::Any => None,
            PayloadPolicy::Data(p) => Some(p),
        }
    }
}

/// One user, resolved: its key read, its rules checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's name (`default` for the shared key).
    pub name: String,
    /// The user's key.
    pub key: Secret,
    /// What the user may do.
    pub permissions: Permissions,
    /// What the user's payloads may import.
    pub payloads: PayloadPolicy,
    /// Most connections at once, if limited.
    pub max_connections: Option<usize>,
}

/// Every user, in key-ring order, and the ring that tells them apart. Without any key there is
/// no ring (no handshake) and one user, `default`, whom every connection is.
#[derive(Debug, Clone)]
pub struct Users {
    list: Vec<Arc<User>>,
    ring: Option<Arc<KeyRing>>,
}

impl PartialEq for Users {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Users {
    /// The user whose key is at `index` of the ring.
    pub fn get(&self, index: usize) -> Option<&Arc<User>> {
        self.list.get(index)
    }

    /// The user named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<User>> {
        self.list.iter().find(|u| u.name == name)
    }

    /// Every user, in ring order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.list.iter()
    }

    /// The key ring for the handshake; `None` when no key is configured (no handshake).
    pub fn ring(&self) -> Option<&Arc<KeyRing>> {
        self.ring.as_ref()
    }

    /// The user of a connection that made no handshake (no key is configured).
    pub fn anonymous(&self) -> Option<&Arc<User>> {
        self.ring.is_none().then(|| self.list.first()).flatten()
    }

    /// Resolves the shared key (as user `default`) and `[[users]]`, with the top-level payload
    /// policy as every user's default. Errors name the user, never the key.
    pub fn resolve(
        shared: Option<Secret>,
        users: &[UserSettings],
        payloads: Payloads,
        allow_globals: &[String],
    ) -> Result<Users, ConfigError> {
        let policy = PayloadPolicy::new;
        let mut list = Vec::new();
        let keyless = shared.is_none() && users.is_empty();
        if let Some(key) = shared.or_else(|| keyless.then(|| Secret::new(Vec::new()))) {
            list.push(Arc::new(User {
                name: DEFAULT_USER.into(),
                key,
                permissions: Permissions::all(),
                payloads: policy(payloads, allow_globals)?,
                max_connections: None,
            }));
        }
        let mut names = HashSet::new();
        for u in users {
            let bad = |why: String| ConfigError::User {
                user: u.name.clone(),
                why,
            };
            validate_group(&u.name)
                .map_err(|e| bad(format!("the name {e} (use one token like \"ingest\")")))?;
            if u.name == DEFAULT_USER {
                return Err(bad(
                    "\"default\" is the shared key's user; give this user another name".into(),
                ));
            }
            if !names.insert(u.name.clone()) {
                return Err(bad("the name is given twice".into()));
            }
            let key = read_secret(&u.authkey_file)
                .map_err(|e| bad(format!("cannot read {}: {e}", u.authkey_file.display())))?;
            if key.expose().is_empty() {
                return Err(bad(format!("{} is empty", u.authkey_file.display())));
            }
            let lists = [
                ("publish", u.publish.as_deref().unwrap_or_default()),
                ("subscribe", u.subscribe.as_deref().unwrap_or_default()),
                ("deny_publish", &u.deny_publish[..]),
                ("deny_subscribe", &u.deny_subscribe[..]),
            ];
            for (what, patterns) in lists {
                for p in patterns {
                    validate_pattern(p).map_err(|e| bad(format!("{what}: pattern {p:?} {e}")))?;
                }
            }
            let globals = u.allow_globals.as_deref().unwrap_or(allow_globals);
            let payloads = match u.payloads.as_deref() {
                None => payloads,
                Some("any") => Payloads::Any,
                Some("data") => Payloads::Data,
                Some(other) => {
                    return Err(bad(format!(
                        "payloads = {other:?}: use \"any\" or \"data\""
                    )))
                }
            };
            list.push(Arc::new(User {
                name: u.name.clone(),
                key,
                permissions: Permissions {
                    publish: u.publish.clone(),
                    deny_publish: u.deny_publish.clone(),
                    subscribe: u.subscribe.clone(),
                    deny_subscribe: u.deny_subscribe.clone(),
                    metrics: u.metrics,
                },
                payloads: policy(payloads, globals).map_err(|e| bad(e.to_string()))?,
                max_connections: u.max_connections.map(Count::get),
            }));
        }
        if keyless {
            return Ok(Users { list, ring: None });
        }
        let ring = KeyRing::new(list.iter().map(|u| u.key.expose())).map_err(|d| {
            let name = |i: usize| list.get(i).map(|u| u.name.clone()).unwrap_or_default();
            ConfigError::SameKey(name(d.first), name(d.second))
        })?;
        Ok(Users {
            list,
            ring: Some(Arc::new(ring)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(
        publish: Option<&[&str]>,
        deny: &[&str],
        sub: Option<&[&str]>,
        dsub: &[&str],
    ) -> Permissions {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Permissions {
            publish: publish.map(v),
            deny_publish: v(deny),
            subscribe: sub.map(v),
            deny_subscribe: v(dsub),
            metrics: true,
        }
    }

    #[test]
    fn publish_needs_an_allow_match_and_no_deny_match() {
        let p = rules(Some(&["sensors.>"]), &["sensors.secret.>"], None, &[]);
        assert!(p.may_publish("sensors.temp"));
        assert!(!p.may_publish("sensors.secret.key"));
        assert!(!p.may_publish("other"));
        assert!(rules(None, &[], None, &[]).may_publish("anything"));
        assert!(!rules(Some(&[]), &[], None, &[]).may_publish("anything"));
    }

    #[test]
    fn a_wildcard_subscription_needs_an_allow_pattern_that_covers_it() {
        let p = rules(
            None,
            &[],
            Some(&["cmd.ingest.*", "_INBOX.>"]),
            &["_INBOX.secret.>"],
        );
        assert!(p.may_subscribe("cmd.ingest.start"));
        assert!(p.may_subscribe("cmd.ingest.*"));
        assert!(!p.may_subscribe("cmd.ingest.>"));
        assert!(!p.may_subscribe("cmd.>"));
        assert!(
            p.may_subscribe("_INBOX.>"),
            "overlapping a deny pattern is allowed"
        );
        assert!(!p.may_subscribe("_INBOX.secret.>"));
        assert!(p.denies_delivery("_INBOX.secret.x"));
        assert!(!p.denies_delivery("_INBOX.ab.x"));
    }
}
