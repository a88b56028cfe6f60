//! `--users`: a broker configured with named users, and clients that authenticate as
//! restricted ones, to measure what per-frame permission checks cost against no users.

use crate::servers::{Launch, Scratch, Target};

/// Users in the generated configuration.
const USERS: usize = 10;
/// Patterns in each user's publish and subscribe allow lists.
const PATTERNS: usize = 20;

/// A config of [`USERS`] users, each allowed [`PATTERNS`] publish and subscribe patterns (the
/// benchmark's topics match only the last ones), and the target whose publishers
/// authenticate as the next-to-last user and subscribers as the last (the handshake tries
/// keys in order; per-frame costs do not depend on which). The key files live in the
/// returned directory.
pub fn target(bin: &str, metrics: bool) -> (Scratch, Target) {
    let dir = Scratch::new();
    let mut config = String::new();
    let mut keys = Vec::new();
    for u in 0..USERS {
        let key = format!("loadgen-key-{u:02}-0123456789abcdef").into_bytes();
        let path = dir.0.join(format!("user{u}.key"));
        std::fs::write(&path, &key).unwrap();
        keys.push(key);
        let list = |verb: &str| {
            let mut p: Vec<String> = (0..PATTERNS - 2)
                .map(|i| format!("\"u{u}.{verb}{i}.>\""))
                .collect();
            p.push("\"lat.>\"".into());
            p.push("\"bench.>\"".into());
            p.join(", ")
        };
        config += &format!(
            "[[users]]\nname = \"u{u}\"\nauthkey_file = \"{}\"\npublish = [{}]\nsubscribe = [{}]\n\n",
            path.display(),
            list("p"),
            list("s")
        );
    }
    let target = Target {
        label: format!("{USERS} users"),
        launch: Launch::Mphub {
            bin: bin.into(),
            metrics,
            config: Some(config),
        },
        keys: Some((keys[USERS - 2].clone(), keys[USERS - 1].clone())),
    };
    (dir, target)
}
