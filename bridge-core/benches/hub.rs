//! Hub throughput: `cargo bench -p bridge-core --bench hub`.
//! A plain `main` (harness = false) timed with `Instant`, no bench framework; it prints figures only.
//!
//! Runs on SQLite (a temporary file) and on PostgreSQL (a fresh database created on
//! `COI_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`, dropped afterwards;
//! skipped with a note when unreachable). Sizes: `HUB_BENCH_SCALE` (default 1.0) scales every N;
//! `HUB_BENCH_ONLY=sqlite` or `=postgres` runs one back-end.
//!
//! Sections per back-end:
//! * store: N transactions each ensuring a puppet + inserting a message + its link; then
//!   sequential `Store::message_by_link` and `Store::chat_by_link` lookups;
//! * routing: N text events from side `a` spread over K chats through `Router::ingest`, then
//!   `Bridge::drain_once` of side `b` until its outbox is empty; and the same N again with the
//!   bridge's own drainers (`Bridge::run`) running while events are ingested ("live").

#![allow(clippy::unwrap_used, clippy::expect_used)] // benches may panic

use bridge_core::ir::{EventKind, MessageContent, Part, UserRef};
use bridge_core::store::now_ms;
use bridge_core::testing::{TestBridge, text_event};
use bridge_core::{SideName, Store};
use std::time::{Duration, Instant};

const SIDE_A: SideName = SideName("a");
const SIDE_B: SideName = SideName("b");

/// Store writes per back-end.
const WRITES: usize = 1000;
/// Lookups of each kind per back-end.
const LOOKUPS: usize = 2000;
/// Chats for the store section.
const STORE_CHATS: usize = 1000;
/// Routed events per back-end (each run: batch, then live).
const ROUTED: usize = 500;
/// Chats the routed events are spread over.
const ROUTE_CHATS: usize = 20;
/// Distinct senders.
const USERS: usize = 100;

fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("HUB_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as usize).max(10)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A small deterministic pseudo-random sequence (no `rand` in the figures' path).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// A fresh store of one back-end; dropping it removes the database.
trait Fresh {
    async fn fresh(&mut self) -> Store;
}

struct Sqlite {
    dirs: Vec<tempfile::TempDir>,
}

impl Fresh for Sqlite {
    async fn fresh(&mut self) -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        self.dirs.push(dir);
        Store::open(&url, 8).await.expect("open sqlite")
    }
}

struct Postgres {
    admin: sqlx::AnyConnection,
    base: String,
    dbs: Vec<String>,
}

impl Postgres {
    async fn connect() -> Option<Postgres> {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let base = std::env::var("COI_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        match sqlx::AnyConnection::connect(&base).await {
            Ok(admin) => Some(Postgres {
                admin,
                base,
                dbs: Vec::new(),
            }),
            Err(e) => {
                println!("postgres: SKIPPED, {base} is not reachable ({e})");
                None
            }
        }
    }

    async fn drop_all(mut self) {
        for db in std::mem::take(&mut self.dbs) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&mut self.admin)
            .await;
        }
    }
}

impl Fresh for Postgres {
    async fn fresh(&mut self) -> Store {
        let db = format!("coi_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut self.admin)
            .await
            .expect("create database");
        self.dbs.push(db.clone());
        let i = self.base.rfind('/').expect("database in COI_TEST_PG_URL");
        let url = format!("{}/{db}", &self.base[..i]);
        Store::open(&url, 8).await.expect("open postgres")
    }
}

async fn store_section(name: &str, store: &Store) {
    let writes = scaled(WRITES);
    let lookups = scaled(LOOKUPS);
    let ts = now_ms();
    let mut tx = store.begin().await.expect("begin");
    let mut chats = Vec::with_capacity(STORE_CHATS);
    for k in 0..STORE_CHATS {
        let c = tx
            .create_chat(&format!("group-{k}"), &format!("Chat {k}"), "", ts / 1000)
            .await
            .expect("chat");
        tx.link_chat(c, SIDE_A, &format!("chat-{k}"))
            .await
            .expect("link chat");
        chats.push(c);
    }
    tx.commit().await.expect("commit");
    let users: Vec<UserRef> = (0..USERS)
        .map(|u| UserRef::new(SIDE_A, format!("@user{u}:a"), Some(format!("User {u}"))))
        .collect();
    let event = EventKind::Message(MessageContent {
        parts: vec![Part::text(
            "A typical short chat message of about sixty bytes.",
        )],
        ..MessageContent::default()
    });

    let start = Instant::now();
    for i in 0..writes {
        let mut tx = store.begin().await.expect("begin");
        let p = tx.ensure_puppet(&users[i % USERS]).await.expect("puppet");
        let m = tx
            .insert_message(
                &uuid::Uuid::new_v4().to_string(),
                chats[i % STORE_CHATS],
                Some(p),
                SIDE_A.as_str(),
                &event,
                None,
                ts,
            )
            .await
            .expect("message");
        tx.link_message(m, SIDE_A, &format!("msg-{i}"), "")
            .await
            .expect("link");
        tx.commit().await.expect("commit");
    }
    let d = start.elapsed();
    println!(
        "{name:<8} store  write tx (puppet+message+link): {:>8.0} tx/s   ({writes} tx, {:.2} s)",
        rate(writes, d),
        d.as_secs_f64()
    );

    let mut rng = Lcg(42);
    let start = Instant::now();
    for _ in 0..lookups {
        let id = format!("msg-{}", rng.below(writes));
        let m = store.message_by_link(SIDE_A, &id).await.expect("lookup");
        assert!(m.is_some());
    }
    let d = start.elapsed();
    println!(
        "{name:<8} store  message_by_link:                {:>8.0} ops/s  ({lookups} lookups, {:.2} s)",
        rate(lookups, d),
        d.as_secs_f64()
    );
    let start = Instant::now();
    for _ in 0..lookups {
        let id = format!("chat-{}", rng.below(STORE_CHATS));
        let c = store.chat_by_link(SIDE_A, &id).await.expect("lookup");
        assert!(c.is_some());
    }
    let d = start.elapsed();
    println!(
        "{name:<8} store  chat_by_link:                   {:>8.0} ops/s  ({lookups} lookups, {:.2} s)",
        rate(lookups, d),
        d.as_secs_f64()
    );
}

fn event(i: usize, tag: &str) -> bridge_core::ir::RemoteEvent {
    text_event(
        "a",
        &format!("room-{tag}-{}", i % ROUTE_CHATS),
        &format!("@user{}:a", i % USERS),
        &format!("ev-{tag}-{i}"),
        "A typical short chat message of about sixty bytes.",
    )
}

async fn routing_batch(name: &str, store: Store) {
    let n = scaled(ROUTED);
    let t = TestBridge::with_store(store, &["a", "b"]);
    let router = t.router();
    let start = Instant::now();
    for i in 0..n {
        router.ingest(event(i, "batch")).await.expect("ingest");
    }
    let ingest = start.elapsed();
    let start = Instant::now();
    let mut delivered = 0;
    let mut passes = 0;
    loop {
        let st = t.bridge.drain_once(SIDE_B).await.expect("drain");
        passes += 1;
        delivered += st.delivered;
        if st.delivered == 0 {
            break;
        }
    }
    let drain = start.elapsed();
    assert_eq!(delivered, n, "every event delivered");
    println!(
        "{name:<8} route  ingest ({n} events, {ROUTE_CHATS} chats):     {:>8.0} events/s ({:.2} s)",
        rate(n, ingest),
        ingest.as_secs_f64()
    );
    println!(
        "{name:<8} route  drain_once (side b):            {:>8.0} deliveries/s ({:.2} s, {} drain_once calls)",
        rate(delivered, drain),
        drain.as_secs_f64(),
        passes
    );
    println!(
        "{name:<8} route  end-to-end (ingest, then drain): {:>7.0} events/s ({:.2} s)",
        rate(n, ingest + drain),
        (ingest + drain).as_secs_f64()
    );
    t.bridge.store().close().await;
}

async fn routing_live(name: &str, store: Store) {
    let n = scaled(ROUTED);
    let t = TestBridge::with_store(store, &["a", "b"]);
    let router = t.router();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let hub = tokio::spawn(t.bridge.clone().run(async move {
        let _ = stop_rx.await;
    }));
    let start = Instant::now();
    // As the IMAP and LMTP ingest do, a failed ingest (nothing committed) is offered again
    // (here after 1 ms; the IMAP ingest reconnects after >= 1 s, Postfix retries LMTP later).
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    let mut failed_events = 0;
    for i in 0..n {
        let mut failed = false;
        while let Err(e) = router.ingest(event(i, "live")).await {
            *errors.entry(e.to_string()).or_default() += 1;
            failed = true;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        failed_events += usize::from(failed);
    }
    let ingest = start.elapsed();
    let store = t.bridge.store().clone();
    loop {
        let done = store.outbox_count(SIDE_B, "done").await.expect("count");
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = start.elapsed();
    let _ = stop_tx.send(());
    hub.await.expect("hub");
    println!(
        "{name:<8} route  live (drainers running): ingest {:>6.0} events/s while draining; all {n} delivered after {:.2} s = {:.0} events/s end-to-end",
        rate(n, ingest),
        total.as_secs_f64(),
        rate(n, total)
    );
    if failed_events > 0 {
        println!(
            "{name:<8} route  live: {failed_events} of {n} events needed a retry; failed attempts:"
        );
    }
    for (e, k) in &errors {
        println!("{name:<8} route  live:   {k}x {e}");
    }
    store.close().await;
}

async fn backend(name: &str, b: &mut impl Fresh) {
    let start = Instant::now();
    let s = b.fresh().await;
    store_section(name, &s).await;
    s.close().await;
    routing_batch(name, b.fresh().await).await;
    routing_live(name, b.fresh().await).await;
    println!(
        "{name:<8} (section took {:.1} s)",
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "hub bench: {} worker threads, pools of 8 connections, sequential callers",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let only = std::env::var("HUB_BENCH_ONLY").unwrap_or_default();
        if only != "postgres" {
            let mut sqlite = Sqlite { dirs: Vec::new() };
            backend("sqlite", &mut sqlite).await;
        }
        if only != "sqlite"
            && let Some(mut pg) = Postgres::connect().await
        {
            backend("postgres", &mut pg).await;
            pg.drop_all().await;
        }
    });
}
