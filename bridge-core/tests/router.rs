//! In-process hub tests: fake sides over a real store (SQLite, and PostgreSQL when reachable).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bridge_core::ids::SideName;
use bridge_core::ir::{
    ChatLocator, EventKind, MembershipChange, MessageContent, Part, Relation, RemoteEvent, UserRef,
};
use bridge_core::testing::{FakeFailure, TestBridge, text_event};
use bridge_core::{IngestOutcome, Store};
use std::collections::BTreeSet;

async fn bridges() -> Vec<(&'static str, TestBridge)> {
    let mut v = Vec::new();
    for b in common::backends().await {
        let store: Store = b.store.clone();
        v.push((b.name, TestBridge::with_store(store, &["alpha", "beta"])));
        std::mem::forget(b); // keep temp dirs alive for the test's duration
    }
    v
}

fn reply(
    side: &'static str,
    chat: &str,
    sender: &str,
    id: &str,
    text: &str,
    to: &str,
) -> RemoteEvent {
    let mut ev = text_event(side, chat, sender, id, text);
    if let EventKind::Message(c) = &mut ev.kind {
        c.reply_to = Some(Relation::remote(to));
    }
    ev
}

fn with_kind(mut ev: RemoteEvent, kind: EventKind) -> RemoteEvent {
    ev.kind = kind;
    ev
}

#[tokio::test]
async fn message_reply_edit_reaction_redaction_flow_both_ways() {
    for (name, t) in bridges().await {
        let r = t.router();
        let alpha = t.side("alpha").expect("alpha");
        let beta = t.side("beta").expect("beta");
        let out = r
            .ingest(text_event("alpha", "room-1", "a1", "a-1", "hello"))
            .await
            .expect("ingest");
        let IngestOutcome::Committed {
            new_chat: true,
            chat,
            ..
        } = out
        else {
            panic!("{name}: {out:?}")
        };
        // Duplicate input: nothing new.
        assert!(matches!(
            r.ingest(text_event("alpha", "room-1", "a1", "a-1", "hello"))
                .await
                .expect("dup"),
            IngestOutcome::Duplicate { .. }
        ));
        let st = t.bridge.drain_once(SideName("beta")).await.expect("drain");
        assert_eq!(st.delivered, 1, "{name}");
        let d = beta.delivered();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].chat.remote_chat_id, None, "beta had no portal yet");
        assert_eq!(
            d[0].sender.as_ref().map(|s| s.native_id.as_str()),
            Some("a1")
        );
        // The fake side created a portal; a message from beta in it goes back to alpha as a reply.
        let beta_chat = t
            .bridge
            .store()
            .chat_link(chat, SideName("beta"))
            .await
            .expect("link")
            .expect("linked");
        let beta_msg_id = format!("beta-{}", d[0].message_uuid);
        let ev = reply("beta", &beta_chat, "b1", "b-1", "hi back", &beta_msg_id);
        assert!(matches!(
            r.ingest(ev).await.expect("ingest"),
            IngestOutcome::Committed {
                new_chat: false,
                ..
            }
        ));
        t.bridge.drain_once(SideName("alpha")).await.expect("drain");
        let a = alpha.delivered();
        assert_eq!(a.len(), 1, "{name}");
        let EventKind::Message(c) = &a[0].event else {
            panic!()
        };
        let rt = c.reply_to.as_ref().expect("reply kept");
        assert_eq!(
            rt.remote_id.as_deref(),
            Some("a-1"),
            "reply target in alpha's ids"
        );
        assert_eq!(rt.excerpt.as_deref(), Some("hello"));
        assert_eq!(a[0].chat.remote_chat_id.as_deref(), Some("room-1"));

        // Edit of an edit points at the original.
        let content = |s: &str| MessageContent {
            parts: vec![Part::text(s)],
            ..MessageContent::default()
        };
        let e1 = with_kind(
            text_event("alpha", "room-1", "a1", "a-2", ""),
            EventKind::Edit {
                target: Relation::remote("a-1"),
                content: content("hello!"),
            },
        );
        let e2 = with_kind(
            text_event("alpha", "room-1", "a1", "a-3", ""),
            EventKind::Edit {
                target: Relation::remote("a-2"),
                content: content("hello!!"),
            },
        );
        r.ingest(e1).await.expect("edit");
        r.ingest(e2).await.expect("edit 2");
        // Reaction and retraction, then redaction.
        let re = with_kind(
            text_event("alpha", "room-1", "a1", "a-4", ""),
            EventKind::Reaction {
                target: Relation::remote("a-1"),
                key: "👍".into(),
                replaces: Vec::new(),
            },
        );
        r.ingest(re).await.expect("reaction");
        let rd = with_kind(
            text_event("alpha", "room-1", "a1", "a-5", ""),
            EventKind::Redaction {
                target: Relation::remote("a-1"),
            },
        );
        r.ingest(rd).await.expect("redaction");
        t.bridge.drain_once(SideName("beta")).await.expect("drain");
        let d = beta.delivered();
        assert_eq!(d.len(), 5, "{name}");
        for item in &d[1..3] {
            let EventKind::Edit { target, .. } = &item.event else {
                panic!("{:?}", item.event)
            };
            assert_eq!(
                target.remote_id.as_deref(),
                Some(beta_msg_id.as_str()),
                "edits target the original"
            );
        }
        let EventKind::Reaction { target, key, .. } = &d[3].event else {
            panic!()
        };
        assert_eq!(
            (target.remote_id.as_deref(), key.as_str()),
            (Some(beta_msg_id.as_str()), "👍")
        );
        assert!(matches!(&d[4].event, EventKind::Redaction { .. }));
        // Thread bookkeeping for the side.
        assert_eq!(d[4].chat.thread_root.as_deref(), Some(beta_msg_id.as_str()));
        let msg = t
            .bridge
            .store()
            .message_by_link(SideName("alpha"), "a-1")
            .await
            .expect("q")
            .expect("m");
        assert_eq!(
            t.bridge
                .store()
                .reactions(msg)
                .await
                .expect("reactions")
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn unknown_chat_without_permission_is_quarantined_not_dropped() {
    for (name, t) in bridges().await {
        let mut ev = text_event("alpha", "room-x", "stranger", "a-9", "spam?");
        ev.chat.create = None;
        ev.raw = Some(b"raw bytes".to_vec());
        let out = t.router().ingest(ev).await.expect("ingest");
        assert!(
            matches!(out, IngestOutcome::Quarantined { .. }),
            "{name}: {out:?}"
        );
        let reasons = t
            .bridge
            .store()
            .quarantine_reasons(SideName("alpha"), "a-9")
            .await
            .expect("q");
        assert_eq!(reasons.len(), 1);
        assert_eq!(
            t.bridge
                .store()
                .outbox_count(SideName("beta"), "pending")
                .await
                .expect("count"),
            0
        );
    }
}

#[tokio::test]
async fn chat_found_by_references_and_by_name_and_members() {
    for (name, t) in bridges().await {
        let r = t.router();
        let a = UserRef::new(SideName("alpha"), "a1", None);
        let b = UserRef::new(SideName("alpha"), "b1", None);
        let mut first = text_event("alpha", "thread-root", "a1", "<root@x>", "first");
        first.chat.remote_chat_id = None;
        if let Some(nc) = first.chat.create.as_mut() {
            nc.members = vec![a.clone(), b.clone()];
            nc.name = "Group".into();
            nc.remote_chat_id = None;
        }
        let IngestOutcome::Committed { chat, .. } = r.ingest(first).await.expect("first") else {
            panic!()
        };
        // By references.
        let mut second = text_event("alpha", "ignored", "b1", "<second@x>", "second");
        second.chat = ChatLocator {
            via_messages: vec!["<root@x>".into()],
            ..ChatLocator::default()
        };
        let IngestOutcome::Committed { chat: c2, .. } = r.ingest(second).await.expect("second")
        else {
            panic!()
        };
        assert_eq!(chat, c2, "{name}");
        // By name and exact members.
        let mut third = text_event("alpha", "ignored", "b1", "<third@x>", "third");
        third.chat = ChatLocator {
            name_and_members: Some(("Group".into(), BTreeSet::from([a.clone(), b.clone()]))),
            ..ChatLocator::default()
        };
        let IngestOutcome::Committed { chat: c3, .. } = r.ingest(third).await.expect("third")
        else {
            panic!()
        };
        assert_eq!(chat, c3);
        // A different member set does not match.
        let mut fourth = text_event("alpha", "ignored", "b1", "<fourth@x>", "fourth");
        fourth.chat = ChatLocator {
            name_and_members: Some(("Group".into(), BTreeSet::from([a.clone()]))),
            ..ChatLocator::default()
        };
        assert!(matches!(
            r.ingest(fourth).await.expect("fourth"),
            IngestOutcome::Quarantined { .. }
        ));
    }
}

#[tokio::test]
async fn retries_keep_per_chat_order_and_permanent_failure_tells_the_origin() {
    for (name, t) in bridges().await {
        let r = t.router();
        let beta = t.side("beta").expect("beta");
        let alpha = t.side("alpha").expect("alpha");
        for i in 0..3 {
            r.ingest(text_event(
                "alpha",
                "room-o",
                "a1",
                &format!("o-{i}"),
                &format!("m{i}"),
            ))
            .await
            .expect("ingest");
        }
        beta.script([Err(FakeFailure::Retry)]);
        let st = t.bridge.drain_once(SideName("beta")).await.expect("drain");
        assert_eq!(
            (st.delivered, st.retried),
            (0, 1),
            "{name}: the chat stops at the failed row"
        );
        let st = t.bridge.drain_once(SideName("beta")).await.expect("drain");
        assert_eq!(st.delivered, 3);
        let texts: Vec<String> = beta
            .delivered()
            .iter()
            .map(|d| match &d.event {
                EventKind::Message(c) => c.text(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2"]);
        // Permanent failure: row failed, a notice goes to alpha.
        beta.script([Err(FakeFailure::Permanent)]);
        r.ingest(text_event("alpha", "room-o", "a1", "o-9", "doomed"))
            .await
            .expect("ingest");
        t.bridge.drain_once(SideName("beta")).await.expect("drain");
        assert_eq!(
            t.bridge
                .store()
                .outbox_count(SideName("beta"), "failed")
                .await
                .expect("count"),
            1
        );
        t.bridge
            .drain_once(SideName("alpha"))
            .await
            .expect("drain alpha");
        let notices: Vec<_> = alpha
            .delivered()
            .into_iter()
            .filter(|d| matches!(d.event, EventKind::Notice { .. }))
            .collect();
        assert_eq!(notices.len(), 1, "{name}");
    }
}

#[tokio::test]
async fn membership_and_chat_info_changes_are_applied_and_bridged_once() {
    for (name, t) in bridges().await {
        let r = t.router();
        let beta = t.side("beta").expect("beta");
        let IngestOutcome::Committed { chat, .. } = r
            .ingest(text_event("alpha", "room-m", "a1", "m-1", "hi"))
            .await
            .expect("i")
        else {
            panic!()
        };
        let carol = UserRef::new(SideName("alpha"), "carol", Some("Carol".into()));
        for (i, change) in [
            MembershipChange::Join,
            MembershipChange::Join,
            MembershipChange::Leave,
        ]
        .into_iter()
        .enumerate()
        {
            let ev = with_kind(
                text_event("alpha", "room-m", "a1", &format!("m-j{i}"), ""),
                EventKind::Membership {
                    subject: carol.clone(),
                    change,
                },
            );
            r.ingest(ev).await.expect("membership");
        }
        let info = with_kind(
            text_event("alpha", "room-m", "a1", "m-n", ""),
            EventKind::ChatInfo {
                name: Some("New name".into()),
                topic: None,
            },
        );
        r.ingest(info).await.expect("info");
        t.bridge.drain_once(SideName("beta")).await.expect("drain");
        let kinds: Vec<&str> = beta.delivered().iter().map(|d| d.event.name()).collect();
        assert_eq!(
            kinds,
            ["message", "membership", "membership", "chat_info"],
            "{name}: the repeated join is not bridged"
        );
        assert_eq!(
            t.bridge.store().chat(chat).await.expect("chat").name,
            "New name"
        );
        let members = t
            .bridge
            .store()
            .members(chat, SideName("beta"))
            .await
            .expect("members");
        assert!(members.iter().any(|m| m.native_id == "carol" && !m.joined));
    }
}

/// A side that does not open portals (email) still gets a chat opened elsewhere once the chat has a
/// member from there, and the event that removes its last member; nothing before.
#[tokio::test]
async fn a_side_takes_part_through_its_members() {
    use bridge_core::testing::FakeSide;
    use bridge_core::{Bridge, Capabilities, RetryPolicy};
    use std::time::Duration;
    for b in common::backends().await {
        let alpha = FakeSide::new("alpha");
        let beta = FakeSide::with_capabilities(
            "beta",
            Capabilities {
                auto_portal: false,
                ..Capabilities::all()
            },
        );
        let bridge = Bridge::builder(b.store.clone())
            .retry(RetryPolicy {
                initial: Duration::from_millis(0),
                max: Duration::from_millis(0),
                max_attempts: 5,
            })
            .side(alpha.clone())
            .side(beta.clone())
            .build();
        let router = bridge.router();
        let room = format!("room-{}", uuid::Uuid::new_v4().simple());
        let alice = UserRef::new(SideName("alpha"), "alice", None);
        let bob = UserRef::new(SideName("beta"), "bob@x", None);
        router
            .create_chat(
                "Team",
                "",
                Some((SideName("alpha"), &room)),
                std::slice::from_ref(&alice),
            )
            .await
            .unwrap();
        let drain = || async {
            bridge.drain_once(SideName("beta")).await.unwrap();
            beta.delivered()
                .iter()
                .map(|i| i.event.name())
                .collect::<Vec<_>>()
        };
        let id = |n: &str| format!("{room}-{n}");
        router
            .ingest(text_event(
                "alpha",
                &room,
                "alice",
                &id("m1"),
                "nobody there",
            ))
            .await
            .unwrap();
        assert!(drain().await.is_empty(), "no member on beta yet");
        let member = |change| {
            with_kind(
                text_event("alpha", &room, "alice", "", ""),
                EventKind::Membership {
                    subject: bob.clone(),
                    change,
                },
            )
        };
        let mut join = member(MembershipChange::Join);
        join.remote_id = id("join");
        router.ingest(join).await.unwrap();
        router
            .ingest(text_event("alpha", &room, "alice", &id("m2"), "hi bob"))
            .await
            .unwrap();
        assert_eq!(drain().await, vec!["membership", "message"], "{}", b.name);
        let mut leave = member(MembershipChange::Leave);
        leave.remote_id = id("leave");
        router.ingest(leave).await.unwrap();
        assert_eq!(
            drain().await,
            vec!["membership", "message", "membership"],
            "the leave of beta's last member reaches beta ({})",
            b.name
        );
        std::mem::forget(b);
    }
}

#[tokio::test]
async fn a_rename_is_delivered_with_the_chat_as_it_was_before_it() {
    for (name, t) in bridges().await {
        let r = t.router();
        let beta = t.side("beta").expect("beta");
        r.ingest(text_event("alpha", "room-n", "a1", "n-1", "first"))
            .await
            .expect("first");
        let info = |id: &str, name: Option<&str>, topic: Option<&str>| {
            with_kind(
                text_event("alpha", "room-n", "a1", id, ""),
                EventKind::ChatInfo {
                    name: name.map(str::to_owned),
                    topic: topic.map(str::to_owned),
                },
            )
        };
        r.ingest(info("n-2", Some("Second name"), None))
            .await
            .expect("rename");
        r.ingest(text_event("alpha", "room-n", "a1", "n-3", "after"))
            .await
            .expect("after");
        r.ingest(info("n-4", None, Some("A topic")))
            .await
            .expect("topic");
        r.ingest(info("n-5", Some("Third name"), None))
            .await
            .expect("rename again");
        r.ingest(text_event("alpha", "room-n", "a1", "n-6", "last"))
            .await
            .expect("last");
        // Drained only now: every item still sees the chat as it was when its event happened.
        t.bridge.drain_once(SideName("beta")).await.expect("drain");
        let d = beta.delivered();
        let seen: Vec<(&str, String, String)> = d
            .iter()
            .map(|d| (d.event.name(), d.chat.name.clone(), d.chat.topic.clone()))
            .collect();
        let expected = [
            ("message", "room-n", ""),
            ("chat_info", "room-n", ""),
            ("message", "Second name", ""),
            ("chat_info", "Second name", ""),
            ("chat_info", "Second name", "A topic"),
            ("message", "Third name", "A topic"),
        ];
        assert_eq!(
            seen,
            expected
                .iter()
                .map(|(k, n, t)| (*k, (*n).to_owned(), (*t).to_owned()))
                .collect::<Vec<_>>(),
            "{name}"
        );
        assert!(matches!(
            &d[1].event,
            EventKind::ChatInfo { name: Some(n), topic: None } if n == "Second name"
        ));
        // The name timestamp moves with the name.
        assert!(d[1].chat.name_ts <= d[2].chat.name_ts, "{name}");
        // A repeated rename to the current name changes nothing and is not bridged.
        r.ingest(info("n-7", Some("Third name"), None))
            .await
            .expect("same name");
        t.bridge.drain_once(SideName("beta")).await.expect("drain");
        assert_eq!(beta.delivered().len(), 6, "{name}");
    }
}

#[tokio::test]
async fn receipts_name_the_targets_sender_and_request_and_go_out_once_per_reader() {
    for (name, t) in bridges().await {
        let r = t.router();
        let alpha = t.side("alpha").expect("alpha");
        let beta = t.side("beta").expect("beta");
        let mut asking = text_event("alpha", "room-r", "a1", "r-1", "please confirm");
        if let EventKind::Message(c) = &mut asking.kind {
            c.wants_receipt = true;
        }
        r.ingest(asking).await.expect("asking");
        r.ingest(text_event("alpha", "room-r", "a1", "r-2", "no need"))
            .await
            .expect("plain");
        t.bridge.drain_once(SideName("beta")).await.expect("drain");
        let d = beta.delivered();
        let beta_chat = format!("beta-chat-{}", d[0].chat.group_id);
        let on_beta: Vec<String> = d
            .iter()
            .map(|i| format!("beta-{}", i.message_uuid))
            .collect();
        let receipt = |reader: &str, id: &str, targets: &[&String]| {
            let mut ev = text_event("beta", &beta_chat, reader, id, "");
            ev.chat.create = None;
            with_kind(
                ev,
                EventKind::Receipt {
                    targets: targets.iter().map(|t| Relation::remote(*t)).collect(),
                },
            )
        };
        r.ingest(receipt("b1", "seen-1", &[&on_beta[0], &on_beta[1]]))
            .await
            .expect("receipt");
        t.bridge.drain_once(SideName("alpha")).await.expect("drain");
        let got = alpha.delivered();
        assert_eq!(got.len(), 1, "{name}");
        let EventKind::Receipt { targets } = &got[0].event else {
            panic!("{name}: {:?}", got[0].event)
        };
        type Seen<'a> = (Option<&'a str>, bool, Option<&'a str>, Option<&'a str>);
        let view: Vec<Seen<'_>> = targets
            .iter()
            .map(|t| {
                (
                    t.remote_id.as_deref(),
                    t.wants_receipt,
                    t.sender_remote_id.as_deref(),
                    t.sender_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                (Some("r-1"), true, Some("a1"), Some("a1")),
                (Some("r-2"), false, Some("a1"), Some("a1")),
            ],
            "{name}"
        );
        assert_eq!(
            got[0].sender.as_ref().map(|s| s.native_id.as_str()),
            Some("b1"),
            "the reader"
        );

        // The same reader again (a new receipt id, e.g. after a reconnect): nothing new to send.
        let again = r
            .ingest(receipt("b1", "seen-2", &[&on_beta[0]]))
            .await
            .expect("again");
        assert!(matches!(again, IngestOutcome::Committed { .. }), "{name}");
        // Another reader gets their own.
        r.ingest(receipt("b2", "seen-3", &[&on_beta[0]]))
            .await
            .expect("other reader");
        t.bridge.drain_once(SideName("alpha")).await.expect("drain");
        let got = alpha.delivered();
        assert_eq!(got.len(), 2, "{name}: the repeat is not bridged");
        assert_eq!(
            got[1].sender.as_ref().map(|s| s.native_id.as_str()),
            Some("b2")
        );
    }
}

/// Reactions: where a person holds one reaction per message (beta), a new one replaces the earlier
/// and the other sides learn which event it replaces; where several are allowed (alpha, like
/// Matrix) they add up, and deleting one's own reaction event takes just that one back.
#[tokio::test]
async fn reactions_replace_add_up_and_are_taken_back() {
    use bridge_core::testing::FakeSide;
    use bridge_core::{Bridge, Capabilities, RetryPolicy};
    use std::time::Duration;
    for b in common::backends().await {
        let alpha = FakeSide::with_capabilities(
            "alpha",
            Capabilities {
                multiple_reactions: true,
                ..Capabilities::all()
            },
        );
        let beta = FakeSide::new("beta");
        let bridge = Bridge::builder(b.store.clone())
            .retry(RetryPolicy {
                initial: Duration::from_millis(0),
                max: Duration::from_millis(0),
                max_attempts: 5,
            })
            .side(alpha.clone())
            .side(beta.clone())
            .build();
        let r = bridge.router();
        let room = format!("room-{}", uuid::Uuid::new_v4().simple());
        let id = |n: &str| format!("{room}-{n}");
        r.ingest(text_event("alpha", &room, "a1", &id("m"), "hello"))
            .await
            .unwrap();
        bridge.drain_once(SideName("beta")).await.unwrap();
        let beta_m = beta.delivered()[0].message_uuid.clone();
        // The chat as beta knows it (the fake side links it on first delivery).
        let beta_room = format!("beta-chat-{}", beta.delivered()[0].chat.group_id);
        let react = |side: &'static str, who: &str, rid: &str, target: &str, key: &str| {
            let chat = if side == "beta" { &beta_room } else { &room };
            with_kind(
                text_event(side, chat, who, rid, ""),
                EventKind::Reaction {
                    target: Relation::remote(target),
                    key: key.into(),
                    replaces: Vec::new(),
                },
            )
        };
        let reaction_at = |side: &FakeSide, i: usize| match &side.delivered()[i].event {
            EventKind::Reaction { key, replaces, .. } => (
                key.clone(),
                replaces
                    .iter()
                    .map(|r| r.remote_id.clone().unwrap_or_default())
                    .collect::<Vec<_>>(),
            ),
            other => panic!("{other:?}"),
        };
        // beta's person reacts 👍 then ❤️: on alpha the ❤️ replaces the 👍 event alpha holds.
        let beta_target = format!("beta-{beta_m}");
        r.ingest(react("beta", "b1", &id("r1"), &beta_target, "👍"))
            .await
            .unwrap();
        r.ingest(react("beta", "b1", &id("r2"), &beta_target, "❤️"))
            .await
            .unwrap();
        // The same ❤️ again (another device): nothing to tell anyone.
        r.ingest(react("beta", "b1", &id("r2b"), &beta_target, "❤️"))
            .await
            .unwrap();
        bridge.drain_once(SideName("alpha")).await.unwrap();
        assert_eq!(alpha.delivered().len(), 2, "{}", b.name);
        let first = alpha.delivered()[0].message_uuid.clone();
        assert_eq!(reaction_at(&alpha, 0), ("👍".to_owned(), vec![]));
        assert_eq!(
            reaction_at(&alpha, 1),
            ("❤️".to_owned(), vec![format!("alpha-{first}")]),
            "{}",
            b.name
        );
        // An empty reaction takes the ❤️ back.
        r.ingest(react("beta", "b1", &id("r3"), &beta_target, ""))
            .await
            .unwrap();
        bridge.drain_once(SideName("alpha")).await.unwrap();
        let second = alpha.delivered()[1].message_uuid.clone();
        assert_eq!(
            reaction_at(&alpha, 2),
            (String::new(), vec![format!("alpha-{second}")])
        );

        // alpha's person adds 👍 and 🎉 (both stay: nothing replaced), then deletes the 🎉 event:
        // beta hears "their reaction is 👍 now".
        r.ingest(react("alpha", "a1", &id("x1"), &id("m"), "👍"))
            .await
            .unwrap();
        r.ingest(react("alpha", "a1", &id("x2"), &id("m"), "🎉"))
            .await
            .unwrap();
        r.ingest(with_kind(
            text_event("alpha", &room, "a1", &id("x3"), ""),
            EventKind::Redaction {
                target: Relation::remote(id("x2")),
            },
        ))
        .await
        .unwrap();
        bridge.drain_once(SideName("beta")).await.unwrap();
        assert_eq!(reaction_at(&beta, 1), ("👍".to_owned(), vec![]));
        assert_eq!(reaction_at(&beta, 2), ("🎉".to_owned(), vec![]));
        let (key, replaced) = reaction_at(&beta, 3);
        assert_eq!(key, "👍", "the redaction became a reaction change");
        assert_eq!(replaced.len(), 1);
        assert!(replaced[0].starts_with("beta-"), "{replaced:?}");
        std::mem::forget(b);
    }
}

/// Files handed over with a `source` are fetched from their origin when delivered: the target
/// gets the bytes; a transient failure retries the delivery; a file that cannot be had becomes a
/// line naming it, and the origin's chat is told.
#[tokio::test]
async fn attachments_are_fetched_from_their_origin_at_delivery() {
    use async_trait::async_trait;
    use bridge_core::ir::AttachmentKind;
    use bridge_core::testing::FakeSide;
    use bridge_core::{
        Bridge, Capabilities, Delivered, Fetched, OutboxItem, RetryPolicy, Side, SideError,
    };
    use std::sync::Mutex;
    use std::time::Duration;

    struct Origin {
        inner: std::sync::Arc<FakeSide>,
        slow_failures: Mutex<u32>,
    }
    #[async_trait]
    impl Side for Origin {
        fn name(&self) -> SideName {
            SideName("alpha")
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::all()
        }
        async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
            self.inner.deliver(item).await
        }
        async fn fetch_media(&self, source: &str) -> Result<Fetched, SideError> {
            match source {
                "src://ok" => Ok(Fetched {
                    data: b"PNGDATA".to_vec(),
                    mime_type: Some("image/png".into()),
                }),
                "src://down" => Err(SideError::retry("media server down")),
                "src://slow" => {
                    let mut n = self.slow_failures.lock().unwrap();
                    if *n == 0 {
                        *n += 1;
                        return Err(SideError::retry("media server busy"));
                    }
                    Ok(Fetched {
                        data: b"LATE".to_vec(),
                        mime_type: None,
                    })
                }
                _ => Err(SideError::Permanent("it is gone".into())),
            }
        }
    }

    for b in common::backends().await {
        let recorder = FakeSide::new("alpha");
        let origin = std::sync::Arc::new(Origin {
            inner: recorder.clone(),
            slow_failures: Mutex::new(0),
        });
        let beta = FakeSide::new("beta");
        let bridge = Bridge::builder(b.store.clone())
            .retry(RetryPolicy {
                initial: Duration::from_millis(0),
                max: Duration::from_millis(0),
                max_attempts: 5,
            })
            .side(origin.clone())
            .side(beta.clone())
            .build();
        let r = bridge.router();
        let room = format!("room-{}", uuid::Uuid::new_v4().simple());
        let file = |id: &str, src: &str| {
            with_kind(
                text_event("alpha", &room, "a1", &format!("{room}-{id}"), ""),
                EventKind::Message(MessageContent {
                    parts: vec![Part::Attachment {
                        filename: format!("{id}.png"),
                        mime_type: "application/octet-stream".into(),
                        kind: AttachmentKind::Image,
                        data: Vec::new(),
                        duration_ms: None,
                        source: Some(src.into()),
                    }],
                    ..MessageContent::default()
                }),
            )
        };
        r.ingest(file("ok", "src://ok")).await.unwrap();
        r.ingest(file("slow", "src://slow")).await.unwrap();
        r.ingest(file("gone", "src://gone")).await.unwrap();
        // The target fails once on the message whose file is gone: still one notice, below.
        beta.script([
            Ok(()),
            Ok(()),
            Err(bridge_core::testing::FakeFailure::Retry),
        ]);
        let first = bridge.drain_once(SideName("beta")).await.unwrap();
        assert_eq!((first.delivered, first.retried), (1, 1), "{}", b.name);
        bridge.drain_once(SideName("beta")).await.unwrap();
        bridge.drain_once(SideName("beta")).await.unwrap();
        let got: Vec<Part> = beta
            .delivered()
            .into_iter()
            .filter_map(|i| match i.event {
                EventKind::Message(c) => c.parts.into_iter().next(),
                _ => None,
            })
            .collect();
        assert!(
            matches!(&got[0], Part::Attachment { data, mime_type, .. }
                if data == b"PNGDATA" && mime_type == "image/png"),
            "{got:?}"
        );
        assert!(
            matches!(&got[1], Part::Attachment { data, .. } if data == b"LATE"),
            "retried, then fetched: {got:?}"
        );
        assert!(
            matches!(&got[2], Part::Text { body, .. } if body.contains("gone.png") && body.contains("it is gone")),
            "{got:?}"
        );
        // The origin's people learn that the file did not make it.
        bridge.drain_once(SideName("alpha")).await.unwrap();
        let told = |name: &str| {
            recorder
                .delivered()
                .iter()
                .filter(|i| matches!(&i.event, EventKind::Notice { text } if text.contains(name)))
                .count()
        };
        assert_eq!(told("gone.png"), 1, "told once, despite the retry");
        // A media server that stays down: on the last attempt the file is named and the message
        // (its other parts) still arrives.
        r.ingest(file("down", "src://down")).await.unwrap();
        for _ in 0..5 {
            bridge.drain_once(SideName("beta")).await.unwrap();
        }
        assert!(
            beta.delivered()
                .iter()
                .any(|i| matches!(&i.event, EventKind::Message(c)
                if matches!(&c.parts[..], [Part::Text { body, .. }] if body.contains("down.png")))),
            "{:?}",
            beta.delivered().last()
        );
        bridge.drain_once(SideName("alpha")).await.unwrap();
        assert_eq!(told("down.png"), 1);
        std::mem::forget(b);
    }
}
