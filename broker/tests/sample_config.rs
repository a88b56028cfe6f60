//! deploy/mphub.toml is the documented sample: it must name every key and show the defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mphub_broker::config::FileConfig;
use mphub_broker::Config;

fn sample() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mphub.toml")
}

#[test]
fn the_sample_config_equals_the_built_in_defaults() {
    let file = FileConfig::load(&sample()).expect("deploy/mphub.toml parses");
    let resolved = file.resolve(None).expect("and resolves");
    assert_eq!(format!("{resolved:?}"), format!("{:?}", Config::default()));
}

#[test]
fn the_sample_config_names_every_key() {
    let text = std::fs::read_to_string(sample()).unwrap();
    // Every field of FileConfig, as its Debug output names them.
    let debug = format!("{:?}", FileConfig::default());
    let keys: Vec<&str> = debug
        .split(['{', ',', '}'])
        .filter_map(|part| part.split(':').next())
        .map(str::trim)
        .filter(|k| !k.is_empty() && *k != "FileConfig")
        .collect();
    assert!(keys.len() >= 12, "{keys:?}");
    for key in keys {
        let named = text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
        });
        assert!(named, "deploy/mphub.toml does not mention `{key}`");
    }
}
