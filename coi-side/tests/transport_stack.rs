//! Email transports against the real loopback stack (Postfix + Dovecot from `deploy/stack.sh`).
//!
//! Skipped unless `COI_TEST_STACK=1` (`eval "$(deploy/stack.sh env)"`). Hosts, ports and passwords
//! come from the `stack.sh env` variables, with the stack's defaults.
//!
//! Every test here takes the bridge-mailbox lock: an in-process mutex plus the lock directory
//! [`LOCK_DIR`] shared with other test binaries (one of the tests restarts Dovecot). The tests
//! never delete mail; they start from the mailbox's current highest UID and only look at their
//! own messages (unique Message-IDs), so leftover or concurrent mail does not disturb them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coi_side::transport::{
    Checkpoint, CheckpointStore, ImapConfig, InboundMail, InboundSink, InboundSource, IngestError,
    Security, SendError, SmtpConfig, SmtpSender, run_ingest,
};
use futures::TryStreamExt as _;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type BoxError = Box<dyn std::error::Error>;

/// Cross-process lock for tests that use the bridge@ mailbox or restart the mail servers.
const LOCK_DIR: &str = "/tmp/coi-bridge-tests.bridge-mailbox.lock";

// ------------------------------------------------------------------ environment

#[derive(Clone, Debug)]
struct Stack {
    host: String,
    smtp_port: u16,
    submission_port: u16,
    submissions_port: u16,
    imap_port: u16,
    imaps_port: u16,
    mail_domain: String,
    bridge_domain: String,
    alice_password: String,
    bridge_user: String,
    bridge_password: String,
    lmtp_mode: bool,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn port(name: &str, default: u16) -> u16 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The stack, or `None` (with the reason printed) when the test must be skipped.
fn stack() -> Option<Stack> {
    if std::env::var("COI_TEST_STACK").as_deref() != Ok("1") {
        eprintln!("skipping: COI_TEST_STACK not set");
        return None;
    }
    let mail_domain = var("COI_MAIL_DOMAIN", "example.test");
    Some(Stack {
        host: var("COI_MAIL_HOST", "127.0.0.1"),
        smtp_port: port("COI_SMTP_PORT", 25),
        submission_port: port("COI_SUBMISSION_PORT", 587),
        submissions_port: port("COI_SUBMISSIONS_PORT", 465),
        imap_port: port("COI_IMAP_PORT", 143),
        imaps_port: port("COI_IMAPS_PORT", 993),
        bridge_domain: var("COI_BRIDGE_DOMAIN", "bridge.example.test"),
        alice_password: var("COI_ALICE_PASSWORD", "alicepass"),
        bridge_user: var("COI_BRIDGE_ADDR", &format!("bridge@{mail_domain}")),
        bridge_password: var("COI_BRIDGE_PASSWORD", "bridgepass"),
        lmtp_mode: var("COI_LMTP", "0") == "1",
        mail_domain,
    })
}

/// `stack()` for tests that need puppet mail in the bridge mailbox.
fn imap_stack() -> Option<Stack> {
    let s = stack()?;
    if s.lmtp_mode {
        eprintln!(
            "skipping: COI_LMTP=1 (puppet mail goes to an LMTP listener, not the bridge INBOX)"
        );
        return None;
    }
    Some(s)
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

// ------------------------------------------------------------------ lock

static IN_PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct MailboxLock {
    _guard: tokio::sync::MutexGuard<'static, ()>,
    dir: PathBuf,
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn lock_mailbox() -> Result<MailboxLock, BoxError> {
    let guard = IN_PROCESS.lock().await;
    let dir = PathBuf::from(LOCK_DIR);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::write(dir.join("pid"), std::process::id().to_string())?;
                return Ok(MailboxLock { _guard: guard, dir });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if lock_is_stale(&dir) {
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                if Instant::now() > deadline {
                    return Err(format!("{LOCK_DIR} held for too long").into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The holder died (pid gone), or the lock is older than 10 minutes.
fn lock_is_stale(dir: &std::path::Path) -> bool {
    if let Ok(pid) = std::fs::read_to_string(dir.join("pid")) {
        let pid = pid.trim();
        if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
            return true;
        }
    }
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(600))
}

// ------------------------------------------------------------------ sink and store

#[derive(Clone, Debug)]
struct Record {
    uid: u32,
    uidvalidity: u32,
    mailbox: String,
    message_id: String,
    raw: Vec<u8>,
    at: Instant,
    verdict: Result<(), IngestError>,
    /// The stored checkpoint when `accept` was called.
    checkpoint_then: Option<Checkpoint>,
}

#[derive(Default)]
struct MemCheckpoints {
    map: Mutex<HashMap<String, Checkpoint>>,
    saves: Mutex<Vec<Checkpoint>>,
}

impl MemCheckpoints {
    fn get(&self, mailbox: &str) -> Option<Checkpoint> {
        self.map.lock().ok().and_then(|m| m.get(mailbox).copied())
    }

    fn set(&self, mailbox: &str, cp: Checkpoint) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(mailbox.to_owned(), cp);
        }
    }

    fn saves(&self) -> Vec<Checkpoint> {
        self.saves.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl CheckpointStore for MemCheckpoints {
    async fn load(&self, mailbox: &str) -> Result<Option<Checkpoint>, IngestError> {
        Ok(self.get(mailbox))
    }

    async fn save(&self, mailbox: &str, cp: Checkpoint) -> Result<(), IngestError> {
        self.set(mailbox, cp);
        if let Ok(mut s) = self.saves.lock() {
            s.push(cp);
        }
        Ok(())
    }
}

/// Records every mail; verdicts can be scripted per Message-ID (default `Ok`).
struct RecordingSink {
    log: Mutex<Vec<Record>>,
    script: Mutex<HashMap<String, VecDeque<Result<(), IngestError>>>>,
    store: Arc<MemCheckpoints>,
}

impl RecordingSink {
    fn new(store: Arc<MemCheckpoints>) -> Arc<Self> {
        Arc::new(Self {
            log: Mutex::new(Vec::new()),
            script: Mutex::new(HashMap::new()),
            store,
        })
    }

    fn script(&self, message_id: &str, verdicts: Vec<Result<(), IngestError>>) {
        if let Ok(mut s) = self.script.lock() {
            s.insert(message_id.to_owned(), verdicts.into());
        }
    }

    fn records(&self) -> Vec<Record> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Records whose Message-ID contains `tag`.
    fn ours(&self, tag: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.message_id.contains(tag))
            .collect()
    }

    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Record]) -> bool,
    ) -> Result<(), BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            if done(&self.records()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .records()
                    .iter()
                    .map(|r| format!("{}:{}", r.uid, r.message_id))
                    .collect();
                return Err(format!("timed out waiting for {what}; sink saw {seen:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait::async_trait]
impl InboundSink for RecordingSink {
    async fn accept(&self, mail: InboundMail) -> Result<(), IngestError> {
        let at = Instant::now();
        let message_id = header(&mail.raw, "message-id").unwrap_or_default();
        let verdict = self
            .script
            .lock()
            .ok()
            .and_then(|mut s| s.get_mut(&message_id).and_then(|q| q.pop_front()))
            .unwrap_or(Ok(()));
        let InboundSource::Imap {
            mailbox,
            uidvalidity,
            uid,
        } = mail.source
        else {
            return Err(IngestError::Permanent("not from IMAP".into()));
        };
        if let Ok(mut log) = self.log.lock() {
            log.push(Record {
                uid,
                uidvalidity,
                checkpoint_then: self.store.get(&mailbox),
                mailbox,
                message_id,
                raw: mail.raw,
                at,
                verdict: verdict.clone(),
            });
        }
        verdict
    }
}

/// First value of a header (unfolded), case-insensitive name.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next()?;
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}

// ------------------------------------------------------------------ helpers

fn mail(from: &str, to: &str, message_id: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\
         Date: Fri, 27 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Plain SMTP on port 25 (no auth; loopback is in mynetworks).
fn port25(s: &Stack) -> Result<SmtpSender, SendError> {
    let mut cfg = SmtpConfig::new(&s.host, s.smtp_port, Security::Plain);
    cfg.timeout = Duration::from_secs(10);
    SmtpSender::new(cfg)
}

/// Sends one puppet mail; returns its Message-ID and when the send returned.
async fn send_puppet(
    s: &Stack,
    smtp: &SmtpSender,
    tag: &str,
    n: usize,
) -> Result<(String, Instant), BoxError> {
    let puppet = format!("p{n}-{tag}@{}", s.bridge_domain);
    let message_id = format!("<{tag}.{n}@coi-test.{}>", s.mail_domain);
    let raw = mail(
        &format!("alice@{}", s.mail_domain),
        &puppet,
        &message_id,
        &format!("ingest {tag} #{n}"),
        &format!("message {n} of run {tag}"),
    );
    smtp.send(&format!("alice@{}", s.mail_domain), &[puppet], &raw)
        .await?;
    Ok((message_id, Instant::now()))
}

type ImapSession = async_imap::Session<TcpStream>;

async fn imap_login(s: &Stack, user: &str, password: &str) -> Result<ImapSession, BoxError> {
    let tcp = TcpStream::connect((s.host.as_str(), s.imap_port)).await?;
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await?.ok_or("no IMAP greeting")?;
    let session = client.login(user, password).await.map_err(|(e, _)| e)?;
    Ok(session)
}

/// UIDVALIDITY and highest used UID of the bridge INBOX (a checkpoint "at the end").
async fn bridge_inbox_top(s: &Stack) -> Result<Checkpoint, BoxError> {
    let mut session = imap_login(s, &s.bridge_user, &s.bridge_password).await?;
    let mbox = session.select("INBOX").await?;
    let _ = session.logout().await;
    Ok(Checkpoint {
        uidvalidity: mbox.uid_validity.ok_or("no UIDVALIDITY")?,
        last_uid: mbox.uid_next.ok_or("no UIDNEXT")?.saturating_sub(1),
    })
}

fn ingest_config(s: &Stack, security: Security) -> ImapConfig {
    let port = if security == Security::Tls {
        s.imaps_port
    } else {
        s.imap_port
    };
    let mut cfg = ImapConfig::new(&s.host, port, security, &s.bridge_user, &s.bridge_password);
    cfg.accept_invalid_certs = true;
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.command_timeout = Duration::from_secs(10);
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_secs(1);
    cfg
}

struct Ingest {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), coi_side::transport::ImapError>>,
}

impl Ingest {
    fn start(cfg: ImapConfig, sink: Arc<RecordingSink>, store: Arc<MemCheckpoints>) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_ingest(cfg, sink, store, async move {
            let _ = rx.await;
        }));
        Self {
            stop: Some(tx),
            task,
        }
    }

    /// Requests shutdown; returns how long `run_ingest` took to return.
    async fn stop(mut self) -> Result<Duration, BoxError> {
        let t = Instant::now();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task).await???;
        Ok(t.elapsed())
    }
}

fn port_open(s: &Stack, port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(
            s.host
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            port,
        ),
        Duration::from_millis(200),
    )
    .is_ok()
}

async fn wait_port(s: &Stack, port: u16, open: bool, limit: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    while port_open(s, port) != open {
        if Instant::now() > deadline {
            return Err(format!("port {port} did not become open={open}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<(), BoxError> {
    let status = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("{cmd} {args:?} failed: {status}").into());
    }
    Ok(())
}

/// Makes sure Dovecot runs again when a test that stopped it ends (even by panic).
struct DovecotGuard(Stack);

impl Drop for DovecotGuard {
    fn drop(&mut self) {
        if !port_open(&self.0, self.0.imap_port) {
            let _ = run("dovecot", &[]);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ------------------------------------------------------------------ (a) SMTP

#[tokio::test]
async fn smtp_sender_submits_and_classifies_errors() -> TestResult {
    let Some(s) = stack() else { return Ok(()) };
    let _lock = lock_mailbox().await?;
    let alice = format!("alice@{}", s.mail_domain);
    let tag = run_id();

    let mut sub = SmtpConfig::new(&s.host, s.submission_port, Security::StartTls);
    sub.accept_invalid_certs = true;
    sub.user = Some(alice.clone());
    sub.password = Some(s.alice_password.clone());
    sub.timeout = Duration::from_secs(10);
    let mut smtps = sub.clone();
    smtps.port = s.submissions_port;
    smtps.security = Security::Tls;
    let mut plain = SmtpConfig::new(&s.host, s.smtp_port, Security::Plain);
    plain.timeout = Duration::from_secs(10);

    // One mail per way in, all to alice; read back over IMAP by Message-ID.
    let mut sent = Vec::new();
    for (name, cfg) in [
        ("587-starttls-auth", sub.clone()),
        ("465-tls-auth", smtps.clone()),
        ("25-plain", plain),
    ] {
        let sender = SmtpSender::new(cfg)?;
        let message_id = format!("<smtp-{name}-{tag}@coi-test.{}>", s.mail_domain);
        let body = format!("smtp test {name} {tag}");
        let t = Instant::now();
        sender
            .send(
                &alice,
                std::slice::from_ref(&alice),
                &mail(&alice, &alice, &message_id, &format!("smtp {name}"), &body),
            )
            .await?;
        eprintln!("sent via {name} in {:?}", t.elapsed());
        // A second send reuses the pooled connection.
        let t = Instant::now();
        let message_id2 = format!("<smtp-{name}-2-{tag}@coi-test.{}>", s.mail_domain);
        sender
            .send(
                &alice,
                std::slice::from_ref(&alice),
                &mail(&alice, &alice, &message_id2, "again", &body),
            )
            .await?;
        eprintln!("second send via {name} (pooled) in {:?}", t.elapsed());
        sender.shutdown().await;
        sent.push((message_id, body));
        sent.push((message_id2, format!("smtp test {name} {tag}")));
    }

    let mut imap = imap_login(&s, &alice, &s.alice_password).await?;
    imap.select("INBOX").await?;
    for (message_id, body) in &sent {
        let deadline = Instant::now() + Duration::from_secs(10);
        let uid = loop {
            let uids = imap
                .uid_search(format!("HEADER Message-ID \"{message_id}\""))
                .await?;
            if let Some(uid) = uids.into_iter().max() {
                break uid;
            }
            if Instant::now() > deadline {
                return Err(format!("{message_id} never reached alice's INBOX").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let fetched: Vec<_> = imap
            .uid_fetch(uid.to_string(), "BODY.PEEK[]")
            .await?
            .try_collect()
            .await?;
        let raw = fetched.first().and_then(|f| f.body()).ok_or("no body")?;
        let text = String::from_utf8_lossy(raw);
        assert!(text.contains(body.as_str()), "{text}");
    }
    let _ = imap.logout().await;

    // 5xx at RCPT: permanent, with the server's code and text.
    let sender = SmtpSender::new(sub.clone())?;
    let nobody = format!("nobody@{}", s.mail_domain);
    let err = sender
        .send(
            &alice,
            std::slice::from_ref(&nobody),
            &mail(&alice, &nobody, "<x@y>", "x", "x"),
        )
        .await
        .err()
        .ok_or("mail to nobody was accepted")?;
    eprintln!("unknown recipient: {err}");
    match &err {
        SendError::Permanent { code, message } => {
            assert_eq!(*code, Some(550));
            assert!(message.contains("5.1.1"), "{message}");
        }
        other => return Err(format!("expected permanent, got {other:?}").into()),
    }
    assert!(err.is_permanent());
    // The pool survives a refused transaction.
    sender
        .send(
            &alice,
            std::slice::from_ref(&alice),
            &mail(
                &alice,
                &alice,
                &format!("<after-{tag}@coi-test>"),
                "after",
                "after",
            ),
        )
        .await?;

    // Wrong password: 535 → permanent.
    let mut bad = sub.clone();
    bad.password = Some("wrong".into());
    let err = SmtpSender::new(bad)?
        .send(
            &alice,
            std::slice::from_ref(&alice),
            &mail(&alice, &alice, "<x@y>", "x", "x"),
        )
        .await
        .err()
        .ok_or("wrong password accepted")?;
    eprintln!("wrong password: {err}");
    assert!(
        matches!(
            err,
            SendError::Permanent {
                code: Some(535),
                ..
            }
        ),
        "{err:?}"
    );

    // Certificate checks on (self-signed server): TLS error → transient.
    let mut strict = smtps.clone();
    strict.accept_invalid_certs = false;
    let err = SmtpSender::new(strict)?
        .send(
            &alice,
            std::slice::from_ref(&alice),
            &mail(&alice, &alice, "<x@y>", "x", "x"),
        )
        .await
        .err()
        .ok_or("self-signed cert accepted with checks on")?;
    eprintln!("strict TLS: {err}");
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    Ok(())
}

// ------------------------------------------------------------------ (b) ingest

#[tokio::test]
async fn imap_ingest_delivers_in_uid_order_with_idle() -> TestResult {
    let Some(s) = imap_stack() else { return Ok(()) };
    let _lock = lock_mailbox().await?;
    let tag = run_id();
    let top = bridge_inbox_top(&s).await?;
    let store = Arc::new(MemCheckpoints::default());
    store.set("INBOX", top);
    let sink = RecordingSink::new(store.clone());
    let ingest = Ingest::start(
        ingest_config(&s, Security::StartTls),
        sink.clone(),
        store.clone(),
    );
    let smtp = port25(&s)?;

    // Warm-up: one mail, proves the session is up and idling.
    send_puppet(&s, &smtp, &tag, 0).await?;
    sink.wait_for("warm-up mail", Duration::from_secs(10), |r| {
        r.iter()
            .any(|x| x.message_id.contains(&format!("{tag}.0@")))
    })
    .await?;

    // 20 mails back to back.
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for n in 1..=20 {
        ids.push(send_puppet(&s, &smtp, &tag, n).await?.0);
    }
    let sent_in = t0.elapsed();
    sink.wait_for("20 mails", Duration::from_secs(20), |r| {
        ids.iter().all(|id| r.iter().any(|x| &x.message_id == id))
    })
    .await?;
    eprintln!(
        "20 mails: sent in {sent_in:?}, all at the sink {:?} after the first send",
        t0.elapsed()
    );

    // Latency of isolated mails (send returned → sink.accept called).
    let mut lat = Vec::new();
    for n in 21..=25 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (id, sent_at) = send_puppet(&s, &smtp, &tag, n).await?;
        sink.wait_for("isolated mail", Duration::from_secs(10), |r| {
            r.iter().any(|x| x.message_id == id)
        })
        .await?;
        let at = sink
            .records()
            .iter()
            .find(|x| x.message_id == id)
            .map(|x| x.at)
            .ok_or("record vanished")?;
        lat.push(at.saturating_duration_since(sent_at));
    }
    lat.sort();
    eprintln!(
        "IDLE latency (SMTP 250 -> sink.accept), 5 isolated mails: min {:?} median {:?} max {:?}",
        lat[0],
        percentile(&lat, 0.5),
        lat[lat.len() - 1]
    );

    let took = ingest.stop().await?;
    eprintln!("run_ingest returned {took:?} after the shutdown signal (from IDLE)");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");

    let all = sink.records();
    let ours = sink.ours(&tag);
    assert_eq!(ours.len(), 26, "each mail exactly once");
    // Sink order is UID order, every UID above the starting checkpoint, no repeats.
    assert!(
        all.windows(2).all(|w| w[0].uid < w[1].uid),
        "not in UID order"
    );
    assert!(all.iter().all(|r| r.uid > top.last_uid));
    assert!(
        all.iter()
            .all(|r| r.uidvalidity == top.uidvalidity && r.mailbox == "INBOX")
    );
    let delivered_to = ours
        .iter()
        .filter_map(|r| header(&r.raw, "delivered-to"))
        .filter(|d| d.ends_with(&format!("-{tag}@{}", s.bridge_domain)))
        .count();
    assert_eq!(delivered_to, 26, "Delivered-To names the puppet");
    let order: Vec<String> = ours.iter().map(|r| r.message_id.clone()).collect();
    let sent: Vec<String> = (0..=25)
        .map(|n| format!("<{tag}.{n}@coi-test.{}>", s.mail_domain))
        .collect();
    eprintln!("UIDs followed the send order: {}", order == sent);
    // The checkpoint ends at the last delivered UID.
    let last = all.last().map(|r| r.uid).ok_or("nothing delivered")?;
    assert_eq!(
        store.get("INBOX"),
        Some(Checkpoint {
            uidvalidity: top.uidvalidity,
            last_uid: last
        })
    );
    Ok(())
}

// ------------------------------------------------------------------ (c) server restart

#[tokio::test]
async fn imap_ingest_survives_dovecot_restart_and_resumes_from_checkpoint() -> TestResult {
    let Some(s) = imap_stack() else { return Ok(()) };
    let _lock = lock_mailbox().await?;
    let _dovecot = DovecotGuard(s.clone());
    let tag = run_id();
    let top = bridge_inbox_top(&s).await?;
    let store = Arc::new(MemCheckpoints::default());
    store.set("INBOX", top);
    let sink = RecordingSink::new(store.clone());
    let ingest = Ingest::start(
        ingest_config(&s, Security::Tls),
        sink.clone(),
        store.clone(),
    );
    let smtp = port25(&s)?;

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(send_puppet(&s, &smtp, &tag, n).await?.0);
    }
    sink.wait_for("3 mails before the restart", Duration::from_secs(10), |r| {
        ids.iter().all(|id| r.iter().any(|x| &x.message_id == id))
    })
    .await?;

    // Stop Dovecot (as root), send while it is down, start it again.
    let t_stop = Instant::now();
    run("doveadm", &["stop"])?;
    wait_port(&s, s.imap_port, false, Duration::from_secs(10)).await?;
    eprintln!("dovecot down after {:?}", t_stop.elapsed());
    for n in 3..6 {
        ids.push(send_puppet(&s, &smtp, &tag, n).await?.0);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // let the ingest fail a few times
    run("dovecot", &[])?;
    wait_port(&s, s.imap_port, true, Duration::from_secs(10)).await?;
    wait_port(&s, s.imaps_port, true, Duration::from_secs(10)).await?;
    let t_up = Instant::now();
    eprintln!("dovecot up again after {:?}", t_stop.elapsed());
    // Postfix deferred the mail sent meanwhile; ask it to retry now.
    run("postqueue", &["-f"])?;
    for n in 6..9 {
        ids.push(send_puppet(&s, &smtp, &tag, n).await?.0);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = sink
            .wait_for("9 mails across the restart", Duration::from_secs(3), |r| {
                ids.iter().all(|id| r.iter().any(|x| &x.message_id == id))
            })
            .await;
        match r {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => run("postqueue", &["-f"])?,
        }
    }
    eprintln!(
        "all 9 mails at the sink {:?} after dovecot came back",
        t_up.elapsed()
    );
    ingest.stop().await?;

    let ours = sink.ours(&tag);
    let mut seen = HashSet::new();
    assert!(
        ours.iter().all(|r| seen.insert(r.message_id.clone())),
        "a mail was delivered twice"
    );
    let all = sink.records();
    assert!(
        all.windows(2).all(|w| w[0].uid < w[1].uid),
        "not in UID order"
    );
    let cp = store.get("INBOX").ok_or("no checkpoint")?;
    assert_eq!(
        cp.uidvalidity, top.uidvalidity,
        "UIDVALIDITY survived the restart"
    );
    assert_eq!(Some(cp.last_uid), all.last().map(|r| r.uid));

    // A new run_ingest with the same store: nothing at or below the checkpoint comes again.
    let sink2 = RecordingSink::new(store.clone());
    let ingest2 = Ingest::start(
        ingest_config(&s, Security::Tls),
        sink2.clone(),
        store.clone(),
    );
    let (fresh, _) = send_puppet(&s, &smtp, &tag, 99).await?;
    sink2
        .wait_for(
            "the mail after the restart of run_ingest",
            Duration::from_secs(10),
            |r| r.iter().any(|x| x.message_id == fresh),
        )
        .await?;
    ingest2.stop().await?;
    let again = sink2.records();
    assert!(
        again.iter().all(|r| r.uid > cp.last_uid),
        "re-delivered a checkpointed UID"
    );
    assert_eq!(sink2.ours(&tag).len(), 1);
    Ok(())
}

// ------------------------------------------------------------------ (d) sink verdicts

#[tokio::test]
async fn imap_ingest_retries_transient_and_skips_permanent() -> TestResult {
    let Some(s) = imap_stack() else { return Ok(()) };
    let _lock = lock_mailbox().await?;
    let tag = run_id();
    let top = bridge_inbox_top(&s).await?;
    let store = Arc::new(MemCheckpoints::default());
    store.set("INBOX", top);
    let sink = RecordingSink::new(store.clone());
    let smtp = port25(&s)?;
    let id = |n: usize| format!("<{tag}.{n}@coi-test.{}>", s.mail_domain);
    let (a, b, c) = (id(0), id(1), id(2));
    sink.script(&a, vec![Err(IngestError::Transient("db busy".into()))]);
    sink.script(
        &c,
        vec![
            Err(IngestError::Permanent("unparsable".into())),
            Err(IngestError::Permanent("unparsable".into())),
        ],
    );
    let mut cfg = ingest_config(&s, Security::Plain);
    cfg.backoff_min = Duration::from_millis(200);
    let ingest = Ingest::start(cfg, sink.clone(), store.clone());

    for n in 0..3 {
        send_puppet(&s, &smtp, &tag, n).await?;
    }
    sink.wait_for("A twice, B and C", Duration::from_secs(15), |r| {
        let count = |m: &str| r.iter().filter(|x| x.message_id == m).count();
        count(&a) >= 2 && count(&b) >= 1 && count(&c) >= 1
    })
    .await?;
    // Give a wrongly re-offered C time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ingest.stop().await?;

    let ours = sink.ours(&tag);
    let calls = |m: &str| {
        ours.iter()
            .filter(|x| x.message_id == m)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (ca, cb, cc) = (calls(&a), calls(&b), calls(&c));
    assert_eq!(ca.len(), 2, "A: transient once, then accepted");
    assert!(matches!(ca[0].verdict, Err(IngestError::Transient(_))));
    assert_eq!(ca[1].verdict, Ok(()));
    assert_eq!(ca[0].uid, ca[1].uid, "the same UID came again");
    // The checkpoint did not move between the transient failure and the retry.
    assert_eq!(ca[0].checkpoint_then, ca[1].checkpoint_then);
    assert!(
        ca[1]
            .checkpoint_then
            .is_some_and(|cp| cp.last_uid < ca[0].uid)
    );
    assert_eq!(cb.len(), 1);
    assert_eq!(
        cc.len(),
        1,
        "C was rejected permanently and not offered again"
    );
    let saves = store.saves();
    for uid in [ca[0].uid, cb[0].uid, cc[0].uid] {
        assert_eq!(
            saves.iter().filter(|cp| cp.last_uid == uid).count(),
            1,
            "UID {uid} checkpointed once"
        );
    }
    let max = [ca[0].uid, cb[0].uid, cc[0].uid]
        .into_iter()
        .max()
        .unwrap_or(0);
    assert!(
        store.get("INBOX").is_some_and(|cp| cp.last_uid >= max),
        "checkpoint passed the permanent reject"
    );
    eprintln!(
        "transient retry came {:?} after the failure",
        ca[1].at.saturating_duration_since(ca[0].at)
    );
    Ok(())
}

// ------------------------------------------------------------------ (e) re-IDLE

#[tokio::test]
async fn imap_ingest_reidles_and_keeps_receiving() -> TestResult {
    let Some(s) = imap_stack() else { return Ok(()) };
    let _lock = lock_mailbox().await?;
    let tag = run_id();
    let top = bridge_inbox_top(&s).await?;
    let store = Arc::new(MemCheckpoints::default());
    store.set("INBOX", top);
    let sink = RecordingSink::new(store.clone());
    let mut cfg = ingest_config(&s, Security::StartTls);
    cfg.idle_timeout = Duration::from_millis(700);
    let ingest = Ingest::start(cfg, sink.clone(), store.clone());
    let smtp = port25(&s)?;

    let (first, _) = send_puppet(&s, &smtp, &tag, 0).await?;
    sink.wait_for("first mail", Duration::from_secs(10), |r| {
        r.iter().any(|x| x.message_id == first)
    })
    .await?;
    // Several IDLE timeouts (DONE, list, IDLE again) pass; the session must stay usable.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (second, sent_at) = send_puppet(&s, &smtp, &tag, 1).await?;
    sink.wait_for("mail after re-IDLEs", Duration::from_secs(10), |r| {
        r.iter().any(|x| x.message_id == second)
    })
    .await?;
    let at = sink
        .records()
        .iter()
        .find(|x| x.message_id == second)
        .map(|x| x.at)
        .ok_or("record vanished")?;
    eprintln!(
        "after ~4 re-IDLEs: latency {:?}",
        at.saturating_duration_since(sent_at)
    );
    ingest.stop().await?;
    assert_eq!(sink.ours(&tag).len(), 2, "each mail once");
    Ok(())
}

/// First start on a mailbox (no checkpoint) with `fetch_existing = false`: the mail already there
/// is left alone, the checkpoint is set to the mailbox's top at once, and new mail flows.
#[tokio::test]
async fn imap_first_start_can_begin_with_new_mail() -> TestResult {
    let Some(s) = imap_stack() else { return Ok(()) };
    let _lock = lock_mailbox().await?;
    let tag = run_id();
    let smtp = port25(&s)?;
    // A mail that is there before the bridge ever ran.
    let before = bridge_inbox_top(&s).await?;
    let (old_id, _) = send_puppet(&s, &smtp, &tag, 0).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let top = loop {
        let top = bridge_inbox_top(&s).await?;
        if top.last_uid > before.last_uid {
            break top;
        }
        if Instant::now() > deadline {
            return Err("the first mail did not reach the mailbox".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let store = Arc::new(MemCheckpoints::default());
    let sink = RecordingSink::new(store.clone());
    let mut cfg = ingest_config(&s, Security::StartTls);
    cfg.fetch_existing = false;
    let ingest = Ingest::start(cfg, sink.clone(), store.clone());
    // The session is up once it has written its first checkpoint.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.saves().is_empty() {
        if Instant::now() > deadline {
            return Err("no checkpoint written at start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (new_id, _) = send_puppet(&s, &smtp, &tag, 1).await?;
    sink.wait_for("the new mail", Duration::from_secs(15), |r| {
        r.iter().any(|x| x.message_id == new_id)
    })
    .await?;
    ingest.stop().await?;
    let ours = sink.ours(&tag);
    assert_eq!(
        ours.len(),
        1,
        "only the new mail: {:?}",
        ours.iter().map(|r| &r.message_id).collect::<Vec<_>>()
    );
    assert!(ours.iter().all(|r| r.message_id != old_id));
    assert!(
        store
            .saves()
            .first()
            .is_some_and(|cp| cp.last_uid >= top.last_uid),
        "the first checkpoint is the top of the mailbox at start: {:?}",
        store.saves()
    );
    Ok(())
}
