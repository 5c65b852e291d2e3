//! Shared helpers of the real-Synapse tests: the repository root, `deploy/synapse.sh env`, and the
//! matrix-nio peer (tests/peers/nio_peer.py) driven over JSON lines.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn synapse_env() -> BTreeMap<String, String> {
    let out = std::process::Command::new(repo().join("deploy/synapse.sh"))
        .arg("env")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The `[matrix]` settings of a bridge registered with the local Synapse (`synapse_env()`).
pub fn settings(env: &BTreeMap<String, String>) -> matrix_side::MatrixSettings {
    let mut cfg = matrix_side::MatrixConfig::new(
        &env["COI_MATRIX_HS_URL"],
        &env["COI_MATRIX_SERVER_NAME"],
        &env["COI_MATRIX_AS_TOKEN"],
        &env["COI_MATRIX_HS_TOKEN"],
    );
    cfg.listen = env["COI_MATRIX_AS_URL"]
        .trim_start_matches("http://")
        .to_owned();
    cfg.registration_id = env["COI_MATRIX_AS_ID"].clone();
    cfg.bot_localpart = env["COI_MATRIX_BOT"].clone();
    cfg.ghost_prefix = env["COI_MATRIX_PREFIX"].clone();
    cfg.validate().unwrap()
}

/// The matrix-nio peer (tests/peers/nio_peer.py) as a JSON-lines child process.
pub struct Peer {
    pub child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    backlog: Vec<Value>,
    /// Every message event seen, in order (for counting).
    messages: Vec<Value>,
    next_id: u64,
}

impl Peer {
    pub async fn start(python: &str, hs: &str, user: &str, password: &str) -> Peer {
        let mut child = tokio::process::Command::new(python)
            .arg(repo().join("tests/peers/nio_peer.py"))
            .args([hs, user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                eprintln!("nio> {l}");
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut p = Peer {
            child,
            stdin,
            rx,
            backlog: Vec::new(),
            messages: Vec::new(),
            next_id: 1,
        };
        let ready = p.wait("peer ready", |v| v["ready"] == true, 60).await;
        assert_eq!(ready["ok"], true, "{ready}");
        p
    }

    pub async fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool, secs: u64) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(v)) => {
                    self.note(&v);
                    if pred(&v) {
                        return v;
                    }
                    self.backlog.push(v);
                }
                Ok(None) => panic!("nio peer exited while waiting for {what}"),
                Err(_) => panic!(
                    "timed out after {secs}s waiting for {what}; seen: {:?}",
                    self.backlog
                ),
            }
        }
    }

    /// Waits for `user`'s membership in `room` to become `membership` (join, leave, invite).
    pub async fn wait_member(
        &mut self,
        what: &str,
        room: &str,
        user: &str,
        membership: &str,
        secs: u64,
    ) -> Value {
        self.wait(
            what,
            |v| {
                v["room"] == room
                    && v["type"] == "m.room.member"
                    && v["state_key"] == user
                    && v["content"]["membership"] == membership
            },
            secs,
        )
        .await
    }

    fn note(&mut self, v: &Value) {
        if v["event"] == "message" {
            self.messages.push(v.clone());
        }
    }

    /// Takes in whatever arrived so far.
    fn drain(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.note(&v);
            self.backlog.push(v);
        }
    }

    /// How many message events with this body the peer has seen.
    pub fn count(&mut self, body: &str) -> usize {
        self.drain();
        self.messages.iter().filter(|v| v["body"] == body).count()
    }

    /// The first event seen so far that satisfies `pred`, without waiting for more.
    pub async fn try_take(&mut self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.drain();
        let i = self.backlog.iter().position(&pred)?;
        Some(self.backlog.remove(i))
    }

    pub async fn cmd(&mut self, mut req: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = json!(id);
        self.stdin
            .write_all(format!("{req}\n").as_bytes())
            .await
            .unwrap();
        let r = self
            .wait("command reply", |v| v["id"] == json!(id), 60)
            .await;
        assert_eq!(r["ok"], true, "{req} -> {r}");
        r
    }
}

/// Only one bridge listener may hold the registration's URL (127.0.0.1:29331) at a time: an
/// exclusive file lock shared by every Synapse test and benchmark (released when dropped).
pub struct ListenerLock(#[allow(dead_code)] std::fs::File);

impl ListenerLock {
    pub async fn take() -> ListenerLock {
        let f =
            std::fs::File::create(std::env::temp_dir().join("coi-synapse-listener.lock")).unwrap();
        let f = tokio::task::spawn_blocking(move || {
            f.lock().unwrap();
            f
        })
        .await
        .unwrap();
        ListenerLock(f)
    }
}

/// Whether the real-Synapse tests are enabled (`COI_TEST_SYNAPSE=1`, set by deploy/test.sh).
pub fn synapse_enabled() -> bool {
    if std::env::var("COI_TEST_SYNAPSE").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped: set COI_TEST_SYNAPSE=1 to run against a real Synapse (deploy/synapse.sh up)"
    );
    false
}
