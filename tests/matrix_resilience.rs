//! The Matrix side survives a homeserver restart and a bridge crash: nothing lost, nothing doubled.
//! Real Synapse on loopback, matrix-nio as alice, a fake side standing in for email.
//!
//! Gated: runs only with `COI_TEST_SYNAPSE=1` (it starts Synapse with `deploy/synapse.sh up`, and
//! restarts it with `down` / `up`).
//!
//!     COI_TEST_SYNAPSE=1 cargo test --test matrix_resilience -- --nocapture
//!
//! A bridge "process" here is its own tokio runtime (store pool, drainers, listener, Matrix side);
//! a crash is `Runtime::shutdown_background`, which drops every task of that runtime at its next
//! await point without running any more of its code, like SIGKILL does to the process. Only what
//! was committed to the SQLite file survives; the next instance opens the same file. What a real
//! SIGKILL would add (the OS closing the sockets and file handles) the runtime's drop does too.
//! The email stand-in (`FakeSide`) outlives the crash because it stands for the remote mail
//! server, not for bridge memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use bridge_core::ir::{
    ChatLocator, EventKind, MessageContent, NewChat, Part, RemoteEvent, UserRef,
};
use bridge_core::testing::FakeSide;
use bridge_core::{
    Bridge, Capabilities, ChatId, Delivered, IngestOutcome, OutboxItem, RetryPolicy, Router, Side,
    SideError, SideName, Store,
};
use matrix_side::{MatrixSettings, MatrixSide};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod matrix_support;

use matrix_support::{ListenerLock, Peer, repo, settings, synapse_env};

fn gated() -> bool {
    if std::env::var("COI_TEST_SYNAPSE").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped: set COI_TEST_SYNAPSE=1 to run against a real Synapse (deploy/synapse.sh up)"
    );
    false
}

async fn synapse(cmd: &str) {
    let t = Instant::now();
    let st = tokio::process::Command::new(repo().join("deploy/synapse.sh"))
        .arg(cmd)
        .status()
        .await
        .unwrap();
    assert!(st.success(), "deploy/synapse.sh {cmd} failed");
    eprintln!("synapse.sh {cmd}: {:?}", t.elapsed());
}

/// Simulates the crash point between a Matrix send and its outbox completion: the inner side
/// delivers (the event is in the room), then this never returns, so the row stays pending.
struct HangAfterSend {
    inner: Arc<MatrixSide>,
    body: String,
    hit: tokio::sync::mpsc::UnboundedSender<String>,
}

#[async_trait]
impl Side for HangAfterSend {
    fn name(&self) -> SideName {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
        let out = self.inner.deliver(item).await?;
        if matches!(&item.event, EventKind::Message(c) if c.text() == self.body) {
            let event = out.links.first().map(|l| l.1.clone()).unwrap_or_default();
            let _ = self.hit.send(event);
            std::future::pending::<()>().await;
        }
        Ok(out)
    }
}

/// One bridge "process": its own runtime with the store pool, the drainers and the listener.
struct Instance {
    rt: Option<tokio::runtime::Runtime>,
    store: Store,
    router: Router,
}

impl Instance {
    async fn start(
        settings: &MatrixSettings,
        db: &str,
        email: Arc<FakeSide>,
        hang: Option<(String, tokio::sync::mpsc::UnboundedSender<String>)>,
    ) -> Instance {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let settings = settings.clone();
        let db = db.to_owned();
        let t = Instant::now();
        let (store, router) = rt
            .spawn(async move {
                let store = Store::open(&db, 4).await.unwrap();
                let matrix = Arc::new(MatrixSide::new(&settings, store.clone()).unwrap());
                let side: Arc<dyn Side> = match hang {
                    Some((body, hit)) => Arc::new(HangAfterSend {
                        inner: matrix.clone(),
                        body,
                        hit,
                    }),
                    None => matrix.clone(),
                };
                let bridge = Arc::new(
                    Bridge::builder(store.clone())
                        .retry(RetryPolicy {
                            initial: Duration::from_millis(200),
                            max: Duration::from_secs(1),
                            max_attempts: 500,
                        })
                        .side(side)
                        .side(email)
                        .build(),
                );
                // The previous instance's socket may linger for a moment after its runtime went.
                let listener = {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    loop {
                        match tokio::net::TcpListener::bind(settings.listen).await {
                            Ok(l) => break l,
                            Err(e) if Instant::now() < deadline => {
                                eprintln!("(bind {}: {e}; retrying)", settings.listen);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => panic!("bind {}: {e}", settings.listen),
                        }
                    }
                };
                let state = matrix_side::ListenerState::new(
                    &settings.hs_token,
                    bridge.router(),
                    settings.namer.clone(),
                );
                tokio::spawn(matrix_side::listener::serve(
                    listener,
                    state,
                    std::future::pending(),
                ));
                // The ping also makes Synapse flush its backlog of transactions at once.
                matrix_side::startup(matrix.client(), &settings, 20)
                    .await
                    .unwrap();
                tokio::spawn(bridge.clone().run(std::future::pending()));
                (store, bridge.router())
            })
            .await
            .unwrap();
        eprintln!("bridge instance up in {:?}", t.elapsed());
        Instance {
            rt: Some(rt),
            store,
            router,
        }
    }

    /// Runs a future on this instance's runtime.
    async fn on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        self.rt.as_ref().unwrap().spawn(f).await.unwrap()
    }

    async fn ingest(&self, ev: RemoteEvent) -> IngestOutcome {
        let r = self.router.clone();
        self.on(async move { r.ingest(ev).await.unwrap() }).await
    }

    async fn pending(&self, side: SideName) -> i64 {
        let s = self.store.clone();
        self.on(async move { s.outbox_count(side, "pending").await.unwrap() })
            .await
    }

    async fn failed(&self, side: SideName) -> i64 {
        let s = self.store.clone();
        self.on(async move { s.outbox_count(side, "failed").await.unwrap() })
            .await
    }

    /// Waits until the side's outbox is drained.
    async fn drained(&self, side: SideName, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.pending(side).await > 0 {
            assert!(
                Instant::now() < deadline,
                "{side} outbox not drained after {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(self.failed(side).await, 0, "no {side} row failed");
    }

    /// How many hub events of this chat carry this text.
    async fn stored(&self, chat: ChatId, text: &str) -> usize {
        let s = self.store.clone();
        let text = text.to_owned();
        self.on(async move {
            s.chat_messages(chat)
                .await
                .unwrap()
                .into_iter()
                .filter(|m| matches!(&m.event, EventKind::Message(c) if c.text() == text))
                .count()
        })
        .await
    }

    async fn room(&self, chat: ChatId) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.store.clone();
            if let Some(r) = self
                .on(async move { s.chat_link(chat, SideName::MATRIX).await.unwrap() })
                .await
            {
                return r;
            }
            assert!(Instant::now() < deadline, "no portal room");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The crash: every task of the runtime is dropped without running further.
    fn crash(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn email_event(group: &str, text: &str, alice: &UserRef) -> RemoteEvent {
    let bob = UserRef::new(SideName::EMAIL, "bob@example.org", Some("Bob Email".into()));
    RemoteEvent {
        side: SideName::EMAIL,
        remote_id: format!("<{}@example.org>", uuid::Uuid::new_v4().simple()),
        chat: ChatLocator {
            remote_chat_id: Some(group.to_owned()),
            create: Some(NewChat {
                name: format!("Resilience {group}"),
                topic: String::new(),
                members: vec![bob.clone(), alice.clone()],
                remote_chat_id: Some(group.to_owned()),
            }),
            ..ChatLocator::default()
        },
        sender: bob,
        ts_ms: bridge_core::store::now_ms(),
        kind: EventKind::Message(MessageContent {
            parts: vec![Part::text(text)],
            ..MessageContent::default()
        }),
        raw: None,
    }
}

/// The room's message events as the bot sees them (the authoritative count on the Matrix side).
async fn room_messages(env: &BTreeMap<String, String>, room: &str) -> Vec<Value> {
    let v: Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/messages",
            env["COI_MATRIX_HS_URL"],
            room.replace('!', "%21").replace(':', "%3A")
        ))
        .query(&[("dir", "b"), ("limit", "500")])
        .bearer_auth(&env["COI_MATRIX_AS_TOKEN"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .cloned()
        .collect()
}

fn count_body(events: &[Value], body: &str) -> usize {
    events
        .iter()
        .filter(|e| e["content"]["body"] == body)
        .count()
}

fn email_count(email: &FakeSide, text: &str) -> usize {
    email
        .delivered()
        .iter()
        .filter(|i| matches!(&i.event, EventKind::Message(c) if c.text() == text))
        .count()
}

async fn wait_email(email: &FakeSide, texts: &[String], secs: u64) -> Duration {
    let t = Instant::now();
    while texts.iter().any(|x| email_count(email, x) == 0) {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "email stand-in still misses some of {texts:?} after {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

/// Opens a portal with one email message and has alice join it; returns (chat, room).
async fn open_portal(
    inst: &Instance,
    alice: &mut Peer,
    group: &str,
    alice_ref: &UserRef,
) -> (ChatId, String) {
    let text = format!("{group} open");
    let IngestOutcome::Committed { chat, .. } =
        inst.ingest(email_event(group, &text, alice_ref)).await
    else {
        panic!("not committed")
    };
    let room = inst.room(chat).await;
    alice
        .wait(
            "invite",
            |v| v["event"] == "invite" && v["room"] == room.as_str(),
            30,
        )
        .await;
    alice.cmd(json!({"cmd": "join", "room": room})).await;
    alice
        .wait(
            "the portal's first message",
            |v| v["event"] == "message" && v["body"] == text.as_str(),
            30,
        )
        .await;
    (chat, room)
}

/// (a1) Synapse restarted in the middle: what email says while it is down reaches the room once,
/// with the email's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synapse_restart_queued_email_arrives_once() {
    if !gated() {
        return;
    }
    let _lock = ListenerLock::take().await;
    let t_test = Instant::now();
    synapse("up").await;
    let env = synapse_env();
    let settings = settings(&env);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/bridge.db", dir.path().display());
    let email = FakeSide::new("email");
    let inst = Instance::start(&settings, &db, email.clone(), None).await;
    let python = env["COI_PYTHON"].clone();
    let hs = env["COI_MATRIX_HS_URL"].clone();
    let mut alice = Peer::start(&python, &hs, "@alice:matrix.test", "alicepass").await;
    let alice_ref = UserRef::new(SideName::MATRIX, "@alice:matrix.test", Some("Alice".into()));
    let group = format!("restart-{}", uuid::Uuid::new_v4().simple());
    let (_chat, room) = open_portal(&inst, &mut alice, &group, &alice_ref).await;
    drop(alice);

    // Synapse goes down; email keeps talking. Kept down > 10 s so the catch-up sends use ?ts=.
    synapse("down").await;
    let down: Vec<String> = (0..5).map(|i| format!("{group} while down {i}")).collect();
    let mut sent_ts = BTreeMap::new();
    for t in &down {
        let ev = email_event(&group, t, &alice_ref);
        sent_ts.insert(t.clone(), ev.ts_ms);
        inst.ingest(ev).await;
    }
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(
        inst.pending(SideName::MATRIX).await,
        5,
        "queued while Synapse is down"
    );
    assert_eq!(inst.failed(SideName::MATRIX).await, 0);
    synapse("up").await;
    let t_up = Instant::now();
    inst.drained(SideName::MATRIX, 30).await;
    eprintln!(
        "backlog of 5 delivered {:?} after Synapse answered",
        t_up.elapsed()
    );
    // Let any retried send land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = room_messages(&env, &room).await;
    for t in &down {
        assert_eq!(count_body(&events, t), 1, "{t} once in the room");
        let e = events
            .iter()
            .find(|e| e["content"]["body"] == t.as_str())
            .unwrap();
        assert_eq!(
            e["origin_server_ts"].as_i64(),
            Some(sent_ts[t]),
            "{t}: catch-up keeps the email's time (?ts=)"
        );
    }
    for t in &down {
        assert_eq!(email_count(&email, t), 0, "no echo back to email");
    }
    inst.crash();
    eprintln!(
        "synapse restart (email -> matrix) test: {:?}",
        t_test.elapsed()
    );
}

/// (a2) Synapse restarted in the middle: what alice says right after the restart reaches email
/// once. Synapse on SQLite numbers appservice transactions from 1 again after a restart (its
/// sequence is `max(txn_id)` of the pending-transactions table, empty once all were sent), so a
/// listener that skips transaction ids it has seen before drops these messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synapse_restart_then_alice_reaches_email_once() {
    if !gated() {
        return;
    }
    let _lock = ListenerLock::take().await;
    let t_test = Instant::now();
    synapse("up").await;
    // A fresh Synapse process numbers transactions from 1: the collision below is deterministic.
    synapse("down").await;
    synapse("up").await;
    let env = synapse_env();
    let settings = settings(&env);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/bridge.db", dir.path().display());
    let email = FakeSide::new("email");
    let inst = Instance::start(&settings, &db, email.clone(), None).await;
    let python = env["COI_PYTHON"].clone();
    let hs = env["COI_MATRIX_HS_URL"].clone();
    let mut alice = Peer::start(&python, &hs, "@alice:matrix.test", "alicepass").await;
    let alice_ref = UserRef::new(SideName::MATRIX, "@alice:matrix.test", Some("Alice".into()));
    let group = format!("restart2-{}", uuid::Uuid::new_v4().simple());
    let (chat, room) = open_portal(&inst, &mut alice, &group, &alice_ref).await;
    // Enough transactions before the restart that the numbers after it are all taken.
    let before: Vec<String> = (0..15).map(|i| format!("{group} before {i}")).collect();
    for t in &before {
        alice
            .cmd(json!({"cmd": "send", "room": room, "body": t}))
            .await;
    }
    wait_email(&email, &before, 30).await;
    alice.cmd(json!({"cmd": "shutdown"})).await;
    drop(alice);

    synapse("down").await;
    synapse("up").await;
    let mut alice = Peer::start(&python, &hs, "@alice:matrix.test", "alicepass").await;
    let after: Vec<String> = (0..5)
        .map(|i| format!("{group} after restart {i}"))
        .collect();
    for t in &after {
        alice
            .cmd(json!({"cmd": "send", "room": room, "body": t}))
            .await;
    }
    let took = wait_email(&email, &after, 30).await;
    eprintln!("alice's 5 messages reached the email stand-in in {took:?}");
    // Let any retried transaction arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in before.iter().chain(&after) {
        assert_eq!(email_count(&email, t), 1, "{t} once at the email stand-in");
        assert_eq!(inst.stored(chat, t).await, 1, "{t} once in the hub");
    }
    let events = room_messages(&env, &room).await;
    for t in &after {
        assert_eq!(count_body(&events, t), 1, "{t} once in the room");
    }
    alice.cmd(json!({"cmd": "shutdown"})).await;
    inst.crash();
    eprintln!(
        "synapse restart (matrix -> email) test: {:?}",
        t_test.elapsed()
    );
}

/// (b) The bridge killed in the middle: after a Matrix send, before its outbox row completed,
/// with more rows queued behind it, and with alice speaking while it is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bridge_crash_loses_and_doubles_nothing() {
    if !gated() {
        return;
    }
    let _lock = ListenerLock::take().await;
    let t_test = Instant::now();
    synapse("up").await;
    let env = synapse_env();
    let settings = settings(&env);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/bridge.db", dir.path().display());
    let email = FakeSide::new("email");
    let group = format!("crash-{}", uuid::Uuid::new_v4().simple());
    let crash_text = format!("{group} sent then crash");
    let (hit_tx, mut hit_rx) = tokio::sync::mpsc::unbounded_channel();
    let inst = Instance::start(
        &settings,
        &db,
        email.clone(),
        Some((crash_text.clone(), hit_tx)),
    )
    .await;
    let python = env["COI_PYTHON"].clone();
    let hs = env["COI_MATRIX_HS_URL"].clone();
    let mut alice = Peer::start(&python, &hs, "@alice:matrix.test", "alicepass").await;
    let alice_ref = UserRef::new(SideName::MATRIX, "@alice:matrix.test", Some("Alice".into()));
    let (chat, room) = open_portal(&inst, &mut alice, &group, &alice_ref).await;

    // The crash point: the event is in the room, its outbox row is not completed.
    inst.ingest(email_event(&group, &crash_text, &alice_ref))
        .await;
    let behind: Vec<String> = (0..3).map(|i| format!("{group} queued {i}")).collect();
    for t in &behind {
        inst.ingest(email_event(&group, t, &alice_ref)).await;
    }
    let sent_event = tokio::time::timeout(Duration::from_secs(30), hit_rx.recv())
        .await
        .expect("the hung send")
        .unwrap();
    let seen = alice
        .wait(
            "the message sent before the crash",
            |v| v["event"] == "message" && v["body"] == crash_text.as_str(),
            30,
        )
        .await;
    assert_eq!(seen["event_id"], sent_event.as_str());
    assert_eq!(
        inst.pending(SideName::MATRIX).await,
        4,
        "crash row + 3 behind it"
    );
    inst.crash();
    eprintln!("bridge crashed with 4 Matrix rows pending, one of them already sent");

    // While the bridge is dead alice speaks: Synapse must hold and retry these transactions.
    let while_dead: Vec<String> = (0..3)
        .map(|i| format!("{group} while bridge dead {i}"))
        .collect();
    for t in &while_dead {
        alice
            .cmd(json!({"cmd": "send", "room": room, "body": t}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new bridge over the same SQLite file.
    let inst = Instance::start(&settings, &db, email.clone(), None).await;
    let t_back = Instant::now();
    inst.drained(SideName::MATRIX, 30).await;
    let took = wait_email(&email, &while_dead, 45).await;
    eprintln!(
        "after restart: Matrix outbox drained and alice's 3 messages at email within {:?}",
        took.max(t_back.elapsed())
    );
    for t in &behind {
        alice
            .wait(
                "a queued message",
                |v| v["event"] == "message" && v["body"] == t.as_str(),
                30,
            )
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let events = room_messages(&env, &room).await;
    assert_eq!(
        count_body(&events, &crash_text),
        1,
        "the resent event is the same event"
    );
    assert_eq!(alice.count(&crash_text), 1, "alice saw it once");
    let linked = {
        let s = inst.store.clone();
        inst.on(async move {
            s.message_by_link(SideName::MATRIX, &sent_event)
                .await
                .unwrap()
        })
        .await
    };
    assert!(
        linked.is_some(),
        "the redelivery linked the event sent before the crash"
    );
    for t in &behind {
        assert_eq!(count_body(&events, t), 1, "{t} once in the room");
        assert_eq!(alice.count(t), 1, "{t} once at alice");
    }
    for t in &while_dead {
        assert_eq!(email_count(&email, t), 1, "{t} once at the email stand-in");
        assert_eq!(inst.stored(chat, t).await, 1, "{t} once in the hub");
        assert_eq!(count_body(&events, t), 1, "{t} once in the room");
    }
    for t in behind.iter().chain([&crash_text]) {
        assert_eq!(inst.stored(chat, t).await, 1, "{t} once in the hub");
    }
    alice.cmd(json!({"cmd": "shutdown"})).await;
    inst.crash();
    eprintln!("bridge crash test: {:?}", t_test.elapsed());
}
