//! The bot's management room and commands against a real Synapse, with matrix-nio as alice and a
//! fake side standing in for email.
//!
//! Gated: runs only with `COI_TEST_SYNAPSE=1` (it starts Synapse with `deploy/synapse.sh up`).
//! Synapse's registration points at one listener address, so this test holds a file lock while
//! its listener runs (run it alone, or after `matrix_synapse`: cargo runs test binaries in turn).
//!
//!     COI_TEST_SYNAPSE=1 cargo test --test matrix_commands -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bridge_core::ir::{EventKind, MembershipChange};
use bridge_core::testing::FakeSide;
use bridge_core::{Bridge, RetryPolicy, SideName, Store};
use matrix_side::MatrixSide;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod matrix_support;

use matrix_support::{Peer, repo, synapse_env};

/// Alice's own client-server calls (room creation), with a password login.
struct Alice {
    http: reqwest::Client,
    hs: String,
    token: String,
}

impl Alice {
    async fn login(hs: &str) -> Alice {
        let http = reqwest::Client::new();
        let v: Value = http
            .post(format!("{hs}/_matrix/client/v3/login"))
            .json(&json!({"type": "m.login.password",
                          "identifier": {"type": "m.id.user", "user": "alice"},
                          "password": "alicepass"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned();
        Alice {
            http,
            hs: hs.to_owned(),
            token,
        }
    }

    async fn create_room(&self, body: Value) -> String {
        let v: Value = self
            .http
            .post(format!("{}/_matrix/client/v3/createRoom", self.hs))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["room_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned()
    }
}

fn from_bot(v: &Value, room: &str, needle: &str) -> bool {
    v["event"] == "message"
        && v["room"] == room
        && v["sender"] == "@coi_bot:matrix.test"
        && v["body"].as_str().is_some_and(|b| b.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synapse_management_room_and_commands() {
    if std::env::var("COI_TEST_SYNAPSE").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set COI_TEST_SYNAPSE=1 to run against a real Synapse (deploy/synapse.sh up)"
        );
        return;
    }
    let lock =
        std::fs::File::create(std::env::temp_dir().join("coi-synapse-listener.lock")).unwrap();
    lock.lock().unwrap();
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // Another Synapse test may hold the registration's listener address: wait for it to be free,
    // and keep the socket once bound.
    let t_port = Instant::now();
    let tcp = loop {
        match tokio::net::TcpListener::bind(settings.listen).await {
            Ok(l) => break l,
            Err(e) => {
                assert!(
                    t_port.elapsed() < Duration::from_secs(600),
                    "{} stays busy: {e}",
                    settings.listen
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let listener = {
        let commands = matrix_side::commands::Commands::new(
            matrix.client().clone(),
            settings.namer.clone(),
            bridge.router(),
            settings.permissions.clone(),
        );
        let state = matrix_side::ListenerState::with_commands(
            &settings.hs_token,
            bridge.router(),
            settings.namer.clone(),
            commands,
        );
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { matrix_side::listener::serve(tcp, state, stop).await })
    };
    matrix_side::startup(matrix.client(), &settings, 20)
        .await
        .unwrap();
    let hub = tokio::spawn(bridge.clone().run(stopped(stop_rx.clone())));

    let python = env["COI_PYTHON"].clone();
    let mut peer = Peer::start(&python, &hs_url, "@alice:matrix.test", "alicepass").await;
    let alice = Alice::login(&hs_url).await;
    let bot = "@coi_bot:matrix.test";

    // 1. A DM with the bot is alice's management room: the bot joins and greets.
    let t0 = Instant::now();
    let dm = alice
        .create_room(json!({"is_direct": true, "preset": "trusted_private_chat", "invite": [bot]}))
        .await;
    peer.wait("the greeting", |v| from_bot(v, &dm, "management room"), 30)
        .await;
    eprintln!("DM -> greeting in {:?}", t0.elapsed());
    assert_eq!(
        store
            .kv_get("matrix.mgmt.@alice:matrix.test")
            .await
            .unwrap()
            .as_deref(),
        Some(dm.as_str())
    );

    // 2. `help` without a prefix is answered.
    peer.cmd(json!({"cmd": "send", "room": dm, "body": "help"}))
        .await;
    peer.wait("help", |v| from_bot(v, &dm, "coi-bridge commands"), 30)
        .await;

    // 3. `create Lunch bob@example.test`: a new portal room, alice invited, bob gets "member added".
    let t1 = Instant::now();
    peer.cmd(json!({"cmd": "send", "room": dm, "body": "create Lunch bob@example.test"}))
        .await;
    let answer = peer
        .wait("create's answer", |v| from_bot(v, &dm, "Created chat"), 30)
        .await;
    eprintln!("create -> {}", answer["body"]);
    let invite = peer
        .wait(
            "the portal invite",
            |v| v["event"] == "invite" && v["room"] != dm.as_str(),
            30,
        )
        .await;
    assert_eq!(invite["sender"], bot);
    let portal = invite["room"].as_str().unwrap().to_owned();
    let chat = store
        .chat_by_link(SideName::MATRIX, &portal)
        .await
        .unwrap()
        .expect("the portal room is linked");
    assert_eq!(store.chat(chat).await.unwrap().name, "Lunch");
    let deadline = Instant::now() + Duration::from_secs(30);
    let added = loop {
        if let Some(i) = email.delivered().into_iter().find(|i| {
            i.chat.id == chat
                && matches!(&i.event, EventKind::Membership { subject, change: MembershipChange::Join }
                    if subject.remote_id == "bob@example.test")
        }) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no member-added for bob on the email side"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("create -> portal + member-added mail in {:?}", t1.elapsed());
    assert_eq!(added.origin_side, "matrix");

    // 4. An encrypted DM gets the honest refusal instead of silence.
    let enc = alice
        .create_room(
            json!({"is_direct": true, "preset": "trusted_private_chat", "invite": [bot],
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                               "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
        )
        .await;
    let refusal = peer
        .wait(
            "the refusal",
            |v| from_bot(v, &enc, "not supported yet"),
            30,
        )
        .await;
    eprintln!("encrypted DM -> {}", refusal["body"]);

    let _ = peer.cmd(json!({"cmd": "shutdown"})).await;
    let _ = peer.child.wait().await;
    let _ = stop_tx.send(true);
    listener.await.unwrap().unwrap();
    hub.await.unwrap();
    drop(lock);
}
