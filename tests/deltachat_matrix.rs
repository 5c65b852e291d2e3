//! Real Delta Chat 2.65 clients and a real Matrix client in one conversation through the production
//! binary (`coi-bridge run`: IMAP ingest, SMTP out, appservice listener), Postfix + Dovecot and
//! Synapse: Alice and Bob use Delta Chat (`tests/peers/dcpeer.py`), Mia uses matrix-nio.
//!
//! Alice opens an unencrypted Delta Chat group with Bob and Mia's puppet address; the bridge opens
//! a portal room and invites Mia. Text, a photo, a quote-reply, a photo back and reactions cross
//! both ways, and every Delta Chat message stays in the one group.
//!
//! Gated: needs the stack (`COI_TEST_STACK=1`), Synapse (`COI_TEST_SYNAPSE=1`) and the Delta Chat
//! peer (`COI_PYTHON`, `COI_DCPEER`); deploy/test.sh sets them all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dc_support;
mod matrix_support;
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use coi_side::codec::{ParseLimits, parse};
use dc_support::{BridgeLogOnPanic, DcPeer, WAIT, chat_list, find, text_of, wait_message};
use matrix_support::{ListenerLock, Peer, synapse_enabled, synapse_env};
use serde_json::{Value, json};
use std::time::Instant;
use support::{Hub, Ingest, MAIL_DOMAIN, lock, stack, tag};

/// The JPEG of the Delta Chat 2.65 image fixture.
fn photo() -> Vec<u8> {
    let raw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("coi-side/testdata/deltachat-2.65/06-alice-image.eml"),
    )
    .unwrap();
    parse(&raw, &ParseLimits::default())
        .unwrap()
        .attachments
        .into_iter()
        .find(|a| a.mime_type == "image/jpeg")
        .expect("the fixture's jpeg")
        .data
}

/// Waits until the peer's account shows a message in `chat` that satisfies `pred`.
fn wait_dc(
    dc: &mut DcPeer,
    account: &Value,
    chat: &Value,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let got = dc.try_call(
            json!({"cmd": "wait_messages", "account_id": account, "chat_id": chat, "count": 1, "timeout": 5}),
        );
        if let Ok(g) = &got
            && let Some(m) = find(g["messages"].as_array().unwrap(), &pred)
        {
            return m.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delta_chat_and_matrix_people_in_one_conversation() {
    let Some(_stack) = stack() else { return };
    if !synapse_enabled() {
        return;
    }
    if std::env::var_os("COI_PYTHON").is_none() || std::env::var_os("COI_DCPEER").is_none() {
        eprintln!("skipping: COI_PYTHON / COI_DCPEER not set (eval \"$(deploy/stack.sh env)\")");
        return;
    }
    let _g = lock().await;
    let _listener = ListenerLock::take().await;
    let env = synapse_env();
    let hs = env["COI_MATRIX_HS_URL"].clone();
    let mut hub = Hub::with_matrix(Ingest::Imap, &env);
    hub.skip_existing_mail(None).await;
    hub.start();
    support::wait_listening(env["COI_MATRIX_AS_URL"].trim_start_matches("http://"));
    let _bridge_log = BridgeLogOnPanic(&hub);
    let t0 = Instant::now();
    let t = tag();
    let group = format!("DC+Matrix {t}");
    // Mia is @alice:matrix.test (the stack's Matrix test user), called Mia here to keep her apart
    // from Delta Chat's Alice.
    let mia_mx = "@alice:matrix.test";
    let mia = format!(
        "{}@{MAIL_DOMAIN}",
        coi_side::codec::escape_localpart(mia_mx).unwrap()
    );
    let mut mx = Peer::start(&env["COI_PYTHON"], &hs, mia_mx, "alicepass").await;
    let mut dc = DcPeer::start();

    // 1. Alice's group with Bob and Mia's puppet; Alice writes; Mia is invited to the portal.
    let alice = dc.call(json!({"cmd": "add_account", "addr": "alice@example.test", "password": "alicepass", "name": "Alice"}))["account_id"].clone();
    let bob = dc.call(json!({"cmd": "add_account", "addr": "bob@example.test", "password": "bobpass", "name": "Bob"}))["account_id"].clone();
    let alice_chat = dc.call(
        json!({"cmd": "create_group", "account_id": alice, "name": group,
        "members": [{"addr": "bob@example.test", "name": "Bob"}, {"addr": mia, "name": "Mia"}]}),
    )["chat_id"]
        .clone();
    let hello = format!("Hello Mia {t}");
    let sent = Instant::now();
    dc.call(json!({"cmd": "send_text", "account_id": alice, "chat_id": alice_chat, "text": hello}));
    let invite = mx
        .wait(
            "the portal invite",
            |v| v["event"] == "invite" && v["sender"] == "@coi_bot:matrix.test",
            60,
        )
        .await;
    let room = invite["room"].as_str().unwrap().to_owned();
    mx.cmd(json!({"cmd": "join", "room": room})).await;
    let alice_ghost = "@_coi_alice=40example.test:matrix.test";
    let hello_mx = mx
        .wait(
            "Alice's hello on Matrix",
            |v| v["event"] == "message" && v["body"] == hello.as_str(),
            60,
        )
        .await;
    eprintln!(
        "[{:>6.2?}] DC Alice → Mia (Matrix) incl. portal creation and join: {:?}",
        t0.elapsed(),
        sent.elapsed()
    );
    assert_eq!(hello_mx["sender"], alice_ghost);
    assert_eq!(hello_mx["room"], room.as_str());
    let hello_ev = hello_mx["event_id"].as_str().unwrap().to_owned();

    // 2. Alice sends a photo from Delta Chat; Mia gets an m.image with the same bytes.
    let jpeg = photo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lake.jpg");
    std::fs::write(&file, &jpeg).unwrap();
    dc.call(
        json!({"cmd": "send_text", "account_id": alice, "chat_id": alice_chat,
                   "text": format!("the lake {t}"), "file": file.display().to_string()}),
    );
    let img = mx
        .wait(
            "Alice's photo on Matrix",
            |v| v["sender"] == alice_ghost && v["content"]["msgtype"] == "m.image",
            60,
        )
        .await;
    let got = mx
        .cmd(json!({"cmd": "download", "url": img["content"]["url"]}))
        .await;
    assert_eq!(
        B64.decode(got["data_b64"].as_str().unwrap()).unwrap(),
        jpeg,
        "Delta Chat's photo arrives in Matrix byte for byte"
    );
    mx.wait(
        "the photo's caption",
        |v| v["sender"] == alice_ghost && v["body"] == format!("the lake {t}").as_str(),
        60,
    )
    .await;

    // 3. Mia answers Alice's hello and sends a picture; both Delta Chat users see them in the
    //    group, the answer as a quote of Alice's message, the picture as an image.
    let answer = format!("Hi Alice, Mia here {t}");
    let mia_msg = mx
        .cmd(json!({"cmd": "send", "room": room, "body": answer, "reply_to": hello_ev}))
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut back = jpeg.clone();
    back.extend_from_slice(t.as_bytes());
    mx.cmd(
        json!({"cmd": "send_file", "room": room, "data_b64": B64.encode(&back),
                  "filename": "view.jpg", "mimetype": "image/jpeg", "msgtype": "m.image"}),
    )
    .await;
    let mut bob_chat = Value::Null;
    for (who, account) in [("Alice", &alice), ("Bob", &bob)] {
        let chat = if who == "Alice" {
            alice_chat.clone()
        } else {
            let m = dc.call(json!({"cmd": "wait_messages", "account_id": account, "count": 1, "timeout": WAIT.as_secs()}));
            let first = find(m["messages"].as_array().unwrap(), |x| text_of(x) == hello)
                .unwrap_or_else(|| panic!("Alice's hello at Bob: {m:#}"))
                .clone();
            bob_chat = first["chat_id"].clone();
            bob_chat.clone()
        };
        let a = wait_dc(&mut dc, account, &chat, "Mia's answer", |m| {
            text_of(m) == answer
        });
        assert_eq!(
            a["sender_addr"],
            mia.as_str(),
            "from Mia's puppet at {who}: {a:#}"
        );
        assert_eq!(
            a["quote_text"],
            hello.as_str(),
            "quotes Alice at {who}: {a:#}"
        );
        let p = wait_dc(&mut dc, account, &chat, "Mia's picture", |m| {
            m["file_name"] == "view.jpg"
        });
        assert_eq!(p["view_type"], "Image", "an image at {who}: {p:#}");
        let path = p["file"].as_str().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), back, "same bytes at {who}");
        // One group only, with Mia in it.
        let with_mia: Vec<Value> = chat_list(&mut dc, account)
            .into_iter()
            .filter(|c| {
                c["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|a| *a == mia.as_str()))
            })
            .map(|c| c["chat_id"].clone())
            .collect();
        assert_eq!(with_mia, vec![chat.clone()], "one chat with Mia at {who}");
        eprintln!(
            "[{:>6.2?}] Matrix → {who} (DC): answer and picture",
            t0.elapsed()
        );
    }

    // 4. Reactions both ways: Bob 👍 on Mia's answer; Mia ❤️ on Alice's hello.
    let answer_at_bob = wait_dc(&mut dc, &bob, &bob_chat, "Mia's answer", |m| {
        text_of(m) == answer
    });
    dc.call(json!({"cmd": "send_reaction", "account_id": bob, "msg_id": answer_at_bob["msg_id"], "emoji": "👍"}));
    let bob_ghost = "@_coi_bob=40example.test:matrix.test";
    let r = mx
        .wait(
            "Bob's 👍 on Matrix",
            |v| v["sender"] == bob_ghost && v["type"] == "m.reaction",
            60,
        )
        .await;
    assert_eq!(r["content"]["m.relates_to"]["event_id"], mia_msg.as_str());
    assert_eq!(r["content"]["m.relates_to"]["key"], "👍");
    mx.cmd(json!({"cmd": "react", "room": room, "target": hello_ev, "key": "❤️"}))
        .await;
    let hello_at_alice = wait_dc(&mut dc, &alice, &alice_chat, "Alice's hello", |m| {
        text_of(m) == hello
    });
    wait_message(
        &mut dc,
        &alice,
        &hello_at_alice["msg_id"],
        "Mia's ❤️",
        |m| {
            m["reactions"]["❤️"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| *x == mia.as_str()))
        },
    );
    eprintln!("[{:>6.2?}] reactions both ways", t0.elapsed());

    let _ = mx.cmd(json!({"cmd": "shutdown"})).await;
    let _ = mx.child.wait().await;
}
