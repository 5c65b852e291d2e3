//! Helpers for the integration tests that cross the real local stack (deploy/stack.sh).
//!
//! Without `COI_TEST_STACK=1` (set by `deploy/test.sh`) every such test prints why it skips and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use coi_side::transport::{Security, SmtpConfig, SmtpSender};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MAIL_DOMAIN: &str = "bridge.example.test";
/// Postfix delivers this domain straight to the bridge's LMTP listener (127.0.0.1:2424).
pub const LMTP_DOMAIN: &str = "lmtp.example.test";

/// The stack, or None (with the reason printed) when it is not up.
pub fn stack() -> Option<PathBuf> {
    if std::env::var("COI_TEST_STACK").as_deref() != Ok("1") {
        eprintln!(
            "skipping: COI_TEST_STACK is not set (run deploy/test.sh to bring the local stack up)"
        );
        return None;
    }
    Some(PathBuf::from(
        std::env::var("COI_STACK_DIR").unwrap_or_else(|_| "/var/tmp/coi-stack".into()),
    ))
}

/// Serialises the tests of one binary: they share the bridge mailbox. (Cargo runs test binaries one at a time.)
pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// UIDVALIDITY and UIDNEXT of the bridge's catch-all INBOX.
pub fn bridge_mailbox_status() -> (i64, i64) {
    // Retried: another test may be restarting Dovecot right now.
    let mut tries = 0;
    let out = loop {
        let out = Command::new("doveadm")
            .args([
                "-f",
                "flow",
                "mailbox",
                "status",
                "-u",
                "bridge@example.test",
                "uidvalidity uidnext",
                "INBOX",
            ])
            .output()
            .expect("run doveadm");
        if out.status.success() || tries >= 40 {
            break out;
        }
        tries += 1;
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        out.status.success(),
        "doveadm mailbox status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> i64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in doveadm output {text:?}"))
    };
    (field("uidvalidity"), field("uidnext"))
}

/// A random tag to keep tests apart.
pub fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// All mails in a local user's Maildir (new and cur).
pub fn maildir(stack: &Path, user: &str) -> Vec<Vec<u8>> {
    let base = stack.join("vmail/example.test").join(user).join("Maildir");
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(base.join(sub)) {
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push(b);
                }
            }
        }
    }
    out
}

/// A header's value (first occurrence, unfolded) of a raw mail.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\n\n")
        .next()
        .unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.lines() {
        if let Some(v) = value.as_mut() {
            if line.starts_with(' ') || line.starts_with('\t') {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            return value;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}

/// Sends a raw mail through Postfix on port 25 (no auth; loopback is trusted).
pub async fn send_raw(from: &str, rcpts: &[&str], raw: &str) {
    let sender = SmtpSender::new(SmtpConfig::new("127.0.0.1", 25, Security::Plain)).expect("smtp");
    let rcpts: Vec<String> = rcpts.iter().map(|s| (*s).to_owned()).collect();
    sender
        .send(from, &rcpts, raw.as_bytes())
        .await
        .expect("send");
}

/// A Delta-Chat-style group mail (unencrypted, no group id), CRLF line ends.
pub fn group_mail(
    from: (&str, &str),
    to: &[&str],
    group: &str,
    msg_id: &str,
    in_reply_to: Option<&str>,
    body: &str,
) -> String {
    let mut h = format!(
        "From: \"{}\" <{}>\r\nTo: {}\r\nSubject: {}{}\r\nMessage-ID: <{}>\r\nDate: {}\r\nChat-Version: 1.0\r\nChat-Group-Name: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n",
        from.0,
        from.1,
        to.iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", "),
        if in_reply_to.is_some() { "Re: " } else { "" },
        group,
        msg_id,
        rfc2822_now(),
        group
    );
    if let Some(p) = in_reply_to {
        h.push_str(&format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n"));
    }
    format!("{h}\r\n{body}\r\n")
}

pub fn rfc2822_now() -> String {
    // Good enough for tests: a fixed, valid date; the bridge falls back to now for ordering anyway.
    "Fri, 27 Nov 2026 20:28:24 +0000".to_owned()
}

/// A bridge process (`coi-bridge-testhub`) with its own database and a recording side standing in for Matrix.
pub struct Hub {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub record: PathBuf,
    pub inject: PathBuf,
    pub child: Option<Child>,
    /// Runs the production binary (`coi-bridge run`) with a `[matrix]` section instead of the testhub.
    pub real: bool,
}

pub enum Ingest {
    Imap,
    Lmtp,
}

impl Hub {
    pub fn new(db_url: Option<String>, ingest: Ingest) -> Hub {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bridge.toml");
        let db = db_url.unwrap_or_else(|| format!("sqlite://{}/bridge.db", dir.path().display()));
        let (ingest, mail_domain) = match ingest {
            Ingest::Imap => ("imap", MAIL_DOMAIN),
            Ingest::Lmtp => ("lmtp", LMTP_DOMAIN),
        };
        std::fs::write(
            &config,
            format!(
                r#"[database]
url = "{db}"
[logging]
level = "info,coi_side=debug,bridge_core=debug"
[email]
mail_domain = "{mail_domain}"
bridge_address = "bridge@example.test"
ingest = "{ingest}"
lmtp_listen = "127.0.0.1:2424"
imap_host = "127.0.0.1"
imap_port = 143
imap_security = "starttls"
imap_user = "bridge@example.test"
imap_password = "bridgepass"
smtp_host = "127.0.0.1"
smtp_port = 587
smtp_security = "starttls"
smtp_user = "bridge@example.test"
smtp_password = "bridgepass"
accept_invalid_certs = true
allow_new_chats_from = ["example.test"]
"#
            ),
        )
        .expect("write config");
        let record = dir.path().join("record.jsonl");
        let inject = dir.path().join("inject.jsonl");
        std::fs::write(&inject, "").expect("inject file");
        Hub {
            dir,
            config,
            record,
            inject,
            child: None,
            real: false,
        }
    }

    /// The production bridge (`coi-bridge run`) with email as in [`Hub::new`] and a `[matrix]`
    /// section for the local Synapse (`env`: the output of `deploy/synapse.sh env`).
    pub fn with_matrix(ingest: Ingest, env: &BTreeMap<String, String>) -> Hub {
        use std::io::Write as _;
        let mut hub = Hub::new(None, ingest);
        hub.real = true;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&hub.config)
            .expect("config");
        write!(
            f,
            r#"[matrix]
homeserver_url = "{}"
server_name = "{}"
as_token = "{}"
hs_token = "{}"
bot_localpart = "{}"
ghost_prefix = "{}"
listen = "{}"
registration_id = "{}"
"#,
            env["COI_MATRIX_HS_URL"],
            env["COI_MATRIX_SERVER_NAME"],
            env["COI_MATRIX_AS_TOKEN"],
            env["COI_MATRIX_HS_TOKEN"],
            env["COI_MATRIX_BOT"],
            env["COI_MATRIX_PREFIX"],
            env["COI_MATRIX_AS_URL"].trim_start_matches("http://"),
            env["COI_MATRIX_AS_ID"],
        )
        .expect("write config");
        hub
    }

    /// Makes a new bridge skip the mail already in the shared catch-all mailbox (left by other tests),
    /// as an operator's bridge would after its first run.
    pub async fn skip_existing_mail(&self, db_url: Option<&str>) {
        let (uidvalidity, uidnext) = bridge_mailbox_status();
        let default = format!("sqlite://{}/bridge.db", self.dir.path().display());
        let store = bridge_core::Store::open(db_url.unwrap_or(&default), 1)
            .await
            .expect("open store");
        store
            .save_checkpoint("bridge@example.test/INBOX", uidvalidity, uidnext - 1)
            .await
            .expect("checkpoint");
        store.close().await;
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bridge.log"))
            .expect("log");
        let mut cmd = if self.real {
            let mut c = Command::new(env!("CARGO_BIN_EXE_coi-bridge"));
            c.arg("run").arg("-c").arg(&self.config);
            c
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_coi-bridge-testhub"));
            c.arg("-c")
                .arg(&self.config)
                .arg("--record")
                .arg(&self.record)
                .arg("--inject")
                .arg(&self.inject);
            c
        };
        let child = cmd
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start testhub");
        self.child = Some(child);
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default()
    }

    /// Recorded deliveries to the stand-in Matrix side.
    pub fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Injects an event as if from Matrix.
    pub fn inject(&self, v: serde_json::Value) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.inject)
            .expect("inject");
        writeln!(f, "{v}").expect("write inject");
    }

    /// Waits until `pred` holds on the records, or panics with the log.
    pub fn wait_records(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let r = self.records();
            if pred(&r) {
                return r;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; records: {r:#?}\n--- bridge log tail:\n{}",
                    tail(&self.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `pred` holds on the mails in a user's Maildir that match `filter`.
pub fn wait_maildir(
    hub: &Hub,
    stack: &Path,
    user: &str,
    what: &str,
    timeout: Duration,
    filter: impl Fn(&[u8]) -> bool,
    pred: impl Fn(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let start = Instant::now();
    loop {
        let mails: Vec<Vec<u8>> = maildir(stack, user)
            .into_iter()
            .filter(|m| filter(m))
            .collect();
        if pred(&mails) {
            return mails;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out waiting for {what} in {user}'s mailbox ({} matching mails)\n--- bridge log tail:\n{}",
                mails.len(),
                tail(&hub.log(), 80)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counts values.
pub fn counts<I: IntoIterator<Item = String>>(it: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in it {
        *m.entry(v).or_insert(0) += 1;
    }
    m
}

/// Waits until something accepts TCP connections on `addr` (a bridge's listener).
pub fn wait_listening(addr: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing listens on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks Postfix to retry deferred mail now.
pub fn flush_postfix_queue() {
    let _ = Command::new("postqueue")
        .arg("-f")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Restarts Dovecot and waits until IMAP answers again.
pub fn restart_dovecot() {
    let _ = Command::new("doveadm")
        .arg("stop")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    while std::net::TcpStream::connect("127.0.0.1:143").is_ok()
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Detached: the daemon must not inherit the test runner's output pipes.
    let st = Command::new("dovecot")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start dovecot");
    assert!(st.success());
    let start = Instant::now();
    while std::net::TcpStream::connect("127.0.0.1:143").is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "dovecot did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Mail deferred while Dovecot was down: deliver it now rather than at Postfix's next queue run.
    let _ = Command::new("postqueue")
        .arg("-f")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
