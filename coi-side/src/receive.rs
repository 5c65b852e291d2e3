//! Inbound mapping: a parsed mail → hub events. Pure: no I/O, no store.
//!
//! Chat assignment follows DESIGN §4 / the issue: a known Chat-Group-ID, else a linked message named in
//! In-Reply-To / References, else chat name plus exact member set (Delta Chat's unencrypted groups carry
//! no group id), else a new chat if the sender is allowed to open one.

use crate::codec::{self, Mailbox, ParsedEmail};
use crate::config::EmailConfig;
use bridge_core::SideName;
use bridge_core::ir::{
    AttachmentKind, ChatLocator, EventKind, MembershipChange, MessageContent, NewChat, Part,
    Relation, RemoteEvent, UserRef,
};
use std::collections::BTreeSet;

/// Why a mail produces no event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// From is one of the bridge's own addresses: an echo of our send if its Message-ID is linked, else forged.
    OwnAddress,
    /// Keep it in quarantine with this reason.
    Keep(String),
}

/// The dedupe key of a mail: its Message-ID, or a stable digest when it has none.
pub fn mail_key(parsed: &ParsedEmail, raw: &[u8]) -> String {
    match &parsed.message_id {
        Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => {
            // FNV-1a over the body after the header block: identical for the N copies one mail makes.
            let h = fnv1a(raw.get(find_body(raw)..).unwrap_or_default());
            let from = parsed.from.as_ref().map(|m| m.addr.as_str()).unwrap_or("");
            format!(
                "no-message-id.{h:016x}.{}@{}",
                parsed.date_unix.unwrap_or(0),
                from.replace('@', ".")
            )
        }
    }
}

/// FNV-1a, 64 bit: a stable digest for keys of mail that lacks a usable id.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn find_body(raw: &[u8]) -> usize {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len())
}

/// Strips reply / forward prefixes (`Re:`, `AW:`, `Fwd:`, …) from a subject, as Delta Chat does.
pub fn chat_name_from_subject(subject: &str) -> String {
    let mut s = subject.trim();
    while let Some((prefix, rest)) = s.split_once(':') {
        let is_prefix = !s.starts_with("Chat:")
            && !prefix.is_empty()
            && prefix.chars().count() <= 4
            && prefix.chars().all(char::is_alphabetic);
        if !is_prefix {
            break;
        }
        s = rest.trim_start();
    }
    s.to_owned()
}

/// The person behind an address. A puppet address that unescapes to a Matrix user id names that Matrix
/// user (so a Delta Chat group that includes `=40bob=3amatrix.org@bridge…` has Bob himself as member);
/// every other address is an email person (puppet addresses the bridge handed out are found through
/// their email link).
pub fn person(m: &Mailbox, cfg: &EmailConfig) -> UserRef {
    let addr = m.addr.to_ascii_lowercase();
    if cfg.is_puppet_address(&addr)
        && let Some((local, _)) = addr.rsplit_once('@')
        && let Some(id) = codec::unescape_localpart(local)
        && id.starts_with('@')
        && id.contains(':')
    {
        return UserRef::new(SideName::MATRIX, id, m.name.clone());
    }
    UserRef::new(SideName::EMAIL, addr, m.name.clone())
}

fn person_addr(addr: &str, cfg: &EmailConfig) -> UserRef {
    person(&Mailbox::addr_only(addr), cfg)
}

/// Maps a parsed mail to hub events (usually one; a multi-target Chat-Delete gives one per target).
pub fn to_events(
    parsed: &ParsedEmail,
    raw: &[u8],
    cfg: &EmailConfig,
    now_ms: i64,
) -> Result<Vec<RemoteEvent>, Skip> {
    let key = mail_key(parsed, raw);
    let Some(from) = parsed.from.as_ref().filter(|f| f.addr.contains('@')) else {
        return Err(Skip::Keep("no usable From address".into()));
    };
    let from_addr = from.addr.to_ascii_lowercase();
    if cfg.is_puppet_address(&from_addr) || from_addr == cfg.bridge_address.to_ascii_lowercase() {
        return Err(Skip::OwnAddress);
    }
    if parsed.is_encrypted {
        return Err(Skip::Keep(
            "OpenPGP-encrypted mail is not supported yet".into(),
        ));
    }
    let auto = parsed
        .auto_submitted
        .as_deref()
        .map(str::to_ascii_lowercase);
    if parsed.mdn.is_none()
        && auto
            .as_deref()
            .is_some_and(|a| a != "no" && a != "auto-generated")
    {
        return Err(Skip::Keep(format!(
            "automatic reply (Auto-Submitted: {})",
            auto.unwrap_or_default()
        )));
    }

    // Display name: Delta Chat's per-message name (From name with Sender = same account) is the From name.
    let sender = UserRef::new(SideName::EMAIL, from_addr.clone(), from.name.clone());
    let name = parsed
        .group
        .name
        .clone()
        .or_else(|| parsed.subject.as_deref().map(chat_name_from_subject))
        .unwrap_or_default();
    let mut members: BTreeSet<UserRef> = BTreeSet::new();
    members.insert(UserRef::new(SideName::EMAIL, from_addr.clone(), None));
    for m in parsed.to.iter().chain(parsed.cc.iter()) {
        let a = m.addr.to_ascii_lowercase();
        if a.contains('@') && a != cfg.bridge_address.to_ascii_lowercase() {
            members.insert(person_addr(&a, cfg));
        }
    }
    let addressed_to_bridge = parsed
        .to
        .iter()
        .chain(parsed.cc.iter())
        .map(|m| m.addr.to_ascii_lowercase())
        .chain(parsed.delivered_to.iter().map(|a| a.to_ascii_lowercase()))
        .any(|a| cfg.is_puppet_address(&a) || a == cfg.bridge_address.to_ascii_lowercase());
    let create = (addressed_to_bridge && cfg.may_open_chat(&from_addr)).then(|| NewChat {
        name: if name.is_empty() {
            "👥📧".to_owned()
        } else {
            name.clone()
        },
        topic: parsed.group.description.clone().unwrap_or_default(),
        members: parsed
            .to
            .iter()
            .chain(parsed.cc.iter())
            .filter(|m| !m.addr.eq_ignore_ascii_case(&cfg.bridge_address))
            .map(|m| person(m, cfg))
            .collect(),
        remote_chat_id: parsed.group.id.clone(),
    });
    let mut via = Vec::new();
    for id in parsed
        .in_reply_to
        .iter()
        .chain(parsed.references.iter().rev())
    {
        if !via.contains(id) {
            via.push(id.clone());
        }
    }
    let locator = match &parsed.mdn {
        // A read receipt belongs to the chat of the messages it acknowledges, and never opens one
        // (its Subject is "Receipt Notification", not a chat name).
        Some(mdn) => ChatLocator {
            remote_chat_id: parsed.group.id.clone(),
            via_messages: mdn
                .original_message_ids
                .iter()
                .chain(via.iter())
                .cloned()
                .collect(),
            name_and_members: None,
            create: None,
        },
        None => ChatLocator {
            remote_chat_id: parsed.group.id.clone(),
            via_messages: via,
            name_and_members: (!name.is_empty()).then(|| (name.clone(), members)),
            create,
        },
    };
    let ts_ms = parsed
        .date_unix
        .map(|d| d.saturating_mul(1000))
        .filter(|t| *t > 0)
        .unwrap_or(now_ms);
    let event = |remote_id: String, kind: EventKind| RemoteEvent {
        side: SideName::EMAIL,
        remote_id,
        chat: locator.clone(),
        sender: sender.clone(),
        ts_ms,
        kind,
        raw: Some(raw.to_vec()),
    };
    let first_parent = parsed.in_reply_to.first().cloned();

    if let Some(mdn) = &parsed.mdn {
        let targets = mdn
            .original_message_ids
            .iter()
            .map(|id| Relation::remote(id.clone()))
            .collect();
        return Ok(vec![event(key, EventKind::Receipt { targets })]);
    }
    if let Some(emoji) = &parsed.reaction {
        let Some(target) = first_parent else {
            return Err(Skip::Keep("reaction without In-Reply-To".into()));
        };
        return Ok(vec![event(
            key,
            EventKind::Reaction {
                target: Relation::remote(target),
                key: emoji.clone(),
                replaces: Vec::new(),
            },
        )]);
    }
    if !parsed.chat_delete.is_empty() {
        return Ok(parsed
            .chat_delete
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let id = if i == 0 {
                    key.clone()
                } else {
                    format!("{key}#delete{i}")
                };
                event(
                    id,
                    EventKind::Redaction {
                        target: Relation::remote(t.clone()),
                    },
                )
            })
            .collect());
    }
    if let Some(target) = &parsed.chat_edit {
        let text = parsed
            .text
            .trim_start_matches('\u{270f}')
            .trim_start_matches('\u{fe0f}')
            .trim_start()
            .to_owned();
        return Ok(vec![event(
            key,
            EventKind::Edit {
                target: Relation::remote(target.clone()),
                content: MessageContent {
                    parts: vec![Part::text(text)],
                    ..MessageContent::default()
                },
            },
        )]);
    }
    if let Some(addr) = &parsed.group.member_added {
        return Ok(vec![event(
            key,
            EventKind::Membership {
                subject: person_addr(addr, cfg),
                change: MembershipChange::Join,
            },
        )]);
    }
    if let Some(addr) = &parsed.group.member_removed {
        return Ok(vec![event(
            key,
            EventKind::Membership {
                subject: person_addr(addr, cfg),
                change: MembershipChange::Leave,
            },
        )]);
    }
    let name_changed = parsed.group.name_changed_from.is_some();
    if name_changed || parsed.group.description_changed {
        // Delta Chat 2.65+: `Chat-Group-Description-Changed` (empty) plus the new `Chat-Group-Description`.
        let topic = match (parsed.group.description_changed, &parsed.group.description) {
            (false, _) => None,
            (true, Some(d)) => Some(d.clone()),
            (true, None) => {
                return Err(Skip::Keep(
                    "description change without Chat-Group-Description".into(),
                ));
            }
        };
        let name = if name_changed {
            parsed.group.name.clone()
        } else {
            None
        };
        return Ok(vec![event(key, EventKind::ChatInfo { name, topic })]);
    }

    let mut parts = Vec::new();
    if !parsed.text.trim().is_empty() {
        parts.push(Part::Text {
            body: parsed.text.clone(),
            html: None,
            emote: false,
            notice: false,
        });
    }
    for a in &parsed.attachments {
        let kind = if a.sticker {
            AttachmentKind::Sticker
        } else if a.voice_message {
            AttachmentKind::Voice
        } else {
            AttachmentKind::from_mime(&a.mime_type)
        };
        parts.push(Part::Attachment {
            filename: a
                .filename
                .clone()
                .unwrap_or_else(|| "attachment".to_owned()),
            mime_type: a.mime_type.clone(),
            kind,
            data: a.data.clone(),
            duration_ms: a.duration_ms,
            source: None,
        });
    }
    if parts.is_empty() {
        return Err(Skip::Keep("no text and no attachment".into()));
    }
    // Delta Chat always sets In-Reply-To to the chat's last message; only a top quote marks a reply.
    let reply_to = parsed
        .top_quote
        .as_ref()
        .and(first_parent)
        .map(Relation::remote);
    Ok(vec![event(
        key,
        EventKind::Message(MessageContent {
            parts,
            reply_to,
            wants_receipt: parsed.mdn_requested_to().is_some(),
        }),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ParseLimits;

    fn cfg() -> EmailConfig {
        serde_json::from_value(serde_json::json!({
            "mail_domain": "bridge.example.test",
            "bridge_address": "bridge@example.test",
            "smtp_host": "127.0.0.1",
        }))
        .expect("config")
    }

    fn events(raw: &str) -> Vec<RemoteEvent> {
        let raw = raw.replace('\n', "\r\n");
        let parsed = codec::parse(raw.as_bytes(), &ParseLimits::default()).expect("parse");
        to_events(&parsed, raw.as_bytes(), &cfg(), 0).expect("events")
    }

    /// A group message by Alice to the bridge, with `extra` headers and `body`.
    fn group_mail(extra: &str, body: &str) -> String {
        format!(
            "From: \"Alice\" <alice@example.test>\n\
             Message-ID: <d1@localhost>\n\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=\"utf-8\"\n\
             Date: Tue, 01 Dec 2026 10:00:00 +0000\n\
             To: <xyz@bridge.example.test>\n\
             Subject: Re: Spike Group\n\
             In-Reply-To: <042b84ea@localhost>\n\
             References: <042b84ea@localhost>\n\
             Chat-Version: 1.0\n\
             Chat-Group-Name: Spike Group\n\
             Chat-Group-Name-Timestamp: 1795810854\n\
             {extra}\
             \n\
             {body}\n"
        )
    }

    #[test]
    fn a_delta_chat_description_change_is_a_topic_change() {
        // Shaped like Delta Chat's `mimefactory` (no captured fixture exists): the header has an empty
        // value, the new description comes RFC 2047 encoded, the body is a placeholder.
        let ev = events(&group_mail(
            "Chat-Group-Description-Changed: \n\
             Chat-Group-Description: =?utf-8?B?UGxhbnMgZsO8ciAyMDI2?=\n\
             Chat-Group-Description-Timestamp: 1795811000\n",
            "[Chat description changed. To see this and other new features, please update the app]",
        ));
        assert_eq!(ev.len(), 1);
        assert_eq!(
            ev[0].kind,
            EventKind::ChatInfo {
                name: None,
                topic: Some("Plans für 2026".into())
            }
        );
        assert_eq!(ev[0].remote_id, "d1@localhost");

        // Description sent along with other messages (member added, first message) is no change.
        let ev = events(&group_mail(
            "Chat-Group-Description: =?utf-8?B?UGxhbnMgZsO8ciAyMDI2?=\n",
            "Hello",
        ));
        assert!(matches!(&ev[0].kind, EventKind::Message(c) if c.text() == "Hello"));
    }

    #[test]
    fn a_read_receipt_finds_its_chat_by_the_messages_it_names_and_never_opens_one() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/classic/dc-mdn.eml"
        ))
        .expect("fixture");
        let parsed = codec::parse(&raw, &ParseLimits::default()).expect("parse");
        let ids = parsed
            .mdn
            .as_ref()
            .expect("an MDN")
            .original_message_ids
            .clone();
        let ev = to_events(&parsed, &raw, &cfg(), 0).expect("events");
        assert_eq!(ev.len(), 1);
        assert!(matches!(ev[0].kind, EventKind::Receipt { .. }));
        assert!(ev[0].chat.create.is_none(), "a receipt never opens a chat");
        assert!(ev[0].chat.name_and_members.is_none());
        assert!(
            ids.iter().all(|id| ev[0].chat.via_messages.contains(id)),
            "{:?}",
            ev[0].chat.via_messages
        );
    }

    #[test]
    fn a_description_change_without_the_description_is_kept() {
        let raw = group_mail("Chat-Group-Description-Changed: \n", "x").replace('\n', "\r\n");
        let parsed = codec::parse(raw.as_bytes(), &ParseLimits::default()).expect("parse");
        assert!(matches!(
            to_events(&parsed, raw.as_bytes(), &cfg(), 0),
            Err(Skip::Keep(_))
        ));
    }

    #[test]
    fn read_receipt_requests_count_only_for_the_from_address() {
        let wants = |extra: &str| match &events(&group_mail(extra, "Hi"))[0].kind {
            EventKind::Message(c) => c.wants_receipt,
            other => panic!("{other:?}"),
        };
        assert!(wants(
            "Chat-Disposition-Notification-To: alice@example.test\n"
        ));
        assert!(
            wants("Disposition-Notification-To: \"Alice\" <Alice@example.test>\n"),
            "RFC 8098 (COI, classic clients)"
        );
        assert!(!wants(
            "Chat-Disposition-Notification-To: mallory@example.test\n"
        ));
        assert!(!wants(""));
    }

    #[test]
    fn subject_prefixes_are_stripped() {
        assert_eq!(chat_name_from_subject("Re: Spike Group"), "Spike Group");
        assert_eq!(chat_name_from_subject("AW: Re: Fwd: Plans"), "Plans");
        assert_eq!(chat_name_from_subject("Chat: hello"), "Chat: hello");
        assert_eq!(
            chat_name_from_subject("Meeting at 10:30"),
            "Meeting at 10:30"
        );
    }
}
