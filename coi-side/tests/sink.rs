//! The inbound pipeline (parse → map → router) over every fixture, with a fake side standing in for Matrix:
//! real Delta Chat mail lands in the right chat with the right relations; bad mail is kept, never lost,
//! and never crashes the bridge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bridge_core::ir::{EventKind, MembershipChange};
use bridge_core::testing::TestBridge;
use bridge_core::{SideName, Store};
use coi_side::EmailConfig;
use coi_side::MailSink;
use coi_side::transport::{InboundMail, InboundSink, InboundSource};
use std::path::Path;
use std::sync::Arc;

fn config() -> Arc<EmailConfig> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "mail_domain": "bridge.example.test",
            "bridge_address": "bridge@example.test",
            "smtp_host": "127.0.0.1",
            "allow_new_chats_from": ["example.test"],
        }))
        .expect("config"),
    )
}

fn mail(raw: Vec<u8>) -> InboundMail {
    InboundMail {
        raw,
        source: InboundSource::Lmtp {
            mail_from: "x@example.test".into(),
            rcpt_to: vec!["xyz@bridge.example.test".into()],
        },
    }
}

fn fixture(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(dir)
            .join(name),
    )
    .expect("fixture")
}

async fn setup() -> (TestBridge, MailSink, Store) {
    let t = TestBridge::new(&["matrix"]).await.expect("bridge");
    let sink = MailSink::new(config(), t.router());
    let store = t.bridge.store().clone();
    (t, sink, store)
}

#[tokio::test]
async fn delta_chat_fixtures_become_one_chat_with_relations() {
    let (t, sink, store) = setup().await;
    let files = [
        "01-alice-group-text.eml",
        "02-bob-group-reply-quote.eml",
        "03-bob-reaction.eml",
        "04-alice-edit.eml",
        "06-alice-image.eml",
        "09-alice-member-added-abc-1.eml",
        "09-alice-member-added-abc-2.eml",
        "10-alice-group-renamed-1.eml",
        "10-alice-group-renamed-2.eml",
        "11-alice-member-removed-abc-1.eml",
        "11-alice-member-removed-abc-2.eml",
    ];
    for f in files {
        sink.accept(mail(fixture("deltachat-2.65", f)))
            .await
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    t.bridge.drain_once(SideName::MATRIX).await.expect("drain");
    let d = t.side("matrix").expect("side").delivered();
    let kinds: Vec<&str> = d.iter().map(|i| i.event.name()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "reaction",
            "edit",
            "message",
            "membership",
            "chat_info",
            "membership"
        ],
        "each mail once; the second copies (one per puppet recipient) are duplicates"
    );
    let chats: std::collections::BTreeSet<_> = d.iter().map(|i| i.chat.id).collect();
    assert_eq!(chats.len(), 1, "all in the same chat");
    let first = format!("matrix-{}", d[0].message_uuid);
    let EventKind::Message(reply) = &d[1].event else {
        panic!()
    };
    assert_eq!(
        reply.reply_to.as_ref().and_then(|r| r.remote_id.as_deref()),
        Some(first.as_str()),
        "quote-reply"
    );
    assert_eq!(reply.text(), "Reply from Bob (quoting Alice).");
    let EventKind::Reaction { target, key, .. } = &d[2].event else {
        panic!()
    };
    assert_eq!(
        (target.remote_id.as_deref(), key.as_str()),
        (Some(first.as_str()), "👍")
    );
    let EventKind::Edit { target, content } = &d[3].event else {
        panic!()
    };
    assert_eq!(target.remote_id.as_deref(), Some(first.as_str()));
    assert_eq!(content.text(), "Hello group, this is Alice (EDITED).");
    let EventKind::Message(img) = &d[4].event else {
        panic!()
    };
    assert!(img.parts.iter().any(|p| matches!(p, bridge_core::ir::Part::Attachment { mime_type, .. } if mime_type == "image/jpeg")));
    let EventKind::Membership { subject, change } = &d[5].event else {
        panic!()
    };
    assert_eq!(
        (subject.remote_id.as_str(), *change),
        ("abc@bridge.example.test", MembershipChange::Join)
    );
    let EventKind::ChatInfo { name, .. } = &d[6].event else {
        panic!()
    };
    assert_eq!(name.as_deref(), Some("Spike Group renamed"));
    assert!(matches!(
        &d[7].event,
        EventKind::Membership {
            change: MembershipChange::Leave,
            ..
        }
    ));
    assert_eq!(
        d[0].sender.as_ref().map(|s| s.native_id.as_str()),
        Some("alice@example.test")
    );
    assert_eq!(
        d[1].sender.as_ref().map(|s| s.display_name.as_str()),
        Some("Bob")
    );
    assert_eq!(
        store
            .quarantine_count(SideName::EMAIL)
            .await
            .expect("count"),
        0
    );
    let (key, mutual) = store
        .autocrypt("alice@example.test")
        .await
        .expect("q")
        .expect("Alice's Autocrypt key kept");
    assert!(key.len() > 100 && mutual, "{} bytes", key.len());
}

#[tokio::test]
async fn encrypted_mail_is_kept_with_its_reason() {
    let (_t, sink, store) = setup().await;
    sink.accept(mail(fixture(
        "deltachat-2.65",
        "12-encrypted-msg-as-seen-in-bob-inbox.eml",
    )))
    .await
    .expect("accept");
    assert_eq!(
        store
            .quarantine_count(SideName::EMAIL)
            .await
            .expect("count"),
        1
    );
}

#[tokio::test]
async fn hostile_mail_never_fails_the_sink_and_is_kept() {
    let (_t, sink, store) = setup().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/hostile");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("dir") {
        let path = e.expect("entry").path();
        let raw = std::fs::read(&path).expect("read");
        sink.accept(mail(raw))
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        n += 1;
    }
    // Garbage, a forged bridge sender, a 1,000-deep MIME bomb and an oversized attachment.
    let garbage = b"\x00\x01\x02 not a mail \xff\xfe".to_vec();
    let forged = b"From: Carol <=40carol=3amatrix.test@bridge.example.test>\r\nTo: alice@example.test\r\nMessage-ID: <forged-1@evil.example>\r\nSubject: hi\r\n\r\nI am not Carol\r\n".to_vec();
    let mut bomb = String::from(
        "From: a@example.test\r\nTo: xyz@bridge.example.test\r\nMessage-ID: <bomb@x>\r\nMIME-Version: 1.0\r\n",
    );
    for i in 0..1000 {
        bomb.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    bomb.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
    let big = {
        let mut m = String::from(
            "From: a@example.test\r\nTo: xyz@bridge.example.test\r\nMessage-ID: <big@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        let line = "A".repeat(76);
        for _ in 0..(42 * 1024 * 1024 / 78) {
            m.push_str(&line);
            m.push_str("\r\n");
        }
        m.push_str("--B--\r\n");
        m.into_bytes()
    };
    for raw in [garbage, forged, bomb.into_bytes(), big] {
        sink.accept(mail(raw)).await.expect("accepted and kept");
        n += 1;
    }
    let kept = store
        .quarantine_count(SideName::EMAIL)
        .await
        .expect("count");
    assert!(
        kept >= 4,
        "the four generated mails are kept, got {kept} of {n}"
    );
    let forged_reasons = store
        .quarantine_reasons(SideName::EMAIL, "forged-1@evil.example")
        .await
        .expect("reasons");
    assert!(
        forged_reasons.iter().any(|r| r.contains("forged")),
        "{forged_reasons:?}"
    );
    // Nothing from a stranger domain opened a chat.
    assert!(
        store.chats().await.expect("chats").is_empty(),
        "no chat from hostile senders"
    );
}

#[tokio::test]
async fn a_matrix_read_receipt_becomes_one_mdn_to_the_sender_who_asked() {
    use bridge_core::ir::{ChatLocator, Relation, RemoteEvent, UserRef};
    use coi_side::codec::OutgoingBody;
    use coi_side::outgoing::{NotSent, render};

    let t = TestBridge::new(&["matrix", "email"]).await.expect("bridge");
    let sink = MailSink::new(config(), t.router());
    let asking = "From: \"Alice\" <alice@example.test>\r\nTo: <xyz@bridge.example.test>\r\n\
        Message-ID: <ask-1@example.test>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nSubject: Plans\r\n\
        Chat-Version: 1.0\r\nChat-Disposition-Notification-To: alice@example.test\r\n\r\nRead this, please\r\n";
    let plain = "From: \"Alice\" <alice@example.test>\r\nTo: <xyz@bridge.example.test>\r\n\
        Message-ID: <plain-1@example.test>\r\nDate: Tue, 01 Dec 2026 10:01:00 +0000\r\nSubject: Re: Plans\r\n\
        In-Reply-To: <ask-1@example.test>\r\nChat-Version: 1.0\r\n\r\nNo receipt needed\r\n";
    for raw in [asking, plain] {
        sink.accept(mail(raw.as_bytes().to_vec()))
            .await
            .expect("accept");
    }
    t.bridge.drain_once(SideName::MATRIX).await.expect("drain");
    let m = t.side("matrix").expect("matrix").delivered();
    assert_eq!(m.len(), 2);
    let room = format!("matrix-chat-{}", m[0].chat.group_id);
    let receipt = |id: &str, reader: &str, target: usize| RemoteEvent {
        side: SideName::MATRIX,
        remote_id: id.to_owned(),
        chat: ChatLocator {
            remote_chat_id: Some(room.clone()),
            ..ChatLocator::default()
        },
        sender: UserRef::new(SideName::MATRIX, reader, Some("Carol".into())),
        ts_ms: 1_800_000_000_000,
        kind: EventKind::Receipt {
            targets: vec![Relation::remote(format!(
                "matrix-{}",
                m[target].message_uuid
            ))],
        },
        raw: None,
    };
    let router = t.router();
    router
        .ingest(receipt("rr-1", "@carol:matrix.test", 0))
        .await
        .expect("receipt");
    router
        .ingest(receipt("rr-2", "@carol:matrix.test", 0))
        .await
        .expect("the same reader again");
    router
        .ingest(receipt("rr-3", "@carol:matrix.test", 1))
        .await
        .expect("receipt for the plain one");
    t.bridge.drain_once(SideName::EMAIL).await.expect("drain");
    let e = t.side("email").expect("email").delivered();
    assert_eq!(e.len(), 2, "the repeated receipt is not queued again");

    let cfg = config();
    let mdn = render(&e[0], &cfg).expect("an MDN");
    assert_eq!(mdn.len(), 1);
    let carol = "=40carol=3amatrix.test@bridge.example.test";
    assert_eq!(mdn[0].mail.from.addr, carol);
    assert_eq!(mdn[0].rcpt_to, ["alice@example.test"]);
    assert_eq!(
        mdn[0].mail.body,
        OutgoingBody::Mdn {
            original_message_ids: vec!["ask-1@example.test".into()]
        }
    );
    let raw = coi_side::codec::build(&mdn[0].mail).expect("build");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("Original-Message-ID: <ask-1@example.test>\r\n"));
    assert!(text.contains("To: \"Alice\" <alice@example.test>\r\n"));
    assert!(matches!(render(&e[1], &cfg), Err(NotSent::Ignored(_))));
}
