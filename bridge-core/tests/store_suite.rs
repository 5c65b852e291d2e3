//! The store test suite, run on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bridge_core::ids::SideName;
use bridge_core::ir::{EventKind, MessageContent, Part, UserRef};
use bridge_core::store::Dialect;
use bridge_core::{MessageId, Store};

const EMAIL: SideName = SideName::EMAIL;
const MATRIX: SideName = SideName::MATRIX;

#[test]
fn both_dialects_list_the_same_migration_versions() {
    let lite = Store::migration_versions(Dialect::Sqlite);
    let pg = Store::migration_versions(Dialect::Postgres);
    assert!(!lite.is_empty());
    assert_eq!(lite, pg);
    // And the folders hold the same file names.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let names = |d: &str| {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(d))
            .expect("read migrations")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("sqlite"), names("postgres"));
}

fn text(s: &str) -> EventKind {
    EventKind::Message(MessageContent {
        parts: vec![Part::text(s)],
        ..MessageContent::default()
    })
}

#[tokio::test]
async fn store_suite() {
    for b in common::backends().await {
        eprintln!("store suite on {}", b.name);
        let s = &b.store;
        // Migrations are idempotent.
        s.migrate().await.expect("second migrate");

        // Puppets: one per remote id, display names update.
        let mut tx = s.begin().await.expect("begin");
        let alice = UserRef::new(EMAIL, "alice@example.test", Some("Alice".into()));
        let p1 = tx.ensure_puppet(&alice).await.expect("puppet");
        let p2 = tx
            .ensure_puppet(&UserRef::new(
                EMAIL,
                "alice@example.test",
                Some("Alice L.".into()),
            ))
            .await
            .expect("puppet again");
        assert_eq!(p1, p2, "{}", b.name);
        let v = tx.member_view(p1, MATRIX).await.expect("view");
        assert_eq!(v.display_name, "Alice L.");
        assert_eq!(v.native_id, "alice@example.test");
        assert_eq!(v.remote_id_here, None);
        tx.link_puppet(p1, MATRIX, "@_coi_alice:matrix.test")
            .await
            .expect("link");
        let v = tx.member_view(p1, MATRIX).await.expect("view");
        assert_eq!(v.remote_id_here.as_deref(), Some("@_coi_alice:matrix.test"));

        // Chats: links are unique per side.
        let c1 = tx
            .create_chat("gid-1-aaaaaaaaaaaa", "Spike Group", "", 1)
            .await
            .expect("chat");
        let c2 = tx
            .create_chat("gid-2-aaaaaaaaaaaa", "Other", "", 1)
            .await
            .expect("chat");
        tx.link_chat(c1, MATRIX, "!room:matrix.test")
            .await
            .expect("link chat");
        tx.link_chat(c2, MATRIX, "!room:matrix.test")
            .await
            .expect("conflicting link is ignored");
        assert_eq!(
            tx.chat_by_link(MATRIX, "!room:matrix.test")
                .await
                .expect("lookup"),
            Some(c1)
        );
        assert!(tx.set_member(c1, p1, true, 10).await.expect("member"));
        assert!(!tx.set_member(c1, p1, true, 11).await.expect("member again"));
        assert_eq!(tx.member_set(c1).await.expect("set").len(), 1);

        // Messages: remote ids are unique per side.
        let m1 = tx
            .insert_message("uuid-1", c1, Some(p1), "email", &text("hi"), None, 1000)
            .await
            .expect("message");
        tx.link_message(m1, EMAIL, "<m1@localhost>", "")
            .await
            .expect("link msg");
        tx.link_message(m1, EMAIL, "<m1@localhost>", "")
            .await
            .expect("idempotent link");
        let m2 = tx
            .insert_message("uuid-2", c1, Some(p1), "email", &text("again"), None, 1001)
            .await
            .expect("message 2");
        tx.link_message(m2, EMAIL, "<m1@localhost>", "")
            .await
            .expect("conflict ignored");
        assert_eq!(
            tx.message_by_link(EMAIL, "<m1@localhost>")
                .await
                .expect("lookup"),
            Some(m1)
        );
        assert_eq!(tx.chat_of_message(m1).await.expect("chat of"), Some(c1));
        let stored = tx.message(m1).await.expect("load");
        assert_eq!(stored.event, text("hi"));
        assert_eq!(stored.uuid, "uuid-1");
        // A second insert with the same uuid violates UNIQUE.
        tx.commit().await.expect("commit");
        let mut tx = s.begin().await.expect("begin");
        let err = tx
            .insert_message("uuid-1", c1, Some(p1), "email", &text("dup"), None, 1)
            .await
            .expect_err("duplicate uuid");
        assert!(err.is_unique_violation(), "{}: {err}", b.name);
        drop(tx);

        // Reactions: add, idempotent, remove all.
        let mut tx = s.begin().await.expect("begin");
        tx.set_reaction(m1, p1, "👍", m2).await.expect("react");
        tx.set_reaction(m1, p1, "👍", m2)
            .await
            .expect("react again");
        tx.commit().await.expect("commit");
        assert_eq!(
            s.reactions(m1).await.expect("reactions"),
            vec![(p1, "👍".to_owned())]
        );
        let mut tx = s.begin().await.expect("begin");
        tx.set_reaction(m1, p1, "", m2).await.expect("retract");
        tx.commit().await.expect("commit");
        assert!(s.reactions(m1).await.expect("reactions").is_empty());

        // Outbox: unique per side and message; states.
        let mut tx = s.begin().await.expect("begin");
        tx.enqueue("matrix", c1, m1).await.expect("enqueue");
        tx.enqueue("matrix", c1, m1)
            .await
            .expect("enqueue twice is one row");
        tx.enqueue("matrix", c1, m2).await.expect("enqueue 2");
        tx.commit().await.expect("commit");
        let rows = s.pending_outbox(MATRIX, 10).await.expect("pending");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].message_id, m1);
        s.retry_outbox(&rows[0], 5, "try later")
            .await
            .expect("retry");
        s.complete_outbox(
            &rows[1],
            MATRIX,
            &[(String::new(), "$ev2".into())],
            None,
            &[],
        )
        .await
        .expect("complete");
        assert_eq!(s.outbox_count(MATRIX, "done").await.expect("count"), 1);
        let rows = s.pending_outbox(MATRIX, 10).await.expect("pending");
        assert_eq!(
            (rows.len(), rows[0].attempts, rows[0].next_attempt_at),
            (1, 1, 5)
        );
        assert_eq!(
            s.message_by_link(MATRIX, "$ev2").await.expect("link"),
            Some(m2)
        );

        // Chat view: thread root and recent ids for a side.
        let view = s
            .chat_view(c1, EMAIL, MessageId(m2.0 + 1))
            .await
            .expect("view");
        assert_eq!(view.thread_root.as_deref(), Some("<m1@localhost>"));
        assert_eq!(view.recent, vec!["<m1@localhost>".to_owned()]);
        assert_eq!(view.remote_chat_id, None);
        assert_eq!(view.members.len(), 1);

        // Checkpoints and kv.
        assert_eq!(s.checkpoint("INBOX").await.expect("cp"), None);
        s.save_checkpoint("INBOX", 7, 42).await.expect("save");
        s.save_checkpoint("INBOX", 7, 43).await.expect("save");
        assert_eq!(s.checkpoint("INBOX").await.expect("cp"), Some((7, 43)));
        s.kv_set("k", "v1").await.expect("kv");
        s.kv_set("k", "v2").await.expect("kv");
        assert_eq!(s.kv_get("k").await.expect("kv").as_deref(), Some("v2"));

        // Quarantine keeps one row per (remote id, reason).
        assert!(
            s.quarantine(EMAIL, "<bad@x>", "unparsable", Some(b"raw"))
                .await
                .expect("q")
        );
        assert!(
            !s.quarantine(EMAIL, "<bad@x>", "unparsable", Some(b"raw"))
                .await
                .expect("q")
        );
        assert_eq!(s.quarantine_count(EMAIL).await.expect("count"), 1);
        s.close().await;
    }
}
