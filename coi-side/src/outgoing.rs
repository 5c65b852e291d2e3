//! Outbound mapping: a hub outbox item → its mails plus their envelopes. Pure: no I/O, no store.
//!
//! Mails look like Delta Chat 2.65's unencrypted group messages (see the fixtures), so Delta Chat threads
//! them into the same group and classic clients thread them by References. Read receipts become Delta
//! Chat MDNs, one per person whose messages were read.

use crate::codec::{self, Mailbox, OutgoingAttachment, OutgoingBody, OutgoingEmail, OutgoingGroup};
use crate::config::{EmailConfig, PuppetMode};
use bridge_core::ir::{EventKind, MembershipChange, Part, Relation, UserRef};
use bridge_core::{MemberView, OutboxItem, PuppetId, SideName};
use std::collections::BTreeMap;

/// A mail ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The mail.
    pub mail: OutgoingEmail,
    /// SMTP `MAIL FROM`.
    pub envelope_from: String,
    /// SMTP `RCPT TO`: the email people of the chat (never our own puppet addresses).
    pub rcpt_to: Vec<String>,
    /// Puppet addresses used for people, to link in the store.
    pub puppet_links: Vec<(PuppetId, String)>,
}

/// Why an item is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// Nothing to send on email (no email members, or an event email cannot carry).
    Ignored(String),
}

/// The address a person has on the email side: their own if email-native, else a puppet address.
pub fn address_of(m: &MemberView, cfg: &EmailConfig) -> String {
    if let Some(a) = &m.remote_id_here {
        return a.clone();
    }
    if m.origin_side == SideName::EMAIL.as_str() {
        return m.native_id.clone();
    }
    puppet_address(m.puppet_id, &m.native_id, cfg)
}

/// The puppet address of a non-email person: `<escaped native id>@mail_domain`, or `puppet-<n>@…` when too long.
pub fn puppet_address(puppet: PuppetId, native_id: &str, cfg: &EmailConfig) -> String {
    let local =
        codec::escape_localpart(native_id).unwrap_or_else(|_| format!("puppet-{}", puppet.0));
    format!("{local}@{}", cfg.mail_domain.to_ascii_lowercase())
}

fn display(m: &MemberView) -> String {
    if m.display_name.trim().is_empty() {
        m.native_id.clone()
    } else {
        m.display_name.clone()
    }
}

/// The Message-ID of the `n`th mail of an item: stable across retries, so receivers dedupe a resend.
fn message_id(item: &OutboxItem, n: usize, cfg: &EmailConfig) -> String {
    let domain = cfg.mail_domain.to_ascii_lowercase();
    if n == 0 {
        format!("{}@{domain}", item.message_uuid)
    } else {
        format!("{}.{n}@{domain}", item.message_uuid)
    }
}

/// `From` and `Sender` of a mail by the item's sender (the bridge itself for notices), plus the
/// puppet address to link when one was made up.
fn author(
    item: &OutboxItem,
    cfg: &EmailConfig,
) -> (Mailbox, Option<Mailbox>, Vec<(PuppetId, String)>) {
    let bridge = Mailbox::new(cfg.bridge_name.clone(), cfg.bridge_address.clone());
    let mut puppet_links = Vec::new();
    let (from, sender) = match (&item.sender, cfg.mode) {
        (None, _) => (bridge, None),
        (Some(s), PuppetMode::Puppets) => {
            let addr = address_of(s, cfg);
            if s.remote_id_here.is_none() && s.origin_side != SideName::EMAIL.as_str() {
                puppet_links.push((s.puppet_id, addr.clone()));
            }
            (Mailbox::new(display(s), addr), None)
        }
        (Some(s), PuppetMode::Relay) => (
            Mailbox::new(display(s), cfg.bridge_address.clone()),
            Some(bridge),
        ),
    };
    (from, sender, puppet_links)
}

/// Renders an outbox item for the email side: one mail, except for read receipts, which give one
/// MDN per person whose messages were read.
pub fn render(item: &OutboxItem, cfg: &EmailConfig) -> Result<Vec<Rendered>, NotSent> {
    match &item.event {
        EventKind::Receipt { targets } => render_receipts(item, targets, cfg),
        _ => render_group_mail(item, cfg).map(|r| vec![r]),
    }
}

/// Read receipts as Delta Chat MDNs, from the reader's address to each sender who asked for one.
///
/// Only targets that reached email, whose sender asked for a receipt (`wants_receipt`: the request named
/// the `From` address, checked on receipt) and who is an email person get one; the hub sends each
/// (reader, message) pair at most once.
fn render_receipts(
    item: &OutboxItem,
    targets: &[Relation],
    cfg: &EmailConfig,
) -> Result<Vec<Rendered>, NotSent> {
    if item.sender.is_none() {
        return Err(NotSent::Ignored("a read receipt without a reader".into()));
    }
    // recipient → (display name, acknowledged Message-IDs in target order)
    let mut by_rcpt: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for t in targets {
        let (true, Some(id), Some(addr)) = (t.wants_receipt, &t.remote_id, &t.sender_remote_id)
        else {
            continue;
        };
        let addr = addr.to_ascii_lowercase();
        if cfg.is_puppet_address(&addr) || addr == cfg.bridge_address.to_ascii_lowercase() {
            continue;
        }
        let entry = by_rcpt
            .entry(addr)
            .or_insert_with(|| (t.sender_name.clone().unwrap_or_default(), Vec::new()));
        if !entry.1.contains(id) {
            entry.1.push(id.clone());
        }
    }
    if by_rcpt.is_empty() {
        return Err(NotSent::Ignored(
            "none of the messages read asked for a read receipt".into(),
        ));
    }
    let (from, sender, mut puppet_links) = author(item, cfg);
    puppet_links.sort();
    Ok(by_rcpt
        .into_iter()
        .enumerate()
        .map(|(n, (addr, (name, ids)))| Rendered {
            mail: OutgoingEmail {
                from: from.clone(),
                sender: sender.clone(),
                to: vec![Mailbox::new(name, addr.clone())],
                date_unix: item.ts_ms / 1000,
                message_id: message_id(item, n, cfg),
                body: OutgoingBody::Mdn {
                    original_message_ids: ids,
                },
                ..OutgoingEmail::default()
            },
            envelope_from: from.addr.clone(),
            rcpt_to: vec![addr],
            puppet_links: puppet_links.clone(),
        })
        .collect())
}

/// An item as one group mail.
fn render_group_mail(item: &OutboxItem, cfg: &EmailConfig) -> Result<Rendered, NotSent> {
    let (from, sender, mut puppet_links) = author(item, cfg);
    let sender_puppet = item.sender.as_ref().map(|s| s.puppet_id);
    let mut to = Vec::new();
    let mut rcpt_to = Vec::new();
    let mut timestamps = Vec::new();
    let mut past = Vec::new();
    for m in &item.chat.members {
        if Some(m.puppet_id) == sender_puppet {
            continue;
        }
        let email_native =
            m.origin_side == SideName::EMAIL.as_str() && !cfg.is_puppet_address(&m.native_id);
        if !email_native && cfg.mode == PuppetMode::Relay {
            continue;
        }
        let addr = address_of(m, cfg);
        if !email_native && m.remote_id_here.is_none() {
            puppet_links.push((m.puppet_id, addr.clone()));
        }
        if m.joined {
            to.push(Mailbox::new(display(m), addr.clone()));
            timestamps.push(m.changed_ts);
            if email_native {
                rcpt_to.push(addr);
            }
        } else {
            past.push(Mailbox::new(display(m), addr));
        }
    }
    // A removed email member still gets the removal notice.
    if let EventKind::Membership {
        subject,
        change: MembershipChange::Leave,
    } = &item.event
        && let Some(m) = member_for(item, subject)
    {
        let addr = address_of(m, cfg);
        if m.origin_side == SideName::EMAIL.as_str()
            && !rcpt_to.contains(&addr)
            && !cfg.is_puppet_address(&addr)
        {
            rcpt_to.push(addr);
        }
    }
    if rcpt_to.is_empty() {
        return Err(NotSent::Ignored("the chat has no email members".into()));
    }
    timestamps.extend(
        item.chat
            .members
            .iter()
            .filter(|m| !m.joined)
            .map(|m| m.changed_ts),
    );

    // The chat view is the chat as of just before this event: a rename carries the new name itself.
    let (mut chat_name, mut name_ts) = (item.chat.name.clone(), item.chat.name_ts);
    let mut description = None;
    let mut in_reply_to = item.chat.recent.last().cloned();
    let mut attachments = Vec::new();
    let mut auto_submitted = None;
    let body = match &item.event {
        EventKind::Message(c) => {
            let mut text = String::new();
            let mut html = None;
            for p in &c.parts {
                match p {
                    Part::Text {
                        body,
                        html: h,
                        emote,
                        ..
                    } => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        if *emote {
                            text.push_str(&format!("* {} ", display_opt(item)));
                        }
                        text.push_str(body);
                        if h.is_some() {
                            html = h.clone();
                        }
                    }
                    Part::Attachment {
                        filename,
                        mime_type,
                        kind,
                        data,
                        duration_ms,
                        ..
                    } => attachments.push(OutgoingAttachment {
                        filename: filename.clone(),
                        mime_type: mime_type.clone(),
                        data: data.clone(),
                        voice_message: *kind == bridge_core::ir::AttachmentKind::Voice,
                        duration_ms: *duration_ms,
                        sticker: *kind == bridge_core::ir::AttachmentKind::Sticker,
                    }),
                }
            }
            let mut quote = None;
            if let Some(r) = &c.reply_to {
                if let Some(id) = &r.remote_id {
                    in_reply_to = Some(id.clone());
                }
                quote = r.excerpt.clone();
            }
            OutgoingBody::Text {
                text,
                html,
                quote,
                forwarded: false,
            }
        }
        EventKind::Edit { target, content } => match &target.remote_id {
            Some(id) => {
                in_reply_to = Some(id.clone());
                OutgoingBody::Edit {
                    target_id: id.clone(),
                    new_text: content.text(),
                    old_text: target.excerpt.clone(),
                }
            }
            None => OutgoingBody::Text {
                text: format!("✏️{}", content.text()),
                html: None,
                quote: target.excerpt.clone(),
                forwarded: false,
            },
        },
        EventKind::Redaction { target } => match &target.remote_id {
            Some(id) => OutgoingBody::Delete {
                target_ids: vec![id.clone()],
            },
            None => {
                return Err(NotSent::Ignored(
                    "the deleted message never reached email".into(),
                ));
            }
        },
        EventKind::Reaction { target, key, .. } => match &target.remote_id {
            Some(id) => {
                in_reply_to = Some(id.clone());
                OutgoingBody::Reaction { emoji: key.clone() }
            }
            None => {
                return Err(NotSent::Ignored(
                    "the message reacted to never reached email".into(),
                ));
            }
        },
        EventKind::Membership { subject, change } => {
            let addr = member_for(item, subject)
                .map(|m| address_of(m, cfg))
                .unwrap_or_else(|| subject.remote_id.clone());
            match change {
                MembershipChange::Join => OutgoingBody::MemberAdded { addr },
                MembershipChange::Leave => OutgoingBody::MemberRemoved { addr },
            }
        }
        EventKind::ChatInfo { name, topic } => {
            if let Some(t) = topic {
                description = Some(t.clone());
            }
            match name {
                Some(new_name) => {
                    chat_name = new_name.clone();
                    name_ts = item.ts_ms / 1000;
                    OutgoingBody::NameChanged {
                        old_name: item.chat.name.clone(),
                    }
                }
                None if topic.is_some() => OutgoingBody::DescriptionChanged,
                None => return Err(NotSent::Ignored("no change".into())),
            }
        }
        EventKind::Receipt { .. } => {
            return Err(NotSent::Ignored(
                "read receipts are rendered as MDNs".into(),
            ));
        }
        EventKind::Notice { text } => {
            auto_submitted = Some("auto-generated".to_owned());
            OutgoingBody::Text {
                text: text.clone(),
                html: None,
                quote: None,
                forwarded: false,
            }
        }
    };

    let mut references = Vec::new();
    if let Some(root) = &item.chat.thread_root {
        references.push(root.clone());
    }
    for r in item.chat.recent.iter().rev().take(2).rev() {
        if !references.contains(r) {
            references.push(r.clone());
        }
    }
    if let Some(p) = &in_reply_to
        && !references.contains(p)
    {
        references.push(p.clone());
    }
    while references.len() > 3 {
        references.remove(1);
    }
    let message_id = message_id(item, 0, cfg);
    if references.is_empty() {
        references.push(message_id.clone());
    }
    let subject = if in_reply_to.is_some() {
        format!("Re: {chat_name}")
    } else {
        chat_name.clone()
    };
    let envelope_from = from.addr.clone();
    let mail = OutgoingEmail {
        from,
        sender,
        to,
        date_unix: item.ts_ms / 1000,
        message_id,
        subject,
        in_reply_to,
        references,
        group: Some(OutgoingGroup {
            id: None,
            name: chat_name,
            name_timestamp: Some(name_ts),
            member_timestamps: timestamps,
            past_members: past,
            description_timestamp: description.as_ref().map(|_| item.ts_ms / 1000),
            description,
        }),
        auto_submitted,
        autocrypt: None,
        mdn_request_to: None,
        body,
        attachments,
    };
    puppet_links.sort();
    puppet_links.dedup();
    Ok(Rendered {
        mail,
        envelope_from,
        rcpt_to,
        puppet_links,
    })
}

fn display_opt(item: &OutboxItem) -> String {
    item.sender.as_ref().map(display).unwrap_or_default()
}

fn member_for<'a>(item: &'a OutboxItem, subject: &UserRef) -> Option<&'a MemberView> {
    item.chat.members.iter().find(|m| {
        (m.origin_side == subject.side.as_str() && m.native_id == subject.remote_id)
            || m.remote_id_here.as_deref() == Some(subject.remote_id.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::ir::{MessageContent, Part, Relation};
    use bridge_core::{ChatId, ChatView, MessageId, OutboxId};

    fn cfg(mode: &str) -> EmailConfig {
        serde_json::from_value(serde_json::json!({
            "mail_domain": "bridge.example.test",
            "bridge_address": "bridge@example.test",
            "bridge_name": "The Bridge",
            "smtp_host": "127.0.0.1",
            "mode": mode,
        }))
        .expect("config")
    }

    fn member(id: i64, side: &str, native: &str, name: &str, joined: bool) -> MemberView {
        MemberView {
            puppet_id: PuppetId(id),
            display_name: name.into(),
            origin_side: side.into(),
            native_id: native.into(),
            remote_id_here: (side == "email").then(|| native.to_owned()),
            joined,
            changed_ts: 100 + id,
        }
    }

    fn item(event: EventKind) -> OutboxItem {
        let carol = member(3, "matrix", "@carol:matrix.test", "Carol", true);
        OutboxItem {
            outbox_id: OutboxId(1),
            attempts: 0,
            chat: ChatView {
                id: ChatId(1),
                group_id: "g".into(),
                name: "Spike Group".into(),
                name_ts: 5,
                topic: String::new(),
                remote_chat_id: Some("g".into()),
                members: vec![
                    member(1, "email", "alice@example.test", "Alice", true),
                    member(2, "email", "xyz@bridge.example.test", "XYZ", true),
                    carol.clone(),
                    member(4, "email", "gone@example.test", "Gone", false),
                ],
                thread_root: Some("root@x".into()),
                recent: vec!["a@x".into(), "b@x".into(), "c@x".into()],
            },
            message_id: MessageId(9),
            message_uuid: "uuid-9".into(),
            origin_side: "matrix".into(),
            sender: Some(carol),
            ts_ms: 1_000_000,
            event,
        }
    }

    /// The one mail an item renders to.
    fn one(item: &OutboxItem, cfg: &EmailConfig) -> Rendered {
        let mut mails = render(item, cfg).expect("render");
        assert_eq!(mails.len(), 1, "one mail");
        mails.remove(0)
    }

    fn text(s: &str, reply: Option<Relation>) -> EventKind {
        EventKind::Message(MessageContent {
            parts: vec![Part::text(s)],
            reply_to: reply,
            wants_receipt: false,
        })
    }

    #[test]
    fn puppet_mode_sends_as_the_persons_address_only_to_email_people() {
        let r = one(&item(text("hi", None)), &cfg("puppets"));
        assert_eq!(
            r.mail.from.addr,
            "=40carol=3amatrix.test@bridge.example.test"
        );
        assert_eq!(r.mail.from.name.as_deref(), Some("Carol"));
        assert_eq!(r.mail.sender, None);
        assert_eq!(r.envelope_from, r.mail.from.addr);
        assert_eq!(
            r.rcpt_to,
            vec!["alice@example.test".to_owned()],
            "never our own puppet addresses"
        );
        let to: Vec<&str> = r.mail.to.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(
            to,
            ["alice@example.test", "xyz@bridge.example.test"],
            "the member set Delta Chat sees"
        );
        assert_eq!(r.mail.subject, "Re: Spike Group");
        assert_eq!(
            r.mail.in_reply_to.as_deref(),
            Some("c@x"),
            "In-Reply-To the chat's latest message"
        );
        assert_eq!(
            r.mail.references,
            ["root@x", "b@x", "c@x"],
            "root plus the last two, at most three"
        );
        assert_eq!(
            r.mail.message_id, "uuid-9@bridge.example.test",
            "stable across retries"
        );
        let g = r.mail.group.as_ref().expect("group headers");
        assert_eq!(g.member_timestamps, [101, 102, 104]);
        assert_eq!(g.past_members.len(), 1);
        assert_eq!(
            r.puppet_links,
            [(
                PuppetId(3),
                "=40carol=3amatrix.test@bridge.example.test".to_owned()
            )]
        );
    }

    #[test]
    fn relay_mode_sends_from_the_bridge_with_the_persons_name() {
        let r = one(&item(text("hi", None)), &cfg("relay"));
        assert_eq!(r.mail.from.addr, "bridge@example.test");
        assert_eq!(r.mail.from.name.as_deref(), Some("Carol"));
        assert_eq!(
            r.mail.sender.as_ref().map(|s| s.addr.as_str()),
            Some("bridge@example.test")
        );
        let to: Vec<&str> = r.mail.to.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(
            to,
            ["alice@example.test"],
            "no puppet addresses in relay mode"
        );
    }

    #[test]
    fn replies_edits_and_reactions_point_at_the_email_ids() {
        let rel = Relation {
            remote_id: Some("orig@x".into()),
            message_id: Some(MessageId(1)),
            excerpt: Some("old".into()),
            sender_name: Some("Alice".into()),
            ..Relation::default()
        };
        let r = one(&item(text("yes", Some(rel.clone()))), &cfg("puppets"));
        assert_eq!(r.mail.in_reply_to.as_deref(), Some("orig@x"));
        assert!(matches!(&r.mail.body, OutgoingBody::Text { quote: Some(q), .. } if q == "old"));
        let e = EventKind::Edit {
            target: rel.clone(),
            content: MessageContent {
                parts: vec![Part::text("new")],
                ..MessageContent::default()
            },
        };
        let r = one(&item(e), &cfg("puppets"));
        assert!(
            matches!(&r.mail.body, OutgoingBody::Edit { target_id, new_text, .. } if target_id == "orig@x" && new_text == "new")
        );
        let r = one(
            &item(EventKind::Reaction {
                target: rel,
                key: "👍".into(),
                replaces: Vec::new(),
            }),
            &cfg("puppets"),
        );
        assert_eq!(r.mail.in_reply_to.as_deref(), Some("orig@x"));
        let unknown = EventKind::Reaction {
            target: Relation::default(),
            key: "👍".into(),
            replaces: Vec::new(),
        };
        assert!(
            render(&item(unknown), &cfg("puppets")).is_err(),
            "a reaction to a message email never saw is skipped"
        );
    }

    /// A receipt target as the hub hands it over: an email message by `addr`.
    fn read(id: &str, addr: &str, wants_receipt: bool) -> Relation {
        Relation {
            remote_id: Some(id.into()),
            message_id: Some(MessageId(1)),
            excerpt: Some("hello".into()),
            sender_name: Some("Alice".into()),
            sender_remote_id: Some(addr.into()),
            wants_receipt,
        }
    }

    fn receipt(targets: Vec<Relation>) -> EventKind {
        EventKind::Receipt { targets }
    }

    #[test]
    fn a_read_message_that_asked_gets_an_mdn_from_the_reader_to_its_sender() {
        let r = one(
            &item(receipt(vec![read("m1@dc", "alice@example.test", true)])),
            &cfg("puppets"),
        );
        let carol = "=40carol=3amatrix.test@bridge.example.test";
        assert_eq!(r.mail.from.addr, carol, "from the reader's puppet");
        assert_eq!(r.envelope_from, carol);
        assert_eq!(r.rcpt_to, ["alice@example.test"]);
        let to: Vec<&str> = r.mail.to.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(to, ["alice@example.test"], "only the sender, not the group");
        assert_eq!(r.mail.message_id, "uuid-9@bridge.example.test");
        assert_eq!(r.mail.group, None);
        assert_eq!(
            r.mail.body,
            OutgoingBody::Mdn {
                original_message_ids: vec!["m1@dc".into()]
            }
        );
        assert_eq!(r.puppet_links, [(PuppetId(3), carol.to_owned())]);

        let raw = codec::build(&r.mail).expect("build");
        let text = String::from_utf8_lossy(&raw);
        for line in [
            "From: \"Carol\" <=40carol=3amatrix.test@bridge.example.test>\r\n",
            "To: \"Alice\" <alice@example.test>\r\n",
            "Subject: Receipt Notification\r\n",
            "Chat-Version: 1.0\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "Original-Message-ID: <m1@dc>\r\n",
            "Disposition: manual-action/MDN-sent-automatically; displayed\r\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        assert!(text.contains("multipart/report"), "{text}");
        assert!(!text.contains("Additional-Message-IDs"), "{text}");
        assert!(!text.contains("Chat-Group-"), "{text}");
    }

    #[test]
    fn a_read_message_that_did_not_ask_gets_nothing() {
        let none = render(
            &item(receipt(vec![
                read("m1@dc", "alice@example.test", false),
                // never reached email, or the sender is one of our puppets, or unknown
                Relation {
                    remote_id: None,
                    ..read("m2@dc", "alice@example.test", true)
                },
                read("m3@dc", "xyz@bridge.example.test", true),
                Relation {
                    sender_remote_id: None,
                    ..read("m4@dc", "alice@example.test", true)
                },
            ])),
            &cfg("puppets"),
        );
        assert!(
            matches!(&none, Err(NotSent::Ignored(why)) if why.contains("read receipt")),
            "{none:?}"
        );

        // Only the targets that asked are acknowledged.
        let r = one(
            &item(receipt(vec![
                read("m1@dc", "alice@example.test", false),
                read("m5@dc", "alice@example.test", true),
            ])),
            &cfg("puppets"),
        );
        assert_eq!(
            r.mail.body,
            OutgoingBody::Mdn {
                original_message_ids: vec!["m5@dc".into()]
            }
        );
    }

    #[test]
    fn several_targets_give_one_mdn_per_sender_with_additional_message_ids() {
        let r = one(
            &item(receipt(vec![
                read("m1@dc", "alice@example.test", true),
                read("m2@dc", "Alice@Example.test", true),
                read("m3@dc", "alice@example.test", true),
                read("m2@dc", "alice@example.test", true),
            ])),
            &cfg("puppets"),
        );
        assert_eq!(
            r.mail.body,
            OutgoingBody::Mdn {
                original_message_ids: vec!["m1@dc".into(), "m2@dc".into(), "m3@dc".into()]
            }
        );
        let raw = codec::build(&r.mail).expect("build");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("Original-Message-ID: <m1@dc>\r\n"), "{text}");
        assert!(
            text.contains("Additional-Message-IDs: <m2@dc> <m3@dc>\r\n"),
            "{text}"
        );

        // Messages of two senders: one MDN each, with stable, distinct Message-IDs.
        let mails = render(
            &item(receipt(vec![
                read("m1@dc", "bob@example.test", true),
                read("m2@dc", "alice@example.test", true),
            ])),
            &cfg("puppets"),
        )
        .expect("render");
        let got: Vec<(&str, &[String], &str)> = mails
            .iter()
            .map(|m| {
                let OutgoingBody::Mdn {
                    original_message_ids,
                } = &m.mail.body
                else {
                    panic!("not an MDN")
                };
                (
                    m.rcpt_to[0].as_str(),
                    original_message_ids.as_slice(),
                    m.mail.message_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "alice@example.test",
                    &["m2@dc".to_owned()][..],
                    "uuid-9@bridge.example.test"
                ),
                (
                    "bob@example.test",
                    &["m1@dc".to_owned()][..],
                    "uuid-9.1@bridge.example.test"
                ),
            ]
        );
    }

    #[test]
    fn a_rename_carries_the_old_name_and_the_new_one() {
        // The hub's chat view is the chat as of just before the event: it still has the old name.
        let r = one(
            &item(EventKind::ChatInfo {
                name: Some("Renamed".into()),
                topic: None,
            }),
            &cfg("puppets"),
        );
        assert_eq!(
            r.mail.body,
            OutgoingBody::NameChanged {
                old_name: "Spike Group".into()
            }
        );
        let g = r.mail.group.as_ref().expect("group");
        assert_eq!(g.name, "Renamed");
        assert_eq!(g.name_timestamp, Some(1000), "the rename's own time");
        assert_eq!(g.description, None);
        assert_eq!(r.mail.subject, "Re: Renamed");
        let raw = codec::build(&r.mail).expect("build");
        let p = codec::parse(&raw, &codec::ParseLimits::default()).expect("parse");
        assert_eq!(p.group.name.as_deref(), Some("Renamed"));
        assert_eq!(p.group.name_changed_from.as_deref(), Some("Spike Group"));
    }

    #[test]
    fn a_topic_change_is_a_delta_chat_description_change() {
        let r = one(
            &item(EventKind::ChatInfo {
                name: None,
                topic: Some("Plans für 2026".into()),
            }),
            &cfg("puppets"),
        );
        assert_eq!(r.mail.body, OutgoingBody::DescriptionChanged);
        let g = r.mail.group.as_ref().expect("group");
        assert_eq!(g.name, "Spike Group");
        assert_eq!(g.name_timestamp, Some(5), "the name did not change");
        assert_eq!(g.description.as_deref(), Some("Plans für 2026"));
        assert_eq!(g.description_timestamp, Some(1000));
        let raw = codec::build(&r.mail).expect("build");
        let text = String::from_utf8_lossy(&raw);
        let changed = text
            .find("Chat-Group-Description-Changed:")
            .expect("changed");
        let desc = text
            .find("Chat-Group-Description: =?utf-8?B?")
            .expect("description");
        let ts = text
            .find("Chat-Group-Description-Timestamp: 1000\r\n")
            .expect("timestamp");
        assert!(changed < desc && desc < ts, "Delta Chat's order\n{text}");
        let p = codec::parse(&raw, &codec::ParseLimits::default()).expect("parse");
        assert!(p.group.description_changed);
        assert_eq!(p.group.description.as_deref(), Some("Plans für 2026"));
        assert_eq!(p.text, "Chat description changed:\n\nPlans für 2026");

        let cleared = one(
            &item(EventKind::ChatInfo {
                name: None,
                topic: Some(String::new()),
            }),
            &cfg("puppets"),
        );
        let raw = codec::build(&cleared.mail).expect("build");
        let p = codec::parse(&raw, &codec::ParseLimits::default()).expect("parse");
        assert_eq!(p.group.description.as_deref(), Some(""));
        assert_eq!(p.text, "Chat description removed.");
    }
}
