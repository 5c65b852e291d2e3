//! Outbound mapping: a hub outbox item → one mail plus its envelope. Pure: no I/O, no store.
//!
//! Mails look like Delta Chat 2.65's unencrypted group messages (see the fixtures), so Delta Chat threads
//! them into the same group and classic clients thread them by References.

use crate::codec::{self, Mailbox, OutgoingAttachment, OutgoingBody, OutgoingEmail, OutgoingGroup};
use crate::config::{EmailConfig, PuppetMode};
use bridge_core::ir::{EventKind, MembershipChange, Part, UserRef};
use bridge_core::{MemberView, OutboxItem, PuppetId, SideName};

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

/// Renders an outbox item for the email side.
pub fn render(item: &OutboxItem, cfg: &EmailConfig) -> Result<Rendered, NotSent> {
    let bridge = Mailbox::new(cfg.bridge_name.clone(), cfg.bridge_address.clone());
    let mut puppet_links = Vec::new();
    let (from, sender) = match (&item.sender, cfg.mode) {
        (None, _) => (bridge.clone(), None),
        (Some(s), PuppetMode::Puppets) => {
            let addr = address_of(s, cfg);
            if s.remote_id_here.is_none() && s.origin_side != SideName::EMAIL.as_str() {
                puppet_links.push((s.puppet_id, addr.clone()));
            }
            (Mailbox::new(display(s), addr), None)
        }
        (Some(s), PuppetMode::Relay) => (
            Mailbox::new(display(s), cfg.bridge_address.clone()),
            Some(bridge.clone()),
        ),
    };
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
        EventKind::Reaction { target, key } => match &target.remote_id {
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
        EventKind::ChatInfo { name, topic } => match (name, topic) {
            (Some(_), _) => OutgoingBody::NameChanged {
                old_name: item.chat.name.clone(),
            },
            (None, Some(t)) => OutgoingBody::Text {
                text: format!("Chat description changed: {t}"),
                html: None,
                quote: None,
                forwarded: false,
            },
            (None, None) => return Err(NotSent::Ignored("no change".into())),
        },
        EventKind::Receipt { .. } => {
            return Err(NotSent::Ignored(
                "read receipts are not sent by email yet".into(),
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
    let message_id = format!(
        "{}@{}",
        item.message_uuid,
        cfg.mail_domain.to_ascii_lowercase()
    );
    if references.is_empty() {
        references.push(message_id.clone());
    }
    let subject = if in_reply_to.is_some() {
        format!("Re: {}", item.chat.name)
    } else {
        item.chat.name.clone()
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
            name: item.chat.name.clone(),
            name_timestamp: Some(item.chat.name_ts),
            member_timestamps: timestamps,
            past_members: past,
            description: None,
            description_timestamp: None,
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

    fn text(s: &str, reply: Option<Relation>) -> EventKind {
        EventKind::Message(MessageContent {
            parts: vec![Part::text(s)],
            reply_to: reply,
            wants_receipt: false,
        })
    }

    #[test]
    fn puppet_mode_sends_as_the_persons_address_only_to_email_people() {
        let r = render(&item(text("hi", None)), &cfg("puppets")).expect("render");
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
        let r = render(&item(text("hi", None)), &cfg("relay")).expect("render");
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
        let r = render(&item(text("yes", Some(rel.clone()))), &cfg("puppets")).expect("reply");
        assert_eq!(r.mail.in_reply_to.as_deref(), Some("orig@x"));
        assert!(matches!(&r.mail.body, OutgoingBody::Text { quote: Some(q), .. } if q == "old"));
        let e = EventKind::Edit {
            target: rel.clone(),
            content: MessageContent {
                parts: vec![Part::text("new")],
                ..MessageContent::default()
            },
        };
        let r = render(&item(e), &cfg("puppets")).expect("edit");
        assert!(
            matches!(&r.mail.body, OutgoingBody::Edit { target_id, new_text, .. } if target_id == "orig@x" && new_text == "new")
        );
        let r = render(
            &item(EventKind::Reaction {
                target: rel,
                key: "👍".into(),
            }),
            &cfg("puppets"),
        )
        .expect("reaction");
        assert_eq!(r.mail.in_reply_to.as_deref(), Some("orig@x"));
        let unknown = EventKind::Reaction {
            target: Relation::default(),
            key: "👍".into(),
        };
        assert!(
            render(&item(unknown), &cfg("puppets")).is_err(),
            "a reaction to a message email never saw is skipped"
        );
    }
}
