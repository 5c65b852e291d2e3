//! End-to-end test with real Delta Chat 2.65 clients (`tests/peers/dcpeer.py`) on the local stack
//! (deploy/stack.sh), the bridge running as a separate process (`coi-bridge-testhub`) and a recording
//! side standing in for Matrix.
//!
//! The acceptance scenario: a Delta Chat user makes an unencrypted group with a Matrix user's puppet
//! address as a member; text, quote-replies and reactions flow both ways and stay in one chat on
//! every side, with their relations intact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dc_support;
mod support;

use dc_support::*;
use serde_json::{Value, json};
use std::time::Instant;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_chat_group_with_a_matrix_puppet_keeps_one_chat_and_its_relations_both_ways() {
    let Some(_stack) = stack() else { return };
    if std::env::var_os("COI_PYTHON").is_none() || std::env::var_os("COI_DCPEER").is_none() {
        eprintln!("skipping: COI_PYTHON / COI_DCPEER not set (eval \"$(deploy/stack.sh env)\")");
        return;
    }
    let _g = lock().await;
    let mut hub = Hub::new(None, Ingest::Imap);
    hub.skip_existing_mail(None).await;
    hub.start();
    let _bridge_log = BridgeLogOnPanic(&hub);
    let t0 = Instant::now();
    let mut dc = DcPeer::start();
    let t = tag();
    let group = format!("DC bridge {t}");
    let carol_mx = "@carol:matrix.test";
    let carol = format!(
        "{}@{MAIL_DOMAIN}",
        coi_side::codec::escape_localpart(carol_mx).expect("escape")
    );
    assert_eq!(carol, "=40carol=3amatrix.test@bridge.example.test");

    // 1. Two Delta Chat accounts; Alice opens an unencrypted group with Bob and Carol's puppet.
    let alice = dc.call(json!({"cmd": "add_account", "addr": "alice@example.test", "password": "alicepass", "name": "Alice"}))["account_id"].clone();
    let bob = dc.call(json!({"cmd": "add_account", "addr": "bob@example.test", "password": "bobpass", "name": "Bob"}))["account_id"].clone();
    let alice_chat = dc.call(json!({"cmd": "create_group", "account_id": alice, "name": group,
        "members": [{"addr": "bob@example.test", "name": "Bob"}, {"addr": carol, "name": "Carol (Matrix)"}]}))["chat_id"].clone();
    eprintln!(
        "[{:>6.2?}] accounts ready, group {group:?} is chat {alice_chat} at Alice",
        t0.elapsed()
    );

    // 2. Alice writes; Bob quote-replies and reacts 👍.
    let alice_text = format!("Hello from Alice {t}");
    let sent = Instant::now();
    let alice_msg = dc.call(
        json!({"cmd": "send_text", "account_id": alice, "chat_id": alice_chat, "text": alice_text}),
    )["msg_id"]
        .clone();
    let at_bob = dc.call(
        json!({"cmd": "wait_messages", "account_id": bob, "count": 1, "timeout": WAIT.as_secs()}),
    );
    let alice_msg_at_bob = find(at_bob["messages"].as_array().expect("messages"), |m| {
        text_of(m) == alice_text
    })
    .unwrap_or_else(|| panic!("Alice's message at Bob: {at_bob:#}"))
    .clone();
    let bob_chat = alice_msg_at_bob["chat_id"].clone();
    eprintln!(
        "[{:>6.2?}] Alice → Bob (DC) took {:?}",
        t0.elapsed(),
        sent.elapsed()
    );
    let bob_text = format!("Bob agrees {t}");
    let bob_msg = dc.call(json!({"cmd": "send_text", "account_id": bob, "chat_id": bob_chat, "text": bob_text, "quote_msg_id": alice_msg_at_bob["msg_id"]}))["msg_id"].clone();
    dc.call(json!({"cmd": "send_reaction", "account_id": bob, "msg_id": alice_msg_at_bob["msg_id"], "emoji": "👍"}));

    let r = hub.wait_records(
        "Alice's message, Bob's reply and Bob's reaction",
        WAIT,
        |r| {
            let alice_rec = find(r, |x| {
                x["kind"] == "message" && x["text"] == alice_text.as_str()
            });
            alice_rec.is_some()
                && find(r, |x| {
                    x["kind"] == "message" && x["text"] == bob_text.as_str()
                })
                .is_some()
                && find(r, |x| {
                    x["kind"] == "reaction" && x["sender"] == "bob@example.test"
                })
                .is_some()
        },
    );
    eprintln!(
        "[{:>6.2?}] DC → bridge: 3 events recorded {:?} after Alice sent",
        t0.elapsed(),
        sent.elapsed()
    );
    let alice_rec = find(&r, |x| {
        x["kind"] == "message" && x["text"] == alice_text.as_str()
    })
    .expect("alice");
    let bob_rec = find(&r, |x| {
        x["kind"] == "message" && x["text"] == bob_text.as_str()
    })
    .expect("bob");
    let reaction_rec = find(&r, |x| {
        x["kind"] == "reaction" && x["sender"] == "bob@example.test"
    })
    .expect("reaction");
    assert_eq!(alice_rec["sender"], "alice@example.test", "{alice_rec:#}");
    assert_eq!(alice_rec["chat_name"], group.as_str(), "{alice_rec:#}");
    assert_eq!(alice_rec["reply_to"], Value::Null, "{alice_rec:#}");
    let alice_link = alice_rec["link"].as_str().expect("link").to_owned();
    assert_eq!(bob_rec["sender"], "bob@example.test", "{bob_rec:#}");
    assert_eq!(
        bob_rec["reply_to"],
        alice_link.as_str(),
        "Bob's quote is a reply: {bob_rec:#}"
    );
    let bob_link = bob_rec["link"].as_str().expect("link").to_owned();
    assert_eq!(
        reaction_rec["target"],
        alice_link.as_str(),
        "{reaction_rec:#}"
    );
    assert_eq!(reaction_rec["key"], "👍", "{reaction_rec:#}");
    let chat = alice_rec["chat"].as_str().expect("chat").to_owned();
    for x in [bob_rec, reaction_rec] {
        assert_eq!(x["chat"], chat.as_str(), "one stand-in chat: {x:#}");
    }
    let ours: Vec<&Value> = r
        .iter()
        .filter(|x| x["chat_name"] == group.as_str())
        .collect();
    assert!(
        ours.iter().all(|x| x["chat"] == chat.as_str()),
        "one stand-in chat: {ours:#?}"
    );

    // 3. Carol writes from Matrix: a message, a reply to Bob, a ❤️ on Alice's message.
    let carol_text = format!("Carol from Matrix {t}");
    let carol_reply = format!("Carol answers Bob {t}");
    let injected = Instant::now();
    hub.inject(json!({"id": format!("$dc-msg-{t}"), "chat": chat, "sender": carol_mx, "sender_name": "Carol", "text": carol_text}));
    hub.inject(json!({"id": format!("$dc-reply-{t}"), "chat": chat, "sender": carol_mx, "sender_name": "Carol", "text": carol_reply, "reply_to": bob_link}));
    // The testhub maps `text` to the reaction key.
    hub.inject(json!({"id": format!("$dc-react-{t}"), "chat": chat, "sender": carol_mx, "sender_name": "Carol", "kind": "reaction", "target": alice_link, "text": "❤️"}));

    // 4. Alice and Bob see Carol in the same group, the reply quoting Bob, and the ❤️ on Alice's message.
    // Incoming messages per chat: Alice gets Bob's + Carol's two; Bob gets Alice's + Carol's two.
    for (who, account, dc_chat, alice_msg_id, bob_msg_id) in [
        ("Alice", &alice, &alice_chat, &alice_msg, None),
        (
            "Bob",
            &bob,
            &bob_chat,
            &alice_msg_at_bob["msg_id"],
            Some(&bob_msg),
        ),
    ] {
        let got = dc
            .try_call(json!({"cmd": "wait_messages", "account_id": account, "chat_id": dc_chat, "count": 3, "timeout": WAIT.as_secs()}))
            .unwrap_or_else(|e| {
                let chats = dc.call(json!({"cmd": "chat_list", "account_id": account}));
                panic!("Carol's messages in {who}'s group chat {dc_chat}: {e}\nchats: {chats:#}")
            });
        eprintln!(
            "[{:>6.2?}] Matrix → {who} (DC): both messages {:?} after the injection",
            t0.elapsed(),
            injected.elapsed()
        );
        let msgs = got["messages"].as_array().expect("messages");
        let m1 = find(msgs, |m| text_of(m) == carol_text)
            .unwrap_or_else(|| panic!("Carol's message in {who}'s group chat: {got:#}"));
        let m2 = find(msgs, |m| text_of(m) == carol_reply)
            .unwrap_or_else(|| panic!("Carol's reply in {who}'s group chat: {got:#}"));
        for m in [m1, m2] {
            assert_eq!(m["chat_id"], *dc_chat, "same DC chat at {who}: {m:#}");
            assert_eq!(
                m["sender_addr"],
                carol.as_str(),
                "sent by the puppet at {who}: {m:#}"
            );
            let shown = m["override_sender_name"]
                .as_str()
                .or(m["sender_name"].as_str())
                .unwrap_or_default();
            assert!(shown.contains("Carol"), "shown as Carol at {who}: {m:#}");
            assert_eq!(m["is_info"], false, "{m:#}");
        }
        assert_eq!(m1["quote_text"], Value::Null, "a plain message: {m1:#}");
        assert_eq!(
            m2["quote_text"],
            bob_text.as_str(),
            "the reply quotes Bob at {who}: {m2:#}"
        );
        let bob_at_peer = match bob_msg_id {
            Some(id) => id.clone(),
            None => find(msgs, |m| text_of(m) == bob_text)
                .unwrap_or_else(|| panic!("Bob's reply at {who}: {got:#}"))["msg_id"]
                .clone(),
        };
        assert_eq!(
            m2["quote_msg_id"], bob_at_peer,
            "the quote points at Bob's message at {who}: {m2:#}"
        );
        // Neither a second group of that name nor any other chat with Carol in it (a 1:1, an ad-hoc group).
        let chats = chat_list(&mut dc, account);
        let ids = |keep: &dyn Fn(&Value) -> bool| -> Vec<Value> {
            chats
                .iter()
                .filter(|c| keep(c))
                .map(|c| c["chat_id"].clone())
                .collect()
        };
        let with_carol = |c: &Value| {
            c["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|a| *a == carol.as_str()))
        };
        assert_eq!(
            ids(&|c| c["name"] == group.as_str()),
            std::slice::from_ref(dc_chat),
            "one chat named {group:?} at {who}: {chats:#?}"
        );
        assert_eq!(
            ids(&with_carol),
            std::slice::from_ref(dc_chat),
            "Carol's puppet is a member of the group only, at {who}: {chats:#?}"
        );
        eprintln!(
            "         at {who}: Carol shown as sender_name={} override_sender_name={}, reply quote_text={}",
            m1["sender_name"], m1["override_sender_name"], m2["quote_text"]
        );
        let reacted = wait_message(&mut dc, account, alice_msg_id, "Carol's ❤️", |m| {
            m["reactions"]["❤️"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| *x == carol.as_str()))
        });
        eprintln!(
            "[{:>6.2?}] Matrix → {who} (DC): ❤️ {:?} after the injection",
            t0.elapsed(),
            injected.elapsed()
        );
        if who == "Alice" {
            let thumbs = reacted["reactions"]["👍"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                thumbs.iter().any(|x| x == "bob@example.test"),
                "Bob's 👍 is still there: {reacted:#}"
            );
        }
    }

    // Nothing of Carol's came back to "Matrix" (no echo), and every record is in the one chat.
    let r = hub.records();
    let ours: Vec<&Value> = r
        .iter()
        .filter(|x| x["chat_name"] == group.as_str())
        .collect();
    assert!(
        ours.iter().all(|x| x["chat"] == chat.as_str()),
        "one stand-in chat: {ours:#?}"
    );
    assert!(
        !ours
            .iter()
            .any(|x| x["sender"] == carol.as_str() || x["sender"] == carol_mx),
        "no echo of Carol's mail: {ours:#?}"
    );
    eprintln!("[{:>6.2?}] done", t0.elapsed());
}
