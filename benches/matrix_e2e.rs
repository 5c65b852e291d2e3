//! End-to-end latency between Matrix and email through the real local stack: Synapse (pushing
//! appservice transactions to the bridge's listener), Postfix + Dovecot, and matrix-nio people.
//! `cargo bench --bench matrix_e2e`; needs the stack with Synapse
//! (`bash deploy/stack.sh up --no-bridge; eval "$(bash deploy/stack.sh env)"`), else it skips.
//!
//! The bridge runs in-process, wired as `src/app.rs` wires it (temporary SQLite store, `EmailSide`
//! submitting on Postfix 587, `MatrixSide`, `coi_side::run_ingest`, `Bridge::run`, the start-up
//! checks), except that the appservice listener is put together here from `matrix_side`'s public
//! parts (as `matrix_side::start` does) so that a timing layer can sit in front of it. Both sides are
//! wrapped to time `deliver`. Commits are timed by the router's `Committed.` debug line, caught by a
//! tracing layer. The matrix-nio peers (tests/peers/nio_peer.py) report `time.time()`; every time
//! here is the same wall clock (Unix seconds).
//!
//! People: `@alice:matrix.test` (Matrix, created by deploy/synapse.sh), `@bench_bob:matrix.test`
//! (Matrix, registered here if missing, only for the nio baseline) and carol@example.test (email,
//! a real Dovecot mailbox no test uses). Each phase opens a chat with a mail from carol to alice's
//! puppet address; the bridge creates the portal room and alice joins it.
//!
//! * `to-email` (Matrix → email, on the LMTP bridge): alice sends in the portal; the bridge mails
//!   carol (RCPT carol only). Timed: nio send → transaction PUT arrives (the Synapse baseline), PUT
//!   → router commit, commit → `EmailSide::deliver` returned (Postfix accepted), → Dovecot
//!   announces it on carol's INBOX (a raw IMAP IDLE client). One message every `MAIL_SPACING`, so
//!   each is isolated from Dovecot's 500 ms IDLE timer.
//! * `lmtp` and `imap` (email → Matrix): carol submits on Postfix port 25 to alice's puppet; the
//!   bridge ingests by LMTP (lmtp.example.test → 127.0.0.1:2424) or IMAP IDLE (bridge.example.test →
//!   bridge@example.test INBOX); timed until alice's nio sync loop sees the ghost's message. Each
//!   mail is followed by the nio baseline in the same run: bench_bob sends to alice in a plain room,
//!   timed until alice's sync loop sees it.
//!
//! Takes the listener lock (`$TMPDIR/coi-synapse-listener.lock`, as the Synapse tests do) for the
//! whole run, since it binds 127.0.0.1:29331 and 127.0.0.1:2424 and mails the bridge mailboxes: do
//! not wrap it in `flock` on the same file (that would wait for itself).
//! Figures only, no asserts on time. Exits 1 with a message if the run cannot be completed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benches may panic

mod support;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use bridge_core::ir::EventKind;
use bridge_core::{Bridge, Capabilities, Delivered, OutboxItem, Side, SideError, SideName, Store};
use coi_bridge::config::{Config, Validated};
use coi_side::EmailSide;
use matrix_side::commands::Commands;
use matrix_side::{ListenerState, MatrixSide};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{RawImap, RawSmtp, bracket_num, row, untagged_num, watch_exists};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::Notify;

/// Messages per measurement (plus one warm-up each); `COI_BENCH_N` overrides.
const N: usize = 100;
/// Spacing of messages that end in an IMAP IDLE (Dovecot notifies on a fixed 500 ms timer).
const MAIL_SPACING: Duration = Duration::from_millis(750);
/// Spacing of the LMTP phase's iterations.
const LMTP_SPACING: Duration = Duration::from_millis(300);
/// How long one message may take before it counts as lost.
const WAIT: Duration = Duration::from_secs(30);
/// Consecutive lost messages that end a measurement.
const MAX_LOST: usize = 3;
/// How long a phase's opening mail may take to be committed (Postfix may hold the LMTP destination
/// as dead after an earlier refused connection; the bench flushes its queue while it waits).
const SETUP_WAIT: Duration = Duration::from_secs(90);
const LMTP_LISTEN: &str = "127.0.0.1:2424";
const BRIDGE_USER: &str = "bridge@example.test";
const BRIDGE_PASS: &str = "bridgepass";
/// The email person: a real Dovecot mailbox that no test uses.
const CAROL: &str = "carol@example.test";
const CAROL_PASS: &str = "carolpass";
const ALICE: &str = "@alice:matrix.test";
const ALICE_PASS: &str = "alicepass";
/// The second Matrix person, for the nio user → user baseline.
const BOB_LOCAL: &str = "bench_bob";
const BOB: &str = "@bench_bob:matrix.test";
const BOB_PASS: &str = "bench_bobpass";

type Res<T> = Result<T, String>;

/// Now, as Unix seconds: the one clock of this bench (the nio peers report `time.time()`).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(a: f64, b: f64) -> f64 {
    (b - a) * 1000.0
}

/// Whether `token` is one of the words of `text` (a token is never a prefix match: `x-1` ≠ `x-10`).
fn has_word(text: &str, token: &str) -> bool {
    text.split_whitespace().any(|w| w == token)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ------------------------------------------------------------------ what the bridge is seen doing

/// One delivery by a wrapped side.
struct Delivery {
    side: SideName,
    text: String,
    start: f64,
    end: f64,
    /// The remote ids the side returned (the mail's Message-ID, the Matrix event id).
    links: Vec<String>,
}

/// Everything the bridge was seen doing, keyed by remote id (Matrix event id, Message-ID).
#[derive(Default)]
struct Seen {
    /// Matrix event id → when the transaction carrying it arrived at the listener.
    put: Mutex<HashMap<String, f64>>,
    /// Matrix event id → when the listener's 200 for that transaction was ready.
    ok: Mutex<HashMap<String, f64>>,
    /// Remote id → when the router committed it.
    commit: Mutex<HashMap<String, f64>>,
    delivered: Mutex<Vec<Delivery>>,
}

impl Seen {
    fn commit(&self, id: &str) -> Option<f64> {
        self.commit.lock().unwrap().get(id).copied()
    }

    /// The first successful delivery on `side` whose text contains `token`: (start, end, links).
    fn delivery(&self, side: SideName, token: &str) -> Option<(f64, f64, Vec<String>)> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.side == side && has_word(&d.text, token))
            .map(|d| (d.start, d.end, d.links.clone()))
    }
}

/// Catches the router's `Committed.` debug line (bridge-core/src/router.rs) with its remote id.
struct CommitLayer(Arc<Seen>);

#[derive(Default)]
struct CommitFields {
    message: Option<String>,
    remote_id: Option<String>,
}

impl tracing::field::Visit for CommitFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "remote_id" => self.remote_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "remote_id" => self.remote_id = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CommitLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let t = now();
        let mut f = CommitFields::default();
        event.record(&mut f);
        if f.message.as_deref() == Some("Committed.")
            && let Some(id) = f.remote_id
        {
            self.0.commit.lock().unwrap().entry(id).or_insert(t);
        }
    }
}

/// A side as the bridge runs it, timing `deliver`.
struct Timed {
    inner: Arc<dyn Side>,
    seen: Arc<Seen>,
}

#[async_trait]
impl Side for Timed {
    fn name(&self) -> SideName {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
        let start = now();
        let r = self.inner.deliver(item).await;
        let end = now();
        if let (EventKind::Message(c), Ok(d)) = (&item.event, &r) {
            self.seen.delivered.lock().unwrap().push(Delivery {
                side: self.inner.name(),
                text: c.text(),
                start,
                end,
                links: d.links.iter().map(|(_, id)| id.clone()).collect(),
            });
        }
        r
    }
}

/// In front of the appservice listener: when each transaction arrived and when its answer was ready.
async fn time_transactions(State(seen): State<Arc<Seen>>, req: Request, next: Next) -> Response {
    let arrived = now();
    if req.method() != axum::http::Method::PUT || !req.uri().path().contains("/transactions/") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let ids: Vec<String> = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["events"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    {
        let mut put = seen.put.lock().unwrap();
        for id in &ids {
            put.entry(id.clone()).or_insert(arrived);
        }
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if resp.status().is_success() {
        let done = now();
        let mut ok = seen.ok.lock().unwrap();
        for id in ids {
            ok.entry(id).or_insert(done);
        }
    }
    resp
}

// ------------------------------------------------------------------ matrix-nio peers

/// A matrix-nio person (tests/peers/nio_peer.py) as a JSON-lines child process. Its stderr goes to
/// a log file; it is killed when dropped, and exits by itself when this process goes (stdin EOF).
struct Peer {
    name: &'static str,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    events: Arc<Mutex<Vec<Value>>>,
    replies: Arc<Mutex<HashMap<u64, Value>>>,
    closed: Arc<AtomicBool>,
    notify: Arc<Notify>,
    next_id: u64,
    log: PathBuf,
}

impl Peer {
    async fn start(env: &Env, name: &'static str, user: &str, password: &str) -> Res<Peer> {
        let log = std::env::temp_dir().join(format!("coi-matrix-bench-nio-{name}.log"));
        let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = tokio::process::Command::new(&env.python)
            .arg(env.repo.join("tests/peers/nio_peer.py"))
            .args([env.hs_url.as_str(), user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the nio peer with {}: {e}", env.python))?;
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let replies: Arc<Mutex<HashMap<u64, Value>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(Notify::new());
        {
            let (events, replies, closed, notify) = (
                events.clone(),
                replies.clone(),
                closed.clone(),
                notify.clone(),
            );
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let Ok(v) = serde_json::from_str::<Value>(&l) else {
                        continue;
                    };
                    if v.get("event").is_some() {
                        events.lock().unwrap().push(v);
                    } else if v["ready"] == true || v.get("ok") == Some(&json!(false)) {
                        // The start line (ready, or a login failure) has no id: 0.
                        let id = v["id"].as_u64().unwrap_or(0);
                        replies.lock().unwrap().insert(id, v);
                    } else if let Some(id) = v["id"].as_u64() {
                        replies.lock().unwrap().insert(id, v);
                    }
                    notify.notify_waiters();
                }
                closed.store(true, Ordering::SeqCst);
                notify.notify_waiters();
            });
        }
        let peer = Peer {
            name,
            child,
            stdin,
            events,
            replies,
            closed,
            notify,
            next_id: 1,
            log,
        };
        let ready = peer
            .until("login and first sync", Duration::from_secs(120), |p| {
                p.replies.lock().unwrap().remove(&0)
            })
            .await?;
        if ready["ok"] != true {
            return Err(format!("{} ({user}): {}", peer.name, ready["error"]));
        }
        Ok(peer)
    }

    /// Waits until `check` gives something, the peer exits, or `limit` passes.
    async fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Peer) -> Option<T>,
    ) -> Res<T> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(format!(
                    "nio peer {} exited while waiting for {what} (its log: {})",
                    self.name,
                    self.log.display()
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return Err(format!(
                    "nio peer {}: no {what} within {} s (its log: {})",
                    self.name,
                    limit.as_secs(),
                    self.log.display()
                ));
            }
        }
    }

    /// Sends a command and waits for its answer; an answer with `ok: false` is an error.
    async fn cmd(&mut self, mut req: Value) -> Res<Value> {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = json!(id);
        let what = format!("answer to {}", req["cmd"]);
        self.stdin
            .write_all(format!("{req}\n").as_bytes())
            .await
            .map_err(|e| format!("nio peer {}: cannot write: {e}", self.name))?;
        let r = self
            .until(&what, Duration::from_secs(60), |p| {
                p.replies.lock().unwrap().remove(&id)
            })
            .await?;
        if r["ok"] != true {
            return Err(format!("nio peer {}: {req} -> {r}", self.name));
        }
        Ok(r)
    }

    /// The first event seen that matches.
    fn find(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|v| pred(v))
            .cloned()
    }

    async fn event(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Res<Value> {
        self.until(what, limit, |p| p.find(&pred)).await
    }

    /// When this peer's sync loop saw a message whose body contains `token`.
    fn saw(&self, token: &str) -> Option<f64> {
        self.find(|v| {
            v["event"] == "message" && v["body"].as_str().is_some_and(|b| has_word(b, token))
        })
        .and_then(|v| v["t"].as_f64())
    }

    async fn shutdown(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.stdin.write_all(b"{\"cmd\": \"shutdown\"}\n"),
        )
        .await;
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

// ------------------------------------------------------------------ the stack and the bridge

/// What the run needs from the stack's environment.
struct Env {
    repo: PathBuf,
    python: String,
    stack_dir: PathBuf,
    hs_url: String,
    server_name: String,
    as_token: String,
    hs_token: String,
    as_url: String,
    as_id: String,
    bot: String,
    prefix: String,
}

impl Env {
    /// `deploy/stack.sh env`, overridden by this process's environment.
    fn load() -> Res<Env> {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("bash")
            .arg(repo.join("deploy/stack.sh"))
            .arg("env")
            .output()
            .map_err(|e| format!("deploy/stack.sh env: {e}"))?;
        let mut vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (k, v) in std::env::vars() {
            if k.starts_with("COI_") {
                vars.insert(k, v);
            }
        }
        let get = |k: &str| {
            vars.get(k).cloned().ok_or_else(|| {
                format!("{k} is not set (eval \"$(bash deploy/stack.sh env)\"; is Synapse part of the stack?)")
            })
        };
        Ok(Env {
            python: get("COI_PYTHON")?,
            stack_dir: PathBuf::from(get("COI_STACK_DIR")?),
            hs_url: get("COI_MATRIX_HS_URL")?,
            server_name: get("COI_MATRIX_SERVER_NAME")?,
            as_token: get("COI_MATRIX_AS_TOKEN")?,
            hs_token: get("COI_MATRIX_HS_TOKEN")?,
            as_url: get("COI_MATRIX_AS_URL")?,
            as_id: get("COI_MATRIX_AS_ID")?,
            bot: get("COI_MATRIX_BOT")?,
            prefix: get("COI_MATRIX_PREFIX")?,
            repo,
        })
    }

    fn bot_id(&self) -> String {
        format!("@{}:{}", self.bot, self.server_name)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ingest {
    Lmtp,
    Imap,
}

impl Ingest {
    fn mail_domain(self) -> &'static str {
        match self {
            Ingest::Lmtp => "lmtp.example.test",
            Ingest::Imap => "bridge.example.test",
        }
    }
}

fn config(env: &Env, dir: &Path, ingest: Ingest) -> Res<Validated> {
    let path = dir.join("bridge.toml");
    let listen = env
        .as_url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    std::fs::write(
        &path,
        format!(
            r#"[database]
url = "sqlite://{db}/bridge.db"
[email]
mail_domain = "{domain}"
bridge_address = "{BRIDGE_USER}"
ingest = "{ingest}"
lmtp_listen = "{LMTP_LISTEN}"
imap_host = "127.0.0.1"
imap_port = 143
imap_security = "starttls"
imap_user = "{BRIDGE_USER}"
imap_password = "{BRIDGE_PASS}"
smtp_host = "127.0.0.1"
smtp_port = 587
smtp_security = "starttls"
smtp_user = "{BRIDGE_USER}"
smtp_password = "{BRIDGE_PASS}"
accept_invalid_certs = true
allow_new_chats_from = ["{CAROL}"]
[matrix]
homeserver_url = "{hs}"
server_name = "{server}"
as_token = "{as_token}"
hs_token = "{hs_token}"
bot_localpart = "{bot}"
ghost_prefix = "{prefix}"
listen = "{listen}"
url = "{as_url}"
registration_id = "{as_id}"
"#,
            db = dir.display(),
            domain = ingest.mail_domain(),
            ingest = if ingest == Ingest::Lmtp {
                "lmtp"
            } else {
                "imap"
            },
            hs = env.hs_url,
            server = env.server_name,
            as_token = env.as_token,
            hs_token = env.hs_token,
            bot = env.bot,
            prefix = env.prefix,
            as_url = env.as_url,
            as_id = env.as_id,
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Config::load(&path).map_err(|e| format!("bench config: {e}"))
}

/// The bridge of one phase, running in-process.
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    ingest_error: Arc<Mutex<Option<String>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(15));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => if r.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break; }
            }
        }
    }

    fn ingest_error(&self) -> String {
        self.ingest_error
            .lock()
            .unwrap()
            .as_ref()
            .map(|e| format!(" (the email ingest stopped: {e})"))
            .unwrap_or_default()
    }
}

/// Starts the bridge as src/app.rs does; `imap_from`: the IMAP checkpoint (UIDVALIDITY, last UID).
async fn start_bridge(
    env: &Env,
    seen: &Arc<Seen>,
    ingest: Ingest,
    imap_from: Option<(i64, i64)>,
) -> Res<Running> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let v = config(env, dir.path(), ingest)?;
    let settings = v.matrix.clone().expect("[matrix] is configured");
    if ingest == Ingest::Lmtp {
        // Fail here with a clear message rather than in the ingest task.
        drop(
            tokio::net::TcpListener::bind(LMTP_LISTEN)
                .await
                .map_err(|e| format!("cannot listen on {LMTP_LISTEN} (LMTP): {e}"))?,
        );
    }
    let store = Store::open(&v.config.database.url, v.config.database.max_connections)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let email_cfg = Arc::new(v.config.email.clone());
    if let Some((uidvalidity, last_uid)) = imap_from {
        let key = format!("{}/{}", email_cfg.imap_user, email_cfg.imap_mailbox);
        store
            .save_checkpoint(&key, uidvalidity, last_uid)
            .await
            .map_err(|e| format!("checkpoint: {e}"))?;
    }
    let email: Arc<dyn Side> = Arc::new(
        EmailSide::new(email_cfg.clone(), &v.email).map_err(|e| format!("email side: {e}"))?,
    );
    let matrix = Arc::new(
        MatrixSide::new(&settings, store.clone()).map_err(|e| format!("Matrix side: {e}"))?,
    );
    let timed = |inner: Arc<dyn Side>| -> Arc<dyn Side> {
        Arc::new(Timed {
            inner,
            seen: seen.clone(),
        })
    };
    let bridge = Arc::new(
        Bridge::builder(store.clone())
            .side(timed(email))
            .side(timed(matrix.clone()))
            .build(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    // The listener, as matrix_side::start puts it together, behind the timing layer.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} for Synapse: {e} (is a bridge or test holding it without the lock?)",
                settings.listen
            )
        })?;
    let commands = Commands::new(
        matrix.client().clone(),
        settings.namer.clone(),
        bridge.router(),
        settings.permissions.clone(),
    );
    let state = ListenerState::with_commands(
        &settings.hs_token,
        bridge.router(),
        settings.namer.clone(),
        commands,
    );
    let app = matrix_side::listener::app(state).layer(axum::middleware::from_fn_with_state(
        seen.clone(),
        time_transactions,
    ));
    let stop_listener = stopped(stop_rx.clone());
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop_listener)
            .await
        {
            eprintln!("appservice listener stopped: {e}");
        }
    });
    let mut run = Running {
        stop,
        tasks,
        ingest_error: Arc::default(),
        _dir: dir,
    };
    if let Err(e) = matrix_side::startup(matrix.client(), &settings, 10).await {
        run.shutdown().await;
        return Err(format!("Matrix start-up: {e}"));
    }
    let ingest_error = run.ingest_error.clone();
    let ingest = coi_side::run_ingest(
        email_cfg,
        v.email.clone(),
        bridge.router(),
        stopped(stop_rx.clone()),
    );
    run.tasks.spawn(async move {
        if let Err(e) = ingest.await {
            *ingest_error.lock().unwrap() = Some(e.to_string());
        }
    });
    run.tasks.spawn(bridge.clone().run(stopped(stop_rx)));
    Ok(run)
}

/// A mail thread from carol to alice's puppet address (Delta-Chat-style group mail, no Chat-Group-ID:
/// each mail answers the previous one, as an unencrypted Delta Chat group does).
struct Thread {
    tag: String,
    puppet: String,
    group: String,
    last: Option<String>,
    seq: usize,
}

impl Thread {
    fn new(tag: &str, ingest: Ingest) -> Thread {
        let local = coi_side::codec::escape_localpart(ALICE).expect("escape");
        Thread {
            tag: tag.to_owned(),
            puppet: format!("{local}@{}", ingest.mail_domain()),
            group: format!("Matrix bench {tag}"),
            last: None,
            seq: 0,
        }
    }

    /// The next mail: (Message-ID, raw mail, a token its text contains). No Date header: Postfix
    /// adds the current one.
    fn next(&mut self, what: &str) -> (String, String, String) {
        self.seq += 1;
        let token = format!("{}-{what}-{}", self.tag, self.seq);
        let id = format!("{token}@example.test");
        let mut h = format!(
            "From: \"Carol\" <{CAROL}>\r\nTo: <{}>\r\nSubject: {}{}\r\nMessage-ID: <{id}>\r\n\
             Chat-Version: 1.0\r\nChat-Group-Name: {}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n",
            self.puppet,
            if self.last.is_some() { "Re: " } else { "" },
            self.group,
            self.group,
        );
        if let Some(p) = &self.last {
            h.push_str(&format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n"));
        }
        self.last = Some(id.clone());
        (id, format!("{h}\r\nmail to matrix {token}\r\n"), token)
    }
}

/// Everything a phase works with.
struct Ctx {
    env: Env,
    seen: Arc<Seen>,
    smtp: RawSmtp,
    alice: Peer,
    bob: Peer,
    /// bench_bob's plain room with alice (the nio baseline).
    base_room: String,
    /// carol's INBOX: Message-ID → when Dovecot announced it (IMAP IDLE).
    carol_inbox: Arc<Mutex<HashMap<String, f64>>>,
    tag: String,
    n: usize,
    /// Rooms alice joined, left at the end.
    portals: Vec<String>,
}

async fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Carol mails alice's puppet; the bridge opens a chat and a portal room; alice joins and sees
/// carol's ghost say it. Returns the room.
async fn open_portal(
    ctx: &mut Ctx,
    run: &Running,
    thread: &mut Thread,
    ingest: Ingest,
) -> Res<String> {
    let t0 = now();
    let (id, raw, token) = thread.next("open");
    ctx.smtp
        .send(CAROL, &thread.puppet, &raw)
        .await
        .map_err(|e| format!("SMTP (port 25) refused the opening mail: {e}"))?;
    let deadline = Instant::now() + SETUP_WAIT;
    let mut flushed = Instant::now();
    while ctx.seen.commit(&id).is_none() {
        if Instant::now() > deadline {
            return Err(format!(
                "the opening mail to {} was not committed within {} s{}{}",
                thread.puppet,
                SETUP_WAIT.as_secs(),
                run.ingest_error(),
                if ingest == Ingest::Lmtp {
                    " (does Postfix route lmtp.example.test to 127.0.0.1:2424? `postqueue -p` shows held mail)"
                } else {
                    ""
                }
            ));
        }
        if ingest == Ingest::Lmtp && flushed.elapsed() > Duration::from_secs(5) {
            // Postfix may hold the destination as dead after an earlier refused connection.
            let _ = std::process::Command::new("postqueue").arg("-f").status();
            flushed = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bot = ctx.env.bot_id();
    let invite = ctx
        .alice
        .event("the bot's invite to the portal room", WAIT, |v| {
            v["event"] == "invite" && v["sender"] == bot.as_str() && v["t"].as_f64() > Some(t0)
        })
        .await?;
    let room = invite["room"].as_str().unwrap_or_default().to_owned();
    ctx.alice.cmd(json!({"cmd": "join", "room": room})).await?;
    ctx.portals.push(room.clone());
    ctx.alice
        .event("carol's opening message in the portal", WAIT, |v| {
            v["event"] == "message"
                && v["room"] == room.as_str()
                && v["body"].as_str().is_some_and(|b| has_word(b, &token))
        })
        .await?;
    Ok(room)
}

// ------------------------------------------------------------------ measurements

/// Spaces iterations: each starts `spacing` after the previous one started, or when it ended.
struct Pace {
    next: Instant,
    spacing: Duration,
}

impl Pace {
    fn new(spacing: Duration) -> Pace {
        Pace {
            next: Instant::now(),
            spacing,
        }
    }

    async fn tick(&mut self) {
        tokio::time::sleep_until(self.next.into()).await;
        self.next = Instant::now() + self.spacing;
    }
}

/// Counts lost messages; too many in a row end the measurement.
struct Lost {
    total: usize,
    in_a_row: usize,
}

impl Lost {
    fn record(&mut self, lost: bool, what: &str) -> Res<()> {
        if !lost {
            self.in_a_row = 0;
            return Ok(());
        }
        self.total += 1;
        self.in_a_row += 1;
        println!("  (lost: {what} not seen within {} s)", WAIT.as_secs());
        if self.in_a_row >= MAX_LOST {
            return Err(format!("{MAX_LOST} messages in a row were lost ({what})"));
        }
        Ok(())
    }
}

/// One Matrix → email message.
struct ToEmail {
    event_id: String,
    token: String,
    t_send: f64,
    t_done: f64,
}

/// (a) and (b): alice sends in the portal; the bridge mails carol.
async fn to_email(ctx: &mut Ctx, room: &str) -> Res<()> {
    let n = ctx.n;
    println!(
        "Matrix → email: alice sends in the portal room, the bridge mails {CAROL} (Postfix 587); \
         {n} messages, one every {} ms (load {}):",
        MAIL_SPACING.as_millis(),
        loadavg()
    );
    let mut pace = Pace::new(MAIL_SPACING);
    let mut lost = Lost {
        total: 0,
        in_a_row: 0,
    };
    let mut sent = Vec::new();
    for i in 0..=n {
        pace.tick().await;
        let token = format!("{}-m2e-{i}", ctx.tag);
        let r = ctx
            .alice
            .cmd(json!({"cmd": "send", "room": room, "body": format!("matrix to email {token}")}))
            .await?;
        let m = ToEmail {
            event_id: r["event_id"].as_str().unwrap_or_default().to_owned(),
            token,
            t_send: r["t_send"].as_f64().unwrap_or(f64::NAN),
            t_done: r["t_done"].as_f64().unwrap_or(f64::NAN),
        };
        let (seen, inbox) = (ctx.seen.clone(), ctx.carol_inbox.clone());
        let arrived = wait_for(WAIT, || {
            let (_, _, links) = seen.delivery(SideName::EMAIL, &m.token)?;
            let inbox = inbox.lock().unwrap();
            links.iter().find_map(|l| inbox.get(l).copied())
        })
        .await;
        // The first message opens the SMTP connection: not counted.
        if i > 0 {
            lost.record(arrived.is_none(), &format!("mail for {}", m.event_id))?;
            sent.push(m);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = &ctx.seen;
    let put = seen.put.lock().unwrap().clone();
    let ok = seen.ok.lock().unwrap().clone();
    let inbox = ctx.carol_inbox.lock().unwrap().clone();
    let commit = |m: &ToEmail| seen.commit(&m.event_id);
    let delivery = |m: &ToEmail| seen.delivery(SideName::EMAIL, &m.token);
    let exists = |m: &ToEmail| {
        let (_, _, links) = delivery(m)?;
        links.iter().find_map(|l| inbox.get(l).copied())
    };
    let series =
        |f: &dyn Fn(&ToEmail) -> Option<f64>| -> Vec<f64> { sent.iter().filter_map(f).collect() };
    row(
        "nio room_send round trip (alice)",
        series(&|m| Some(ms(m.t_send, m.t_done))),
    );
    row(
        "baseline: nio send → AS txn PUT arrives",
        series(&|m| Some(ms(m.t_send, *put.get(&m.event_id)?))),
    );
    row(
        "(a) PUT arrives → router commit",
        series(&|m| Some(ms(*put.get(&m.event_id)?, commit(m)?))),
    );
    row(
        "PUT arrives → 200 ready",
        series(&|m| Some(ms(*put.get(&m.event_id)?, *ok.get(&m.event_id)?))),
    );
    row(
        "commit → EmailSide::deliver starts",
        series(&|m| Some(ms(commit(m)?, delivery(m)?.0))),
    );
    row(
        "deliver: render + SMTP until 250",
        series(&|m| delivery(m).map(|(a, b, _)| ms(a, b))),
    );
    row(
        "Postfix 250 → carol's IDLE EXISTS",
        series(&|m| Some(ms(delivery(m)?.1, exists(m)?))),
    );
    row(
        "nio send → router commit",
        series(&|m| Some(ms(m.t_send, commit(m)?))),
    );
    row(
        "(b) nio send → carol's IDLE EXISTS",
        series(&|m| Some(ms(m.t_send, exists(m)?))),
    );
    if lost.total > 0 {
        println!("  LOST: {} of {n}", lost.total);
    }
    Ok(())
}

/// One email → Matrix mail and the nio baseline message after it.
struct ToMatrix {
    id: String,
    token: String,
    t0: f64,
    submitted: f64,
    base_token: String,
    base_send: f64,
    base_done: f64,
}

/// (c): carol mails alice's puppet; alice's nio sync sees the ghost's message. Each is followed by
/// bench_bob → alice in the baseline room.
async fn to_matrix(
    ctx: &mut Ctx,
    thread: &mut Thread,
    ingest: Ingest,
    dovecot: Option<&Arc<Mutex<HashMap<String, f64>>>>,
) -> Res<()> {
    let n = ctx.n;
    let spacing = if ingest == Ingest::Imap {
        MAIL_SPACING
    } else {
        LMTP_SPACING
    };
    println!(
        "email → Matrix via {}: carol submits on Postfix 25 to alice's puppet, alice's nio sync sees \
         it; each followed by the nio baseline (bench_bob → alice); {n} mails, one every {} ms (load {}):",
        match ingest {
            Ingest::Lmtp => "LMTP (lmtp.example.test → 127.0.0.1:2424)",
            Ingest::Imap => "IMAP IDLE (bridge.example.test → bridge@example.test INBOX, STARTTLS)",
        },
        spacing.as_millis(),
        loadavg()
    );
    let mut pace = Pace::new(spacing);
    let mut lost = Lost {
        total: 0,
        in_a_row: 0,
    };
    let mut sent = Vec::new();
    for i in 0..=n {
        pace.tick().await;
        let (id, raw, token) = thread.next("m");
        let t0 = now();
        ctx.smtp
            .send(CAROL, &thread.puppet, &raw)
            .await
            .map_err(|e| format!("SMTP (port 25): {e}"))?;
        let submitted = now();
        let alice = &ctx.alice;
        let seen = wait_for(WAIT, || alice.saw(&token)).await;
        let base_token = format!("{}-base-{i}", thread.tag);
        let r = ctx
            .bob
            .cmd(json!({"cmd": "send", "room": ctx.base_room, "body": format!("baseline {base_token}")}))
            .await?;
        let alice = &ctx.alice;
        let base_seen = wait_for(WAIT, || alice.saw(&base_token)).await;
        if i > 0 {
            lost.record(seen.is_none(), &format!("the ghost's message for {id}"))?;
            lost.record(base_seen.is_none(), &format!("baseline {base_token}"))?;
            sent.push(ToMatrix {
                id,
                token,
                t0,
                submitted,
                base_token,
                base_send: r["t_send"].as_f64().unwrap_or(f64::NAN),
                base_done: r["t_done"].as_f64().unwrap_or(f64::NAN),
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = &ctx.seen;
    let alice = &ctx.alice;
    let commit = |m: &ToMatrix| seen.commit(&m.id);
    let delivery = |m: &ToMatrix| seen.delivery(SideName::MATRIX, &m.token);
    let series =
        |f: &dyn Fn(&ToMatrix) -> Option<f64>| -> Vec<f64> { sent.iter().filter_map(f).collect() };
    row(
        "SMTP submit (until Postfix 250)",
        series(&|m| Some(ms(m.t0, m.submitted))),
    );
    if let Some(d) = dovecot {
        let d = d.lock().unwrap().clone();
        row(
            "SMTP → Dovecot IDLE EXISTS (baseline)",
            series(&|m| Some(ms(m.t0, *d.get(&m.id)?))),
        );
        row(
            "Dovecot EXISTS → router commit",
            series(&|m| Some(ms(*d.get(&m.id)?, commit(m)?))),
        );
    }
    row(
        "SMTP → router commit",
        series(&|m| Some(ms(m.t0, commit(m)?))),
    );
    row(
        "commit → MatrixSide::deliver starts",
        series(&|m| Some(ms(commit(m)?, delivery(m)?.0))),
    );
    row(
        "deliver: ghost's send until Synapse 200",
        series(&|m| delivery(m).map(|(a, b, _)| ms(a, b))),
    );
    row(
        "Synapse 200 → alice's sync sees it",
        series(&|m| Some(ms(delivery(m)?.1, alice.saw(&m.token)?))),
    );
    row(
        "(c) SMTP → alice's sync sees it",
        series(&|m| Some(ms(m.t0, alice.saw(&m.token)?))),
    );
    row(
        "baseline: nio bench_bob → alice sees it",
        series(&|m| Some(ms(m.base_send, alice.saw(&m.base_token)?))),
    );
    row(
        "baseline: nio room_send round trip",
        series(&|m| Some(ms(m.base_send, m.base_done))),
    );
    if lost.total > 0 {
        println!(
            "  LOST: {} (of {n} mails and {n} baseline messages)",
            lost.total
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ phases

async fn lmtp_phase(ctx: &mut Ctx, with_to_email: bool, with_lmtp: bool) -> Res<()> {
    let run = start_bridge(&ctx.env, &ctx.seen, Ingest::Lmtp, None).await?;
    let r = async {
        let mut thread = Thread::new(&format!("{}-l", ctx.tag), Ingest::Lmtp);
        let room = open_portal(ctx, &run, &mut thread, Ingest::Lmtp).await?;
        if with_to_email {
            to_email(ctx, &room).await?;
        }
        if with_lmtp {
            to_matrix(ctx, &mut thread, Ingest::Lmtp, None).await?;
        }
        Ok(())
    }
    .await;
    run.shutdown().await;
    r
}

async fn imap_phase(ctx: &mut Ctx) -> Res<()> {
    // A raw IDLE client on the bridge mailbox: the Dovecot baseline, and where the bridge starts.
    let mut watcher = RawImap::connect(BRIDGE_USER, BRIDGE_PASS)
        .await
        .map_err(|e| format!("IMAP login as {BRIDGE_USER}: {e}"))?;
    let sel = watcher
        .command("SELECT INBOX")
        .await
        .map_err(|e| format!("IMAP SELECT: {e}"))?;
    let (Some(uidvalidity), Some(uidnext)) = (
        bracket_num(&sel, "UIDVALIDITY"),
        bracket_num(&sel, "UIDNEXT"),
    ) else {
        return Err("no UIDVALIDITY / UIDNEXT in the SELECT answer".into());
    };
    let exists_now = sel
        .iter()
        .find_map(|l| untagged_num(l, "EXISTS"))
        .unwrap_or(0);
    let dovecot: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let watch = tokio::spawn(watch_exists(watcher, exists_now, dovecot.clone(), now));
    let run = start_bridge(
        &ctx.env,
        &ctx.seen,
        Ingest::Imap,
        Some((uidvalidity, uidnext - 1)),
    )
    .await;
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            watch.abort();
            return Err(e);
        }
    };
    let r = async {
        let mut thread = Thread::new(&format!("{}-i", ctx.tag), Ingest::Imap);
        open_portal(ctx, &run, &mut thread, Ingest::Imap).await?;
        to_matrix(ctx, &mut thread, Ingest::Imap, Some(&dovecot)).await
    }
    .await;
    run.shutdown().await;
    watch.abort();
    r
}

/// Registers bench_bob on Synapse if needed (as deploy/synapse.sh registers alice).
async fn register_bob(env: &Env) -> Res<()> {
    let tool = Path::new(&env.python).with_file_name("register_new_matrix_user");
    let cfg = env.stack_dir.join("synapse/homeserver.yaml");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&tool)
            .args(["-c".as_ref(), cfg.as_os_str()])
            .args(["-u", BOB_LOCAL, "-p", BOB_PASS, "--no-admin", &env.hs_url])
            .output(),
    )
    .await
    .map_err(|_| format!("{} took over 60 s", tool.display()))?
    .map_err(|e| format!("{}: {e}", tool.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() || text.contains("User ID already taken") {
        Ok(())
    } else {
        Err(format!("cannot register {BOB}: {}", text.trim()))
    }
}

/// The baseline room: bench_bob creates it and invites alice, alice joins and sees bob speak.
async fn baseline_room(alice: &mut Peer, bob: &mut Peer, tag: &str) -> Res<String> {
    let r = bob
        .cmd(json!({"cmd": "create", "name": format!("coi bench baseline {tag}"), "invite": [ALICE]}))
        .await?;
    let room = r["room"].as_str().unwrap_or_default().to_owned();
    alice
        .event("bench_bob's invite", WAIT, |v| {
            v["event"] == "invite" && v["room"] == room.as_str()
        })
        .await?;
    alice.cmd(json!({"cmd": "join", "room": room})).await?;
    let token = format!("{tag}-base-hello");
    bob.cmd(json!({"cmd": "send", "room": room, "body": format!("baseline {token}")}))
        .await?;
    alice
        .until("bench_bob's first message", WAIT, |p| p.saw(&token))
        .await?;
    Ok(room)
}

async fn run(env: Env, n: usize, only: &str) -> Res<()> {
    let seen = Arc::new(Seen::default());
    tracing::subscriber::set_global_default({
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let commits = tracing_subscriber::filter::filter_fn(|m| {
            m.target() == "bridge_core::router" && *m.level() == tracing::Level::DEBUG
        });
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
            );
        tracing_subscriber::registry()
            .with(fmt)
            .with(CommitLayer(seen.clone()).with_filter(commits))
    })
    .map_err(|e| e.to_string())?;

    let smtp = RawSmtp::connect()
        .await
        .map_err(|e| format!("SMTP 127.0.0.1:25: {e}"))?;
    register_bob(&env).await?;
    let mut alice = Peer::start(&env, "alice", ALICE, ALICE_PASS).await?;
    let mut bob = match Peer::start(&env, "bench_bob", BOB, BOB_PASS).await {
        Ok(b) => b,
        Err(e) => {
            alice.shutdown().await;
            return Err(e);
        }
    };
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let base_room = match baseline_room(&mut alice, &mut bob, &tag).await {
        Ok(r) => r,
        Err(e) => {
            alice.shutdown().await;
            bob.shutdown().await;
            return Err(e);
        }
    };
    // carol's INBOX, where the bridge's mails land.
    let carol_inbox: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let carol_watch = async {
        let mut c = RawImap::connect(CAROL, CAROL_PASS)
            .await
            .map_err(|e| format!("IMAP login as {CAROL}: {e}"))?;
        let sel = c
            .command("SELECT INBOX")
            .await
            .map_err(|e| format!("IMAP SELECT as {CAROL}: {e}"))?;
        let exists = sel
            .iter()
            .find_map(|l| untagged_num(l, "EXISTS"))
            .unwrap_or(0);
        Ok::<_, String>(tokio::spawn(watch_exists(
            c,
            exists,
            carol_inbox.clone(),
            now,
        )))
    }
    .await;
    let mut ctx = Ctx {
        env,
        seen,
        smtp,
        alice,
        bob,
        base_room,
        carol_inbox,
        tag,
        n,
        portals: Vec::new(),
    };
    let r = async {
        let carol_watch = carol_watch?;
        let want = |p: &str| only.is_empty() || only.split(',').any(|o| o.trim() == p);
        let r = async {
            if want("to-email") || want("lmtp") {
                lmtp_phase(&mut ctx, want("to-email"), want("lmtp")).await?;
            }
            if want("imap") {
                imap_phase(&mut ctx).await?;
            }
            Ok(())
        }
        .await;
        carol_watch.abort();
        r
    }
    .await;
    // Leave the bench's rooms, so that alice's account does not pile them up.
    let rooms = std::mem::take(&mut ctx.portals);
    for room in rooms.iter().chain([&ctx.base_room]) {
        if let Err(e) = ctx.alice.cmd(json!({"cmd": "leave", "room": room})).await {
            println!("(cleanup: {e})");
        }
    }
    if let Err(e) = ctx
        .bob
        .cmd(json!({"cmd": "leave", "room": ctx.base_room}))
        .await
    {
        println!("(cleanup: {e})");
    }
    ctx.alice.shutdown().await;
    ctx.bob.shutdown().await;
    r
}

fn main() {
    if std::env::var("COI_TEST_STACK").as_deref() != Ok("1") {
        println!(
            "matrix_e2e bench skipped: COI_TEST_STACK is not set (bash deploy/stack.sh up --no-bridge; eval \"$(bash deploy/stack.sh env)\")"
        );
        return;
    }
    let env = match Env::load() {
        Ok(e) => e,
        Err(e) => {
            println!("matrix_e2e bench skipped: {e}");
            return;
        }
    };
    let n = std::env::var("COI_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(N);
    let only = std::env::var("MATRIX_E2E_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let health = reqwest::Client::new()
            .get(format!("{}/health", env.hs_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if !health.is_ok_and(|r| r.status().is_success()) {
            println!(
                "matrix_e2e bench skipped: Synapse does not answer at {} (bash deploy/stack.sh up --no-bridge)",
                env.hs_url
            );
            return Ok(());
        }
        // The listener port and the bridge mailboxes are shared with the Synapse tests.
        let lock_path = std::env::temp_dir().join("coi-synapse-listener.lock");
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        let lock = match lock.try_lock() {
            Ok(()) => lock,
            Err(std::fs::TryLockError::WouldBlock) => {
                println!(
                    "waiting for {} (a Synapse test or bench holds it) …",
                    lock_path.display()
                );
                tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{}: {e}", lock_path.display()))?
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("{}: {e}", lock_path.display()));
            }
        };
        println!(
            "matrix_e2e: N = {n} per measurement (+1 warm-up), nproc {}, load average {} at the start",
            std::thread::available_parallelism().map_or(0, |p| p.get()),
            loadavg()
        );
        let t = Instant::now();
        let r = run(env, n, &only).await;
        println!(
            "matrix_e2e: {:.0} s, load average {} at the end",
            t.elapsed().as_secs_f64(),
            loadavg()
        );
        drop(lock);
        r
    });
    drop(rt);
    if let Err(e) = result {
        println!("matrix_e2e bench FAILED: {e}");
        std::process::exit(1);
    }
}
