//! Matrix event content ⇄ the hub's IR. Pure: no I/O, no store.

use bridge_core::ir::{MessageContent, Part, Relation};
use serde_json::{Value, json};

/// What one incoming Matrix room event means to the hub (before chat and sender are attached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A new message.
    Message(MessageContent),
    /// An edit of `target` (a Matrix event id).
    Edit {
        /// The edited event.
        target: String,
        /// Its new content.
        content: MessageContent,
    },
    /// A redaction of `target`.
    Redaction {
        /// The redacted event.
        target: String,
    },
    /// A reaction to `target`.
    Reaction {
        /// The event reacted to.
        target: String,
        /// The key.
        key: String,
    },
    /// A membership change of `user`.
    Membership {
        /// Who.
        user: String,
        /// Their display name, if given.
        display_name: Option<String>,
        /// Joined (true) or left (false).
        joined: bool,
    },
    /// Room name or topic.
    ChatInfo {
        /// New name.
        name: Option<String>,
        /// New topic.
        topic: Option<String>,
    },
    /// Nothing the hub cares about.
    Ignore,
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Removes a legacy reply fallback (`> <@user> …` lines and a blank line) from a plain body.
pub fn strip_reply_fallback(body: &str) -> String {
    if !body.starts_with("> ") {
        return body.to_owned();
    }
    let mut lines = body.lines().peekable();
    while lines.peek().is_some_and(|l| l.starts_with('>')) {
        lines.next();
    }
    if lines.peek().is_some_and(|l| l.is_empty()) {
        lines.next();
    }
    lines.collect::<Vec<_>>().join("\n")
}

/// Removes a legacy `<mx-reply>…</mx-reply>` block from HTML.
pub fn strip_html_reply_fallback(html: &str) -> String {
    match (html.find("<mx-reply>"), html.find("</mx-reply>")) {
        (Some(a), Some(b)) if b > a => {
            let mut out = html.get(..a).unwrap_or("").to_owned();
            out.push_str(html.get(b + "</mx-reply>".len()..).unwrap_or(""));
            out
        }
        _ => html.to_owned(),
    }
}

/// Converts the content of an `m.room.message` (or its `m.new_content`) into IR content.
pub fn message_content(content: &Value, is_reply: bool) -> Option<MessageContent> {
    let msgtype = s(content, "msgtype")?;
    let raw_body = s(content, "body").unwrap_or("");
    let body = if is_reply {
        strip_reply_fallback(raw_body)
    } else {
        raw_body.to_owned()
    };
    let html = (s(content, "format") == Some("org.matrix.custom.html"))
        .then(|| s(content, "formatted_body"))
        .flatten()
        .map(|h| {
            if is_reply {
                strip_html_reply_fallback(h)
            } else {
                h.to_owned()
            }
        });
    let part = match msgtype {
        "m.text" | "m.emote" | "m.notice" => Part::Text {
            body,
            html,
            emote: msgtype == "m.emote",
            notice: msgtype == "m.notice",
        },
        // Media download is not wired yet: say so honestly instead of dropping the message.
        "m.image" | "m.file" | "m.audio" | "m.video" => {
            Part::text(format!("📎 {body} (attachment not bridged yet)"))
        }
        _ => Part::text(body),
    };
    Some(MessageContent {
        parts: vec![part],
        reply_to: None,
        wants_receipt: false,
    })
}

/// Interprets one room event (PDU) from a transaction.
pub fn incoming(event: &Value) -> Incoming {
    let kind = s(event, "type").unwrap_or("");
    let content = event.get("content").unwrap_or(&Value::Null);
    let relates = content.get("m.relates_to");
    let rel_type = relates.and_then(|r| s(r, "rel_type"));
    let rel_target = relates.and_then(|r| s(r, "event_id"));
    match kind {
        "m.room.message" => {
            if let (Some("m.replace"), Some(target)) = (rel_type, rel_target) {
                let new = content.get("m.new_content").unwrap_or(content);
                return match message_content(new, false) {
                    Some(c) => Incoming::Edit {
                        target: target.to_owned(),
                        content: c,
                    },
                    None => Incoming::Ignore,
                };
            }
            let reply = relates
                .and_then(|r| r.get("m.in_reply_to"))
                .and_then(|r| s(r, "event_id"));
            match message_content(content, reply.is_some()) {
                Some(mut c) => {
                    c.reply_to = reply.map(Relation::remote);
                    Incoming::Message(c)
                }
                None => Incoming::Ignore,
            }
        }
        "m.reaction" => match (rel_type, rel_target, relates.and_then(|r| s(r, "key"))) {
            (Some("m.annotation"), Some(t), Some(k)) => Incoming::Reaction {
                target: t.to_owned(),
                key: k.to_owned(),
            },
            _ => Incoming::Ignore,
        },
        "m.room.redaction" => match s(event, "redacts").or_else(|| s(content, "redacts")) {
            Some(t) => Incoming::Redaction {
                target: t.to_owned(),
            },
            None => Incoming::Ignore,
        },
        "m.room.member" => {
            let Some(user) = s(event, "state_key") else {
                return Incoming::Ignore;
            };
            let joined = match s(content, "membership") {
                Some("join") => true,
                Some("leave" | "ban") => false,
                _ => return Incoming::Ignore,
            };
            let prev = event
                .get("unsigned")
                .and_then(|u| u.get("prev_content"))
                .and_then(|p| s(p, "membership"));
            if joined && prev == Some("join") {
                // A profile change, not a join.
                return Incoming::Ignore;
            }
            Incoming::Membership {
                user: user.to_owned(),
                display_name: s(content, "displayname").map(str::to_owned),
                joined,
            }
        }
        "m.room.name" => Incoming::ChatInfo {
            name: Some(s(content, "name").unwrap_or("").to_owned()),
            topic: None,
        },
        "m.room.topic" => Incoming::ChatInfo {
            name: None,
            topic: Some(s(content, "topic").unwrap_or("").to_owned()),
        },
        _ => Incoming::Ignore,
    }
}

/// The `m.room.message` content for one IR part. `reply_to` is the Matrix event id replied to.
pub fn part_content(part: &Part, reply_to: Option<&Relation>) -> Value {
    let mut content = match part {
        Part::Text {
            body,
            html,
            emote,
            notice,
        } => {
            let msgtype = if *emote {
                "m.emote"
            } else if *notice {
                "m.notice"
            } else {
                "m.text"
            };
            let mut c = json!({"msgtype": msgtype, "body": body});
            if let Some(h) = html {
                c["format"] = json!("org.matrix.custom.html");
                c["formatted_body"] = json!(h);
            }
            c
        }
        Part::Attachment { filename, .. } => {
            json!({"msgtype": "m.notice", "body": format!("📎 {filename} (attachment not bridged yet)")})
        }
    };
    if let Some(id) = reply_to.and_then(|r| r.remote_id.as_deref()) {
        content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": id}});
    }
    content
}

/// The content of an edit of `target` (always the original event, never an earlier edit).
pub fn edit_content(target: &str, new: &Value) -> Value {
    let mut new_content = new.clone();
    if let Some(o) = new_content.as_object_mut() {
        o.remove("m.relates_to");
    }
    let body = s(new, "body").unwrap_or("");
    let mut c = json!({
        "msgtype": s(new, "msgtype").unwrap_or("m.text"),
        "body": format!("* {body}"),
        "m.new_content": new_content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    });
    if let Some(h) = s(new, "formatted_body") {
        c["format"] = json!("org.matrix.custom.html");
        c["formatted_body"] = json!(format!("* {h}"));
    }
    c
}

/// The content of a reaction.
pub fn reaction_content(target: &str, key: &str) -> Value {
    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}})
}

/// The first text of an IR content, as Matrix content (for edits and notices).
pub fn first_part_content(content: &MessageContent) -> Value {
    match content.parts.first() {
        Some(p) => part_content(p, None),
        None => json!({"msgtype": "m.text", "body": ""}),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use bridge_core::ir::MessageContent;

    fn text(body: &str) -> Part {
        Part::text(body)
    }

    #[test]
    fn text_both_ways() {
        let p = Part::Text {
            body: "hi *you*".into(),
            html: Some("hi <b>you</b>".into()),
            emote: false,
            notice: false,
        };
        let c = part_content(&p, None);
        assert_eq!(
            c,
            json!({"msgtype":"m.text","body":"hi *you*","format":"org.matrix.custom.html","formatted_body":"hi <b>you</b>"})
        );
        let back = message_content(&c, false).unwrap();
        assert_eq!(back.parts, vec![p]);
        let e = part_content(
            &Part::Text {
                body: "waves".into(),
                html: None,
                emote: true,
                notice: false,
            },
            None,
        );
        assert_eq!(e["msgtype"], "m.emote");
        let n = part_content(
            &Part::Text {
                body: "bot".into(),
                html: None,
                emote: false,
                notice: true,
            },
            None,
        );
        assert_eq!(n["msgtype"], "m.notice");
        assert_eq!(
            incoming(&json!({"type":"m.room.message","content":e})),
            Incoming::Message(MessageContent {
                parts: vec![Part::Text {
                    body: "waves".into(),
                    html: None,
                    emote: true,
                    notice: false
                }],
                ..MessageContent::default()
            })
        );
    }

    #[test]
    fn replies() {
        let c = part_content(&text("yes"), Some(&Relation::remote("$orig")));
        assert_eq!(c["m.relates_to"]["m.in_reply_to"]["event_id"], "$orig");
        let ev = json!({"type":"m.room.message","content":{
            "msgtype":"m.text","body":"> <@bob:x> hello\n> more\n\nyes",
            "format":"org.matrix.custom.html",
            "formatted_body":"<mx-reply><blockquote>hello</blockquote></mx-reply>yes",
            "m.relates_to":{"m.in_reply_to":{"event_id":"$orig"}}}});
        let Incoming::Message(m) = incoming(&ev) else {
            panic!()
        };
        assert_eq!(m.reply_to, Some(Relation::remote("$orig")));
        assert_eq!(
            m.parts,
            vec![Part::Text {
                body: "yes".into(),
                html: Some("yes".into()),
                emote: false,
                notice: false
            }]
        );
    }

    #[test]
    fn edits_target_the_original() {
        let c = edit_content("$orig", &part_content(&text("new"), None));
        assert_eq!(
            c,
            json!({"msgtype":"m.text","body":"* new","m.new_content":{"msgtype":"m.text","body":"new"},
                   "m.relates_to":{"rel_type":"m.replace","event_id":"$orig"}})
        );
        let ev = json!({"type":"m.room.message","content":c});
        assert_eq!(
            incoming(&ev),
            Incoming::Edit {
                target: "$orig".into(),
                content: MessageContent {
                    parts: vec![text("new")],
                    ..MessageContent::default()
                }
            }
        );
    }

    #[test]
    fn reactions_redactions_members() {
        let ev = json!({"type":"m.reaction","content":reaction_content("$t","👍")});
        assert_eq!(
            incoming(&ev),
            Incoming::Reaction {
                target: "$t".into(),
                key: "👍".into()
            }
        );
        let ev = json!({"type":"m.room.redaction","redacts":"$t","content":{}});
        assert_eq!(
            incoming(&ev),
            Incoming::Redaction {
                target: "$t".into()
            }
        );
        let ev = json!({"type":"m.room.redaction","content":{"redacts":"$u"}});
        assert_eq!(
            incoming(&ev),
            Incoming::Redaction {
                target: "$u".into()
            }
        );
        let ev = json!({"type":"m.room.member","state_key":"@a:x","content":{"membership":"join","displayname":"A"}});
        assert_eq!(
            incoming(&ev),
            Incoming::Membership {
                user: "@a:x".into(),
                display_name: Some("A".into()),
                joined: true
            }
        );
        let ev = json!({"type":"m.room.member","state_key":"@a:x","content":{"membership":"join"},
                        "unsigned":{"prev_content":{"membership":"join"}}});
        assert_eq!(incoming(&ev), Incoming::Ignore);
        assert_eq!(incoming(&json!({"type":"m.typing"})), Incoming::Ignore);
    }
}
