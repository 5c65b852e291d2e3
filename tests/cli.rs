//! The command line: example config, config checking with clear errors, migrations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coi-bridge"));
    // The environment must not leak overrides into these tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("COI_BRIDGE") {
            c.env_remove(k);
        }
    }
    c
}

fn example_with_secrets(dir: &std::path::Path) -> std::path::PathBuf {
    let out = bin().arg("example-config").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    std::fs::write(dir.join("imap"), "imap-secret\n").expect("secret");
    std::fs::write(dir.join("smtp"), "smtp-secret\n").expect("secret");
    let text = text
        .replace(
            "/run/secrets/coi-bridge-imap",
            &dir.join("imap").display().to_string(),
        )
        .replace(
            "/run/secrets/coi-bridge-smtp",
            &dir.join("smtp").display().to_string(),
        )
        .replace("sqlite://coi-bridge.db", "sqlite://bridge.db");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn the_example_config_is_valid_once_its_secrets_exist() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = example_with_secrets(dir.path());
    let out = bin()
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the secret files the error names the key.
    std::fs::remove_file(dir.path().join("imap")).expect("rm");
    let out = bin()
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("email.imap_password_file"), "{err}");
}

#[test]
fn bad_values_and_unknown_keys_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = example_with_secrets(dir.path());
    let good = std::fs::read_to_string(&path).expect("read");
    for (from, to, key) in [
        (
            "imap_security = \"tls\"",
            "imap_security = \"bogus\"",
            "email.imap_security",
        ),
        (
            "mail_domain = \"bridge.example.org\"",
            "mail_domain = \"not a domain\"",
            "email.mail_domain",
        ),
        (
            "url = \"sqlite://bridge.db\"",
            "url = \"mysql://x\"",
            "database.url",
        ),
        (
            "max_mime_depth = 16",
            "max_mime_depth = 16\nmax_mime_dept = 3",
            "max_mime_dept",
        ),
    ] {
        std::fs::write(&path, good.replace(from, to)).expect("write");
        let out = bin()
            .arg("check-config")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to} accepted");
        assert!(
            err.contains(key),
            "error for {to:?} does not name {key}: {err}"
        );
    }
}

#[test]
fn environment_overrides_any_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = example_with_secrets(dir.path());
    let out = bin()
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .env("COI_BRIDGE__EMAIL__IMAP_PORT", "not-a-port")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("email.imap_port"));
    let out = bin()
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .env("COI_BRIDGE__EMAIL__MAIL_DOMAIN", "puppets.example.net")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = example_with_secrets(dir.path());
    let out = bin()
        .arg("migrate")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.path().join("bridge.db").exists(),
        "relative sqlite paths are relative to the config file"
    );
}

#[test]
fn generate_registration_creates_tokens_and_a_registration_the_config_accepts() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = example_with_secrets(dir.path());
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.push_str(&format!(
        "\n[matrix]\nhomeserver_url = \"http://127.0.0.1:8008\"\nserver_name = \"matrix.test\"\nas_token_file = \"{}\"\nhs_token_file = \"{}\"\n",
        dir.path().join("as_token").display(),
        dir.path().join("hs_token").display()
    ));
    std::fs::write(&path, text).expect("write");
    let out = bin()
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success(), "tokens do not exist yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("matrix.as_token"));
    let reg = dir.path().join("registration.yaml");
    let out = bin()
        .arg("generate-registration")
        .arg("-c")
        .arg(&path)
        .arg("-o")
        .arg(&reg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = std::fs::read_to_string(&reg).expect("registration");
    let as_token = std::fs::read_to_string(dir.path().join("as_token")).expect("as token");
    let hs_token = std::fs::read_to_string(dir.path().join("hs_token")).expect("hs token");
    assert!(as_token.trim().len() >= 32 && as_token != hs_token);
    for want in [
        "rate_limited: false",
        "receive_ephemeral: true",
        "de.sorunome.msc2409.push_ephemeral: true",
        "sender_localpart: \"coi_bot\"",
        as_token.trim(),
        hs_token.trim(),
        "@_coi_",
    ] {
        assert!(yaml.contains(want), "registration lacks {want:?}:\n{yaml}");
    }
    let out = bin()
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second run keeps the tokens.
    let out = bin()
        .arg("generate-registration")
        .arg("-c")
        .arg(&path)
        .arg("-o")
        .arg(&reg)
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("as_token")).expect("as token"),
        as_token
    );
}

#[tokio::test]
async fn quarantine_lists_what_was_kept_and_prints_its_raw_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = example_with_secrets(dir.path());
    let out = bin()
        .arg("quarantine")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("quarantine is empty"));
    let url = format!("sqlite://{}", dir.path().join("bridge.db").display());
    let store = bridge_core::Store::open(&url, 1).await.expect("store");
    store
        .quarantine(
            bridge_core::SideName::EMAIL,
            "bad-1@example.org",
            "cannot parse: truncated MIME",
            Some(b"From: x\r\n"),
        )
        .await
        .expect("keep");
    store.close().await;
    let out = bin()
        .arg("quarantine")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad-1@example.org") && text.contains("cannot parse: truncated MIME"),
        "{text}"
    );
    let id = text.split_whitespace().next().expect("id");
    let out = bin()
        .arg("quarantine")
        .arg("-c")
        .arg(&path)
        .arg("--raw")
        .arg(id)
        .output()
        .expect("run");
    assert_eq!(out.stdout, b"From: x\r\n");
}

/// A mail kept because its sender may not open chats is placed by `--replay-all` once the config
/// allows them; replaying again finds nothing to do.
#[tokio::test]
async fn quarantine_replay_places_kept_mail_after_a_config_change() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = example_with_secrets(dir.path());
    let text = std::fs::read_to_string(&path).expect("config").replace(
        "mail_domain = \"bridge.example.org\"",
        "mail_domain = \"bridge.example.test\"",
    );
    std::fs::write(&path, &text).expect("write");
    let raw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("coi-side/testdata/deltachat-2.65/01-alice-group-text.eml"),
    )
    .expect("fixture");
    let url = format!("sqlite://{}", dir.path().join("bridge.db").display());
    let store = bridge_core::Store::open(&url, 1).await.expect("store");
    store
        .quarantine(
            bridge_core::SideName::EMAIL,
            "b58bd00b-3d8b-431b-8de4-a89f87d1d861@localhost",
            "no chat matches and alice@example.test may not open one",
            Some(&raw),
        )
        .await
        .expect("keep");
    store.close().await;
    let replay = || {
        bin()
            .arg("quarantine")
            .arg("-c")
            .arg(&path)
            .arg("--replay-all")
            .output()
            .expect("run")
    };
    // Still not allowed (example.org only): kept, with the reason of today's config.
    let out = replay();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("still kept"), "{stdout}");
    // Allowed now: placed, and the quarantine is empty.
    std::fs::write(
        &path,
        text.replace(
            "allow_new_chats_from = [\"example.org\"]",
            "allow_new_chats_from = [\"example.test\"]",
        ),
    )
    .expect("write");
    let out = replay();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("placed"), "{stdout}");
    let store = bridge_core::Store::open(&url, 1).await.expect("store");
    assert!(store.quarantine_list(10).await.expect("list").is_empty());
    let placed = store
        .message_by_link(
            bridge_core::SideName::EMAIL,
            "b58bd00b-3d8b-431b-8de4-a89f87d1d861@localhost",
        )
        .await
        .expect("lookup");
    assert!(placed.is_some(), "the mail is in a chat now");
    store.close().await;
    let out = replay();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no kept mail to replay"));
}
