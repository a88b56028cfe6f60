//! deploy/mphub.toml is the documented sample and docs/configuration.md the reference: both must
//! name every setting, and the sample must show the defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mphub_broker::config::{load_file, Settings};

fn repo(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)
}

#[test]
fn the_sample_config_equals_the_built_in_defaults() {
    let file = load_file(&repo("deploy/mphub.toml")).expect("deploy/mphub.toml parses");
    assert_eq!(file, Settings::default());
}

#[test]
fn the_sample_config_names_every_setting() {
    let text = std::fs::read_to_string(repo("deploy/mphub.toml")).unwrap();
    let names = Settings::names();
    assert!(names.len() >= 20, "{names:?}");
    for key in names {
        let named = text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim();
            l.starts_with(&key) && l[key.len()..].trim_start().starts_with('=')
        });
        assert!(named, "deploy/mphub.toml does not mention `{key}`");
    }
}

#[test]
fn the_configuration_reference_names_every_flag_and_key() {
    let text = std::fs::read_to_string(repo("docs/configuration.md")).unwrap();
    for key in Settings::names() {
        let flag = format!("`--{}", key.replace('_', "-"));
        assert!(
            text.contains(&flag),
            "docs/configuration.md does not show {flag}`"
        );
        assert!(
            text.contains(&format!("`{key}")),
            "docs/configuration.md does not show the file key `{key}`"
        );
    }
}
