//! End-to-end latency through the real local mail stack: SMTP submit (Postfix port 25) → router
//! commit, via IMAP IDLE ingest and via LMTP ingest. `cargo bench --bench e2e`; needs the stack
//! (`bash deploy/stack.sh up --no-bridge; eval "$(bash deploy/stack.sh env)"`), else it skips.
//!
//! The bridge runs in-process, wired as `coi_side::run_ingest` wires it (same `MailSink`, IMAP
//! config, checkpoint store and LMTP listener), over a temporary SQLite store, with a recording
//! side standing in for Matrix (drained by `Bridge::run`, as in production). The mail sink is
//! wrapped: `accept` returns only after the router committed (or durably kept) the mail, so the
//! instant it returns is the commit time. The recording side's `deliver` gives the time the
//! event reached the other side. No production code is involved in the timing.
//!
//! * IMAP: mails to a puppet of bridge.example.test land in the bridge@example.test catch-all;
//!   the bridge starts with its checkpoint past the mail already there. Mails are sent one at a
//!   time, `IMAP_SPACING` apart so each is isolated (Dovecot holds IDLE notifications for a fixed
//!   500 ms). A second, raw IMAP client IDLEs on the same mailbox: its `* n EXISTS` time is the
//!   Dovecot baseline (SMTP → IDLE notification) for the same mails.
//! * LMTP: Postfix routes *@lmtp.example.test to 127.0.0.1:2424 (deploy/stack.sh); the bridge
//!   listens there with mail_domain = lmtp.example.test. Mails are sent `LMTP_SPACING` apart,
//!   then `LMTP_BURST` back to back (each send waits for Postfix's 250 only).
//!
//! Latencies are measured from just before the SMTP submission starts. Figures only, no asserts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benches may panic

use async_trait::async_trait;
use bridge_core::ir::EventKind;
use bridge_core::{Bridge, Capabilities, Delivered, OutboxItem, Side, SideError, SideName, Store};
use coi_bridge::config::{Config, Validated};
use coi_side::MailSink;
use coi_side::side::StoreCheckpoints;
use coi_side::transport::{
    self, CheckpointStore, ImapConfig, InboundMail, InboundSink, IngestError, LmtpConfig, Security,
    SmtpConfig, SmtpSender,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{RawImap, RawSmtp, bracket_num, message_id, row, untagged_num, watch_exists};

const IMAP_N: usize = 100;
const IMAP_SPACING: Duration = Duration::from_millis(650);
const LMTP_N: usize = 100;
const LMTP_SPACING: Duration = Duration::from_millis(100);
const LMTP_BURST: usize = 200;
const LMTP_LISTEN: &str = "127.0.0.1:2424";
const BRIDGE_USER: &str = "bridge@example.test";
const BRIDGE_PASS: &str = "bridgepass";
const FROM: &str = "alice@example.test";

type Times = Arc<Mutex<HashMap<String, Instant>>>;

/// The bridge's `MailSink`, timing when `accept` returns.
struct TimingSink {
    inner: MailSink,
    commits: Times,
    failures: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl InboundSink for TimingSink {
    async fn accept(&self, mail: InboundMail) -> Result<(), IngestError> {
        let id = message_id(&mail.raw);
        let r = self.inner.accept(mail).await;
        let now = Instant::now();
        match &r {
            Ok(()) => {
                if let Some(id) = id {
                    self.commits.lock().unwrap().entry(id).or_insert(now);
                }
            }
            Err(e) => self.failures.lock().unwrap().push(e.to_string()),
        }
        r
    }
}

/// Stands in for Matrix: records when each event arrives.
struct RecordingSide {
    delivered: Mutex<Vec<(String, Instant)>>,
}

#[async_trait]
impl Side for RecordingSide {
    fn name(&self) -> SideName {
        SideName::MATRIX
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
        let now = Instant::now();
        if let EventKind::Message(c) = &item.event {
            self.delivered.lock().unwrap().push((c.text(), now));
        }
        Ok(Delivered {
            links: vec![(String::new(), format!("$rec-{}", item.message_uuid))],
            chat_link: item
                .chat
                .remote_chat_id
                .is_none()
                .then(|| format!("!rec-{}", item.chat.group_id)),
            ..Delivered::default()
        })
    }
}

/// A Delta-Chat-style unencrypted group mail (as tests/support::group_mail), CRLF line ends.
fn group_mail(puppet: &str, group: &str, id: &str, parent: Option<&str>) -> String {
    let mut h = format!(
        "From: \"Alice\" <{FROM}>\r\nTo: <bob@example.test>, <{puppet}>\r\nSubject: {}{group}\r\n\
         Message-ID: <{id}>\r\nDate: Fri, 27 Nov 2026 20:28:24 +0000\r\nChat-Version: 1.0\r\n\
         Chat-Group-Name: {group}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n",
        if parent.is_some() { "Re: " } else { "" },
    );
    if let Some(p) = parent {
        h.push_str(&format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n"));
    }
    format!("{h}\r\nbench message {id}\r\n")
}

/// The running in-process bridge of one phase.
struct Running {
    commits: Times,
    failures: Arc<Mutex<Vec<String>>>,
    recorder: Arc<RecordingSide>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
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

    fn delivered_at(&self, id: &str) -> Option<Instant> {
        self.recorder
            .delivered
            .lock()
            .unwrap()
            .iter()
            .find(|(text, _)| text.contains(id))
            .map(|(_, t)| *t)
    }
}

fn config(dir: &std::path::Path, mail_domain: &str, ingest: &str) -> Validated {
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            r#"[database]
url = "sqlite://{}/bridge.db"
[email]
mail_domain = "{mail_domain}"
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
allow_new_chats_from = ["example.test"]
"#,
            dir.display()
        ),
    )
    .expect("write config");
    Config::load(&path).expect("config")
}

enum Ingest {
    /// With the checkpoint (UIDVALIDITY, last UID) to start from.
    Imap(i64, i64),
    Lmtp(tokio::net::TcpListener),
}

/// Starts the bridge (store, router, recording side's drainer, ingest) as `coi_side::run_ingest` does.
async fn start(mail_domain: &str, ingest: Ingest) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = config(
        dir.path(),
        mail_domain,
        if matches!(ingest, Ingest::Imap(..)) {
            "imap"
        } else {
            "lmtp"
        },
    );
    let store = Store::open(&v.config.database.url, v.config.database.max_connections)
        .await
        .expect("store");
    let recorder = Arc::new(RecordingSide {
        delivered: Mutex::new(Vec::new()),
    });
    let bridge = Arc::new(
        Bridge::builder(store.clone())
            .side(recorder.clone())
            .build(),
    );
    let cfg = Arc::new(v.config.email.clone());
    let commits: Times = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink: Arc<dyn InboundSink> = Arc::new(TimingSink {
        inner: MailSink::new(cfg.clone(), bridge.router()),
        commits: commits.clone(),
        failures: failures.clone(),
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(bridge.clone().run(stopped(stop_rx.clone())));
    match ingest {
        Ingest::Imap(uidvalidity, last_uid) => {
            let key = format!("{}/{}", cfg.imap_user, cfg.imap_mailbox);
            store
                .save_checkpoint(&key, uidvalidity, last_uid)
                .await
                .expect("checkpoint");
            let mut icfg = ImapConfig::new(
                cfg.imap_host.clone(),
                cfg.imap_port,
                Security::StartTls,
                cfg.imap_user.clone(),
                v.email.imap_password.clone(),
            );
            icfg.accept_invalid_certs = cfg.accept_invalid_certs;
            icfg.mailbox = cfg.imap_mailbox.clone();
            let checkpoints: Arc<dyn CheckpointStore> =
                Arc::new(StoreCheckpoints::new(store.clone(), &cfg.imap_user));
            let stop = stopped(stop_rx.clone());
            tasks.spawn(async move {
                if let Err(e) = transport::run_ingest(icfg, sink, checkpoints, stop).await {
                    eprintln!("IMAP ingest stopped: {e}");
                }
            });
        }
        Ingest::Lmtp(listener) => {
            let mut lcfg = LmtpConfig::new(
                cfg.mail_domain.clone(),
                vec![cfg.mail_domain.clone(), "example.test".to_owned()],
            );
            lcfg.max_message_bytes = cfg.max_message_bytes;
            let stop = stopped(stop_rx.clone());
            tasks.spawn(transport::serve(listener, lcfg, sink, stop));
        }
    }
    Running {
        commits,
        failures,
        recorder,
        stop,
        tasks,
        _dir: dir,
    }
}

/// One sent mail: its Message-ID and when the SMTP submission started and ended.
struct Sent {
    id: String,
    t0: Instant,
    submitted: Instant,
}

struct Chat {
    tag: String,
    puppet: String,
    group: String,
    last: Option<String>,
    seq: usize,
}

impl Chat {
    fn next(&mut self, phase: &str) -> (String, String) {
        self.seq += 1;
        let id = format!("{}-{phase}-{}@example.test", self.tag, self.seq);
        let raw = group_mail(&self.puppet, &self.group, &id, self.last.as_deref());
        self.last = Some(id.clone());
        (id, raw)
    }
}

async fn send(smtp: &mut RawSmtp, puppet: &str, id: String, raw: &str) -> Sent {
    let t0 = Instant::now();
    smtp.send(FROM, puppet, raw).await.expect("SMTP send");
    Sent {
        id,
        t0,
        submitted: Instant::now(),
    }
}

/// Waits until every id has a commit, or `limit` passed; returns how many are missing.
async fn wait_commits(run: &Running, ids: &[&str], limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let missing = {
            let c = run.commits.lock().unwrap();
            ids.iter().filter(|id| !c.contains_key(**id)).count()
        };
        if missing == 0 || start.elapsed() > limit {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one opening mail (creates the chat, warms connections) and waits for its commit.
async fn warm_up(run: &Running, smtp: &mut RawSmtp, chat: &mut Chat, lmtp: bool) -> bool {
    let (id, raw) = chat.next("warmup");
    send(smtp, &chat.puppet, id.clone(), &raw).await;
    if wait_commits(run, &[&id], Duration::from_secs(20)).await == 0 {
        return true;
    }
    if lmtp {
        // Postfix may hold the destination as dead after an earlier refused connection.
        let _ = std::process::Command::new("postqueue").arg("-f").status();
        return wait_commits(run, &[&id], Duration::from_secs(40)).await == 0;
    }
    false
}

fn ms(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1000.0
}

/// Prints the latency rows of a batch.
fn report(run: &Running, sent: &[Sent], exists: Option<&Times>) {
    let commits = run.commits.lock().unwrap().clone();
    let commit_at = |s: &Sent| commits.get(&s.id).copied();
    row(
        "SMTP submit (until Postfix 250)",
        sent.iter().map(|s| ms(s.t0, s.submitted)).collect(),
    );
    if let Some(ex) = exists {
        let ex = ex.lock().unwrap().clone();
        row(
            "SMTP → Dovecot IDLE EXISTS (base)",
            sent.iter()
                .filter_map(|s| ex.get(&s.id).map(|t| ms(s.t0, *t)))
                .collect(),
        );
        row(
            "Dovecot EXISTS → bridge commit",
            sent.iter()
                .filter_map(|s| Some(ms(*ex.get(&s.id)?, commit_at(s)?)))
                .collect(),
        );
    }
    row(
        "SMTP → router commit",
        sent.iter()
            .filter_map(|s| commit_at(s).map(|t| ms(s.t0, t)))
            .collect(),
    );
    row(
        "commit → delivered to other side",
        sent.iter()
            .filter_map(|s| Some(ms(commit_at(s)?, run.delivered_at(&s.id)?)))
            .collect(),
    );
    row(
        "SMTP → delivered to other side",
        sent.iter()
            .filter_map(|s| run.delivered_at(&s.id).map(|t| ms(s.t0, t)))
            .collect(),
    );
    let missing = sent.iter().filter(|s| commit_at(s).is_none()).count();
    if missing > 0 {
        println!(
            "  NOT COMMITTED within the wait: {missing} of {}",
            sent.len()
        );
    }
    let failures = run.failures.lock().unwrap();
    if !failures.is_empty() {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for f in failures.iter() {
            *counts.entry(f.as_str()).or_default() += 1;
        }
        for (f, k) in counts {
            println!("  sink returned an error {k}x (mail offered again later): {f}");
        }
    }
}

async fn spaced(
    smtp: &mut RawSmtp,
    chat: &mut Chat,
    phase: &str,
    n: usize,
    spacing: Duration,
) -> Vec<Sent> {
    let mut sent = Vec::with_capacity(n);
    for _ in 0..n {
        let (id, raw) = chat.next(phase);
        let s = send(smtp, &chat.puppet, id, &raw).await;
        let next = s.t0 + spacing;
        sent.push(s);
        tokio::time::sleep_until(next.into()).await;
    }
    sent
}

async fn imap_phase(smtp: &mut RawSmtp, tag: &str) {
    println!(
        "IMAP ingest (bridge.example.test → Dovecot → IMAP IDLE, STARTTLS), {IMAP_N} mails sent one at a time, {} ms apart:",
        IMAP_SPACING.as_millis()
    );
    let mut watcher = match RawImap::connect(BRIDGE_USER, BRIDGE_PASS).await {
        Ok(c) => c,
        Err(e) => {
            println!("  SKIPPED: cannot log in to IMAP 127.0.0.1:143 as {BRIDGE_USER}: {e}");
            return;
        }
    };
    let sel = watcher.command("SELECT INBOX").await.expect("SELECT");
    let (Some(uidvalidity), Some(uidnext)) = (
        bracket_num(&sel, "UIDVALIDITY"),
        bracket_num(&sel, "UIDNEXT"),
    ) else {
        println!("  SKIPPED: no UIDVALIDITY / UIDNEXT in the SELECT answer");
        return;
    };
    let seen = sel
        .iter()
        .find_map(|l| untagged_num(l, "EXISTS"))
        .unwrap_or(0);
    let exists: Times = Arc::default();
    let watch = tokio::spawn(watch_exists(watcher, seen, exists.clone(), Instant::now));
    let run = start(
        "bridge.example.test",
        Ingest::Imap(uidvalidity, uidnext - 1),
    )
    .await;
    let mut chat = Chat {
        tag: tag.to_owned(),
        puppet: "e2e-bench@bridge.example.test".to_owned(),
        group: format!("E2E IMAP {tag}"),
        last: None,
        seq: 0,
    };
    if !warm_up(&run, smtp, &mut chat, false).await {
        println!("  SKIPPED: the opening mail was not committed within 20 s");
        run.shutdown().await;
        watch.abort();
        return;
    }
    let sent = spaced(smtp, &mut chat, "imap", IMAP_N, IMAP_SPACING).await;
    let ids: Vec<&str> = sent.iter().map(|s| s.id.as_str()).collect();
    wait_commits(&run, &ids, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    report(&run, &sent, Some(&exists));
    run.shutdown().await;
    watch.abort();
}

async fn lmtp_phase(smtp: &mut RawSmtp, tag: &str) {
    let listener = match tokio::net::TcpListener::bind(LMTP_LISTEN).await {
        Ok(l) => l,
        Err(e) => {
            println!("LMTP ingest: SKIPPED, cannot listen on {LMTP_LISTEN}: {e}");
            return;
        }
    };
    let run = start("lmtp.example.test", Ingest::Lmtp(listener)).await;
    let mut chat = Chat {
        tag: tag.to_owned(),
        puppet: "e2e-bench@lmtp.example.test".to_owned(),
        group: format!("E2E LMTP {tag}"),
        last: None,
        seq: 0,
    };
    if !warm_up(&run, smtp, &mut chat, true).await {
        println!(
            "LMTP ingest: SKIPPED, the opening mail was not committed (does Postfix route lmtp.example.test to {LMTP_LISTEN}? re-run deploy/stack.sh up --no-bridge)"
        );
        run.shutdown().await;
        return;
    }
    println!(
        "LMTP ingest (lmtp.example.test → Postfix lmtp:inet:{LMTP_LISTEN}), {LMTP_N} mails sent one at a time, {} ms apart:",
        LMTP_SPACING.as_millis()
    );
    let sent = spaced(smtp, &mut chat, "lmtp", LMTP_N, LMTP_SPACING).await;
    let ids: Vec<&str> = sent.iter().map(|s| s.id.as_str()).collect();
    wait_commits(&run, &ids, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    report(&run, &sent, None);

    println!(
        "LMTP ingest, {LMTP_BURST} mails back to back (each send waits only for Postfix's 250):"
    );
    run.failures.lock().unwrap().clear();
    let sent = spaced(smtp, &mut chat, "burst", LMTP_BURST, Duration::ZERO).await;
    let ids: Vec<&str> = sent.iter().map(|s| s.id.as_str()).collect();
    wait_commits(&run, &ids, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    report(&run, &sent, None);
    let commits = run.commits.lock().unwrap().clone();
    let last = sent
        .iter()
        .filter_map(|s| commits.get(&s.id))
        .max()
        .copied();
    if let (Some(first), Some(last)) = (sent.first(), last) {
        let secs = last.duration_since(first.t0).as_secs_f64();
        let done = sent.iter().filter(|s| commits.contains_key(&s.id)).count();
        println!(
            "  burst throughput: {done} commits in {secs:.2} s = {:.0} mails/s (submission: {:.0} mails/s)",
            done as f64 / secs,
            sent.len() as f64
                / sent
                    .last()
                    .map_or(1.0, |l| l.submitted.duration_since(first.t0).as_secs_f64())
        );
    }
    submit_client_comparison(smtp, &mut chat).await;
    run.shutdown().await;
}

/// The submission time of the same mail through coi-side's `SmtpSender` (lettre) and through the
/// raw client. lettre writes the message and the final `.` in two writes on a socket without
/// TCP_NODELAY: Nagle holds the dot until the server's delayed ACK (~40 ms on Linux).
async fn submit_client_comparison(smtp: &mut RawSmtp, chat: &mut Chat) {
    const N: usize = 20;
    println!("SMTP submission time of the same mails, {N} each, alternating (port 25):");
    let lettre = SmtpSender::new(SmtpConfig::new("127.0.0.1", 25, Security::Plain)).expect("smtp");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..=N {
        let (_, raw) = chat.next("cmp-lettre");
        let t = Instant::now();
        lettre
            .send(FROM, std::slice::from_ref(&chat.puppet), raw.as_bytes())
            .await
            .expect("SMTP send");
        let lettre_ms = ms(t, Instant::now());
        let (_, raw) = chat.next("cmp-raw");
        let t = Instant::now();
        smtp.send(FROM, &chat.puppet, &raw)
            .await
            .expect("SMTP send");
        // The first round opens lettre's pooled connection: not counted.
        if i > 0 {
            a.push(lettre_ms);
            b.push(ms(t, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    row("coi_side SmtpSender (lettre 0.11)", a);
    row("raw client (TCP_NODELAY, 1 write)", b);
    lettre.shutdown().await;
}

fn main() {
    if std::env::var("COI_TEST_STACK").as_deref() != Ok("1") {
        println!(
            "e2e bench skipped: COI_TEST_STACK is not set (bash deploy/stack.sh up --no-bridge; eval \"$(bash deploy/stack.sh env)\")"
        );
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut smtp = RawSmtp::connect().await.expect("SMTP 127.0.0.1:25");
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let only = std::env::var("E2E_ONLY").unwrap_or_default();
        if only != "lmtp" {
            imap_phase(&mut smtp, &tag).await;
        }
        if only != "imap" {
            lmtp_phase(&mut smtp, &tag).await;
        }
    });
}
