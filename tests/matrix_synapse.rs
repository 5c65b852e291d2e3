//! The Matrix side against a real Synapse on loopback, with matrix-nio as the Matrix person and a
//! fake side standing in for email.
//!
//! Gated: runs only with `COI_TEST_SYNAPSE=1` (it starts Synapse with `deploy/synapse.sh up`).
//!
//!     COI_TEST_SYNAPSE=1 cargo test --test matrix_synapse -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bridge_core::ir::{
    ChatLocator, EventKind, MessageContent, NewChat, Part, Relation, RemoteEvent, UserRef,
};
use bridge_core::testing::FakeSide;
use bridge_core::{Bridge, IngestOutcome, RetryPolicy, SideName, Store};
use matrix_side::MatrixSide;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod matrix_support;

use matrix_support::{Peer, repo, synapse_env};

async fn wait_delivered(
    email: &FakeSide,
    what: &str,
    pred: impl Fn(&bridge_core::OutboxItem) -> bool,
) -> bridge_core::OutboxItem {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = email.delivered().into_iter().find(&pred) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} on the email side"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn email_event(remote_id: &str, group: &str, kind: EventKind, alice: &UserRef) -> RemoteEvent {
    let bob = UserRef::new(SideName::EMAIL, "bob@example.org", Some("Bob Email".into()));
    RemoteEvent {
        side: SideName::EMAIL,
        remote_id: remote_id.to_owned(),
        chat: ChatLocator {
            remote_chat_id: Some(group.to_owned()),
            create: Some(NewChat {
                name: format!("Bridge test {group}"),
                topic: "email ⇄ matrix".into(),
                members: vec![bob.clone(), alice.clone()],
                remote_chat_id: Some(group.to_owned()),
            }),
            ..ChatLocator::default()
        },
        sender: bob,
        ts_ms: bridge_core::store::now_ms(),
        kind,
        raw: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synapse_round_trip() {
    if std::env::var("COI_TEST_SYNAPSE").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set COI_TEST_SYNAPSE=1 to run against a real Synapse (deploy/synapse.sh up)"
        );
        return;
    }
    let up = std::process::Command::new(repo().join("deploy/synapse.sh"))
        .arg("up")
        .status()
        .unwrap();
    assert!(up.success(), "deploy/synapse.sh up failed");
    let env = synapse_env();
    let hs_url = env["COI_MATRIX_HS_URL"].clone();
    let settings = matrix_support::settings(&env);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}/bridge.db", dir.path().display()), 4)
        .await
        .unwrap();
    let matrix = Arc::new(MatrixSide::new(&settings, store.clone()).unwrap());
    let email = FakeSide::new("email");
    let bridge = Arc::new(
        Bridge::builder(store.clone())
            .retry(RetryPolicy {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(2),
                max_attempts: 10,
            })
            .side(matrix.clone())
            .side(email.clone())
            .build(),
    );
    let t_wrong = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // A listener with the wrong hs_token: Synapse's ping is refused with 403, and start-up says why.
    {
        let mut wrong = settings.clone();
        wrong.hs_token = "not-the-hs-token".into();
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let r = bridge.router();
        let w = wrong.clone();
        let task = tokio::spawn(async move {
            matrix_side::run_listener(&w, r, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
        });
        let err = loop {
            match matrix_side::startup(matrix.client(), &settings, 1).await {
                Err(matrix_side::StartupError::Ping { error, .. })
                    if error.contains("hs_token") =>
                {
                    break error;
                }
                Err(e) if t_wrong.elapsed() < Duration::from_secs(10) => {
                    eprintln!("(waiting for the wrong listener: {e})");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("expected a ping refusal, got {other:?}"),
            }
        };
        eprintln!("wrong hs_token at the listener -> {err}");
        let _ = tx.send(true);
        task.await.unwrap().unwrap();
    }
    let listener = {
        let s = settings.clone();
        let r = bridge.router();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { matrix_side::run_listener(&s, r, stop).await })
    };
    let t0 = Instant::now();
    let info = matrix_side::startup(matrix.client(), &settings, 20)
        .await
        .unwrap();
    eprintln!(
        "startup ok in {:?}: versions up to {:?}, ping {} ms",
        t0.elapsed(),
        info.versions.last(),
        info.ping_ms
    );
    // Start-up failures are one clear line each.
    let bad = matrix_side::MatrixClient::new(&hs_url, "not-the-as-token").unwrap();
    let err = matrix_side::startup(&bad, &settings, 1).await.unwrap_err();
    eprintln!("wrong as_token -> {err}");
    assert!(
        matches!(err, matrix_side::StartupError::BadAsToken(_)),
        "{err}"
    );
    let gone = matrix_side::MatrixClient::new("http://127.0.0.1:1", "x").unwrap();
    let err = matrix_side::startup(&gone, &settings, 1).await.unwrap_err();
    eprintln!("unreachable -> {err}");
    assert!(
        matches!(err, matrix_side::StartupError::Unreachable { .. }),
        "{err}"
    );
    let hub = tokio::spawn(bridge.clone().run(stopped(stop_rx.clone())));

    let python = env["COI_PYTHON"].clone();
    let mut alice = Peer::start(&python, &hs_url, "@alice:matrix.test", "alicepass").await;
    let alice_ref = UserRef::new(SideName::MATRIX, "@alice:matrix.test", Some("Alice".into()));

    // 1. An email message opens a portal room; alice is invited and sees the ghost speak.
    let group = format!("grp-{}", uuid::Uuid::new_v4().simple());
    let mid = format!("<{}@example.org>", uuid::Uuid::new_v4().simple());
    let hello_text = format!("hello from email {group}");
    let hello = EventKind::Message(MessageContent {
        parts: vec![Part::text(hello_text.clone())],
        ..MessageContent::default()
    });
    let t_send = Instant::now();
    let outcome = bridge
        .router()
        .ingest(email_event(&mid, &group, hello, &alice_ref))
        .await
        .unwrap();
    let IngestOutcome::Committed {
        message: original,
        chat,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    let room = loop {
        if let Some(r) = store.chat_link(chat, SideName::MATRIX).await.unwrap() {
            break r;
        }
        assert!(t_send.elapsed() < Duration::from_secs(30), "no portal room");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let invite = alice
        .wait(
            "invite",
            |v| v["event"] == "invite" && v["room"] == room.as_str(),
            30,
        )
        .await;
    assert_eq!(invite["sender"], "@coi_bot:matrix.test");
    alice.cmd(json!({"cmd": "join", "room": room})).await;
    let ghost = "@_coi_bob=40example.org:matrix.test";
    let seen = alice
        .wait(
            "the ghost's message",
            |v| v["event"] == "message" && v["body"] == hello_text.as_str(),
            30,
        )
        .await;
    eprintln!(
        "email -> matrix (incl. room creation and join) {:?}",
        t_send.elapsed()
    );
    assert_eq!(seen["sender"], ghost);
    assert_eq!(seen["room"], room.as_str());
    let hello_event = seen["event_id"].as_str().unwrap().to_owned();
    assert_eq!(
        store
            .chat_link(chat, SideName::MATRIX)
            .await
            .unwrap()
            .as_deref(),
        Some(room.as_str())
    );
    assert!(
        store
            .puppet_by_link(SideName::MATRIX, ghost)
            .await
            .unwrap()
            .is_some(),
        "the ghost is linked to bob's puppet"
    );

    // The room carries bridge state.
    let http = reqwest::Client::new();
    let st: Value = http
        .get(format!(
            "{hs_url}/_matrix/client/v3/rooms/{}/state",
            room.replace('!', "%21").replace(':', "%3A")
        ))
        .bearer_auth(&env["COI_MATRIX_AS_TOKEN"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = st
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"m.bridge") && types.contains(&"uk.half-shot.bridge"),
        "{types:?}"
    );

    // 2. Alice replies; the email side gets it with the reply resolved to the original mail.
    let t_reply = Instant::now();
    let sent = alice
        .cmd(json!({"cmd": "send", "room": room, "body": "hi bob", "reply_to": hello_event}))
        .await;
    let reply = wait_delivered(
        &email,
        "alice's reply",
        |i| matches!(&i.event, EventKind::Message(c) if c.text() == "hi bob"),
    )
    .await;
    eprintln!("matrix -> email (hub) {:?}", t_reply.elapsed());
    assert_eq!(reply.origin_side, "matrix");
    assert_eq!(
        reply.sender.as_ref().unwrap().native_id,
        "@alice:matrix.test"
    );
    let EventKind::Message(c) = &reply.event else {
        unreachable!()
    };
    let r = c.reply_to.as_ref().expect("reply relation");
    assert_eq!(r.message_id, Some(original));
    assert_eq!(r.remote_id.as_deref(), Some(mid.as_str()));
    assert_eq!(r.excerpt.as_deref(), Some(hello_text.as_str()));
    let alice_event = sent["event_id"].as_str().unwrap().to_owned();

    // 3. An email edit arrives in Matrix as m.replace of the original event.
    let edit = EventKind::Edit {
        target: Relation::remote(mid.clone()),
        content: MessageContent {
            parts: vec![Part::text("hello from email (edited)")],
            ..MessageContent::default()
        },
    };
    bridge
        .router()
        .ingest(email_event(
            "<edit-1@example.org>",
            &group,
            edit,
            &alice_ref,
        ))
        .await
        .unwrap();
    let ed = alice
        .wait(
            "the edit",
            |v| {
                v["event"] == "message"
                    && v["content"]["m.relates_to"]["event_id"] == hello_event.as_str()
                    && v["content"]["m.relates_to"]["rel_type"] == "m.replace"
            },
            30,
        )
        .await;
    assert_eq!(
        ed["content"]["m.relates_to"]["event_id"],
        hello_event.as_str()
    );
    assert_eq!(
        ed["content"]["m.new_content"]["body"],
        "hello from email (edited)"
    );

    // 4. Alice reacts to the ghost's message; the email side gets the reaction on the original.
    alice
        .cmd(json!({"cmd": "react", "room": room, "target": hello_event, "key": "👍"}))
        .await;
    let re = wait_delivered(
        &email,
        "alice's reaction",
        |i| matches!(&i.event, EventKind::Reaction { key, .. } if key == "👍"),
    )
    .await;
    let EventKind::Reaction { target, .. } = &re.event else {
        unreachable!()
    };
    assert_eq!(target.message_id, Some(original));

    // 5. Our own ghosts' echoes never come back to the hub as new events.
    let from_matrix = store
        .chat_messages(chat)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| {
            m.origin_side == "matrix"
                && matches!(m.event, EventKind::Message(_) | EventKind::Reaction { .. })
        })
        .count();
    assert_eq!(from_matrix, 2, "alice's reply and reaction only");
    assert!(
        store
            .message_by_link(SideName::MATRIX, &alice_event)
            .await
            .unwrap()
            .is_some()
    );

    // 6. Deterministic client txn ids: a retried send as the same ghost returns the same event.
    let txn = matrix_side::client::txn_id("retry-check", "", ghost);
    let content = json!({"msgtype": "m.notice", "body": "retry check"});
    let a = matrix
        .client()
        .send(&room, Some(ghost), "m.room.message", &txn, &content, None)
        .await
        .unwrap();
    let b = matrix
        .client()
        .send(&room, Some(ghost), "m.room.message", &txn, &content, None)
        .await
        .unwrap();
    assert_eq!(a, b);

    // 7. A wrong hs_token is refused by the listener.
    let r = http
        .put(format!(
            "{}/_matrix/app/v1/transactions/evil-1",
            env["COI_MATRIX_AS_URL"]
        ))
        .bearer_auth("wrong-token")
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errcode"], "M_FORBIDDEN");
    assert!(store.kv_get("matrix.txn.evil-1").await.unwrap().is_none());

    alice.cmd(json!({"cmd": "shutdown"})).await;
    let _ = alice.child.wait().await;
    let _ = stop_tx.send(true);
    listener.await.unwrap().unwrap();
    hub.await.unwrap();
}
