//! Matrix event content ⇄ the hub's IR. Pure: no I/O, no store.

use bridge_core::ir::{AttachmentKind, MessageContent, Part, Relation};
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

/// Tags the Matrix spec allows in `formatted_body` (client-server API, "m.room.message msgtypes"),
/// minus `img` (its `mxc://` source means nothing outside Matrix).
const HTML_TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "strike",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "details",
    "summary",
];

/// Sanitises Matrix HTML before it leaves Matrix (it becomes the `text/html` part of a mail):
/// only the spec's tags, links to http(s) and mailto with `rel="noopener noreferrer"`, no styles,
/// scripts, images, forms or event handlers.
pub fn sanitize_html(html: &str) -> String {
    use std::collections::{HashMap, HashSet};
    static CLEANER: std::sync::LazyLock<ammonia::Builder<'static>> =
        std::sync::LazyLock::new(|| {
            let mut b = ammonia::Builder::empty();
            b.tags(HTML_TAGS.iter().copied().collect::<HashSet<_>>())
                .tag_attributes(HashMap::from([
                    ("a", HashSet::from(["href", "title"])),
                    ("ol", HashSet::from(["start"])),
                    ("code", HashSet::from(["class"])),
                ]))
                .url_schemes(HashSet::from(["http", "https", "mailto"]))
                .url_relative(ammonia::UrlRelative::Deny)
                .link_rel(Some("noopener noreferrer"));
            b
        });
    CLEANER.clean(html).to_string()
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
                sanitize_html(&strip_html_reply_fallback(h))
            } else {
                sanitize_html(h)
            }
        });
    let part = match msgtype {
        "m.text" | "m.emote" | "m.notice" => Part::Text {
            body,
            html,
            emote: msgtype == "m.emote",
            notice: msgtype == "m.notice",
        },
        "m.image" | "m.file" | "m.audio" | "m.video" => {
            return Some(media_message(content, msgtype, &body));
        }
        _ => Part::text(body),
    };
    Some(MessageContent {
        parts: vec![part],
        reply_to: None,
        wants_receipt: false,
    })
}

/// A file name safe to put in a mail: the last path component, no control characters.
pub fn safe_filename(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_format_char(*c))
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .chars()
        .take(200)
        .collect();
    if clean.is_empty() {
        "file".to_owned()
    } else {
        clean
    }
}

/// Adds an extension from the MIME type to a name without one (mail clients open files by it).
fn with_extension(name: String, mime: &str) -> String {
    if name.contains('.') {
        return name;
    }
    let ext = match mime.to_ascii_lowercase().as_str() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "audio/ogg" | "audio/opus" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/mp4" | "audio/aac" => "m4a",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => return name,
    };
    format!("{name}.{ext}")
}

/// Invisible format characters (Unicode Cf) that can disguise a file name, e.g. the bidi override
/// in `invoice\u{202e}fdp.exe`.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// The `mxc://` URI of a media message (`m.image`, `m.file`, `m.audio`, `m.video`, `m.sticker`).
pub fn media_url(content: &Value) -> Option<&str> {
    s(content, "url").filter(|u| u.starts_with("mxc://"))
}

/// A media message as IR: an attachment whose bytes are still to be fetched (`data` empty), after a
/// caption when the body is not just the file name (MSC2530). Encrypted media cannot be fetched.
fn media_message(content: &Value, msgtype: &str, body: &str) -> MessageContent {
    let filename = s(content, "filename").filter(|f| !f.is_empty());
    let caption = filename.is_some_and(|f| f != body && !body.is_empty());
    let info = content.get("info");
    let mime = info
        .and_then(|i| s(i, "mimetype"))
        .filter(|m| m.contains('/'))
        .unwrap_or("application/octet-stream");
    let name = with_extension(safe_filename(filename.unwrap_or(body)), mime);
    let mut parts = Vec::new();
    if caption {
        parts.push(Part::text(body));
    }
    if media_url(content).is_none() {
        let why = if content.get("file").is_some() {
            "encrypted attachments are not bridged"
        } else {
            "the attachment has no URL"
        };
        parts.push(Part::text(format!("📎 {name} ({why})")));
    } else {
        let voice = content.get("org.matrix.msc3245.voice").is_some();
        let kind = match msgtype {
            "m.image" => AttachmentKind::Image,
            "m.sticker" => AttachmentKind::Sticker,
            "m.audio" if voice => AttachmentKind::Voice,
            "m.audio" => AttachmentKind::Audio,
            "m.video" => AttachmentKind::Video,
            _ => AttachmentKind::File,
        };
        parts.push(Part::Attachment {
            filename: name,
            mime_type: mime.to_owned(),
            kind,
            data: Vec::new(),
            duration_ms: info.and_then(|i| i.get("duration")).and_then(Value::as_u64),
            source: media_url(content).map(str::to_owned),
        });
    }
    MessageContent {
        parts,
        reply_to: None,
        wants_receipt: false,
    }
}

/// The `msgtype` (and event type) for an attachment kind.
fn media_types(kind: AttachmentKind) -> (&'static str, &'static str) {
    match kind {
        AttachmentKind::Image => ("m.room.message", "m.image"),
        AttachmentKind::Sticker => ("m.sticker", "m.image"),
        AttachmentKind::Audio | AttachmentKind::Voice => ("m.room.message", "m.audio"),
        AttachmentKind::Video => ("m.room.message", "m.video"),
        AttachmentKind::File => ("m.room.message", "m.file"),
    }
}

/// What an uploaded attachment's event says about the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaInfo {
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Width and height of a picture, when known.
    pub dimensions: Option<(u64, u64)>,
    /// Duration of audio or video, in milliseconds.
    pub duration_ms: Option<u64>,
}

/// The event type and content for an uploaded attachment (`mxc`).
pub fn media_content(
    kind: AttachmentKind,
    filename: &str,
    mxc: &str,
    info: &MediaInfo,
    reply_to: Option<&Relation>,
) -> (&'static str, Value) {
    let (event_type, msgtype) = media_types(kind);
    let mut i = json!({"mimetype": info.mime_type, "size": info.size});
    if let Some((w, h)) = info.dimensions {
        i["w"] = json!(w);
        i["h"] = json!(h);
    }
    if let Some(d) = info.duration_ms {
        i["duration"] = json!(d);
    }
    let mut c = json!({"body": filename, "filename": filename, "url": mxc, "info": i});
    if event_type == "m.room.message" {
        c["msgtype"] = json!(msgtype);
    }
    if kind == AttachmentKind::Voice {
        c["org.matrix.msc3245.voice"] = json!({});
        c["org.matrix.msc1767.audio"] = json!({"duration": info.duration_ms.unwrap_or(0)});
    }
    if let Some(id) = reply_to.and_then(|r| r.remote_id.as_deref()) {
        c["m.relates_to"] = json!({"m.in_reply_to": {"event_id": id}});
    }
    (event_type, c)
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
                    Some(mut c) => {
                        // A media edit changes its caption; the file itself stays.
                        for p in &mut c.parts {
                            if let Part::Attachment { filename, .. } = p {
                                *p = Part::text(std::mem::take(filename));
                            }
                        }
                        Incoming::Edit {
                            target: target.to_owned(),
                            content: c,
                        }
                    }
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
        "m.sticker" => {
            let body = s(content, "body").unwrap_or("sticker");
            let mut c = media_message(content, "m.sticker", body);
            c.reply_to = relates
                .and_then(|r| r.get("m.in_reply_to"))
                .and_then(|r| s(r, "event_id"))
                .map(Relation::remote);
            Incoming::Message(c)
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
        // Files go through `media_content` after an upload; this is the text stand-in (edits).
        Part::Attachment { filename, .. } => {
            json!({"msgtype": "m.text", "body": format!("📎 {filename}")})
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
    fn html_is_sanitised() {
        let dirty = r#"<b onclick="x()">bold</b><script>alert(1)</script><img src="mxc://a/b">
            <a href="javascript:alert(1)">js</a><a href="https://ok.example/">ok</a>
            <span style="position:fixed" data-mx-color="red">c</span><iframe src="https://x"></iframe>"#;
        let clean = sanitize_html(dirty);
        assert!(clean.contains("<b>bold</b>"), "{clean}");
        assert!(
            clean.contains(r#"<a href="https://ok.example/" rel="noopener noreferrer">ok</a>"#),
            "{clean}"
        );
        for bad in [
            "onclick",
            "script",
            "alert",
            "img",
            "javascript",
            "style",
            "iframe",
        ] {
            assert!(!clean.contains(bad), "{bad} in {clean}");
        }
        let ev = json!({"type":"m.room.message","content":{"msgtype":"m.text","body":"x",
            "format":"org.matrix.custom.html","formatted_body":"<i>x</i><script>1</script>"}});
        let Incoming::Message(m) = incoming(&ev) else {
            panic!()
        };
        assert!(matches!(&m.parts[0], Part::Text { html: Some(h), .. } if h == "<i>x</i>"));
    }

    #[test]
    fn media_in() {
        let ev = json!({"type": "m.room.message", "content": {
            "msgtype": "m.image", "body": "cat.png", "url": "mxc://hs/abc",
            "info": {"mimetype": "image/png", "size": 3}}});
        let Incoming::Message(m) = incoming(&ev) else {
            panic!()
        };
        assert_eq!(media_url(&ev["content"]), Some("mxc://hs/abc"));
        assert_eq!(
            m.parts,
            vec![Part::Attachment {
                filename: "cat.png".into(),
                mime_type: "image/png".into(),
                kind: AttachmentKind::Image,
                data: Vec::new(),
                duration_ms: None,
                source: Some("mxc://hs/abc".into()),
            }]
        );
        // A caption (MSC2530) comes first as text; a path in the name is cut; voice is voice.
        let ev = json!({"type": "m.room.message", "content": {
            "msgtype": "m.audio", "body": "listen to this", "filename": "../../etc/rec",
            "url": "mxc://hs/v", "org.matrix.msc3245.voice": {},
            "info": {"mimetype": "audio/ogg", "duration": 2500}}});
        let Incoming::Message(m) = incoming(&ev) else {
            panic!()
        };
        assert_eq!(m.parts[0], Part::text("listen to this"));
        assert!(
            matches!(&m.parts[1], Part::Attachment { filename, kind: AttachmentKind::Voice,
            duration_ms: Some(2500), .. } if filename == "rec.ogg")
        );
        // Encrypted media (no `url`) is said, not dropped.
        let ev = json!({"type": "m.room.message", "content": {
            "msgtype": "m.file", "body": "secret.pdf", "file": {"url": "mxc://hs/e"}}});
        let Incoming::Message(m) = incoming(&ev) else {
            panic!()
        };
        assert!(matches!(&m.parts[0], Part::Text { body, .. } if body.contains("encrypted")));
        // Stickers.
        let ev = json!({"type": "m.sticker", "content": {
            "body": "party", "url": "mxc://hs/s", "info": {"mimetype": "image/webp"}}});
        let Incoming::Message(m) = incoming(&ev) else {
            panic!()
        };
        assert!(
            matches!(&m.parts[0], Part::Attachment { filename, kind: AttachmentKind::Sticker, .. }
            if filename == "party.webp")
        );
        // Editing a media caption edits text only.
        let ev = json!({"type": "m.room.message", "content": {
            "msgtype": "m.image", "body": "* new caption", "url": "mxc://hs/abc",
            "m.new_content": {"msgtype": "m.image", "body": "new caption", "url": "mxc://hs/abc"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$img"}}});
        let Incoming::Edit { content, .. } = incoming(&ev) else {
            panic!()
        };
        assert!(content.parts.iter().all(|p| matches!(p, Part::Text { .. })));
        assert_eq!(safe_filename(" \u{7}..hidden"), "hidden");
        assert_eq!(safe_filename("a/b\\c.txt"), "c.txt");
        assert_eq!(safe_filename(""), "file");
        assert_eq!(safe_filename("invoice\u{202e}fdp.exe"), "invoicefdp.exe");
    }

    #[test]
    fn media_out() {
        let info = MediaInfo {
            mime_type: "audio/ogg".into(),
            size: 10,
            dimensions: None,
            duration_ms: Some(1200),
        };
        let (t, c) = media_content(
            AttachmentKind::Voice,
            "v.ogg",
            "mxc://hs/x",
            &info,
            Some(&Relation::remote("$r")),
        );
        assert_eq!(t, "m.room.message");
        assert_eq!(c["msgtype"], "m.audio");
        assert_eq!(c["info"]["duration"], 1200);
        assert!(c.get("org.matrix.msc3245.voice").is_some());
        assert_eq!(c["m.relates_to"]["m.in_reply_to"]["event_id"], "$r");
        let info = MediaInfo {
            mime_type: "image/png".into(),
            size: 5,
            dimensions: Some((4, 3)),
            duration_ms: None,
        };
        let (t, c) = media_content(AttachmentKind::Sticker, "s.png", "mxc://hs/y", &info, None);
        assert_eq!(t, "m.sticker");
        assert!(c.get("msgtype").is_none());
        assert_eq!(
            (c["info"]["w"].as_u64(), c["info"]["h"].as_u64()),
            (Some(4), Some(3))
        );
        let (t, c) = media_content(AttachmentKind::File, "a.pdf", "mxc://hs/z", &info, None);
        assert_eq!(
            (t, c["msgtype"].as_str()),
            ("m.room.message", Some("m.file"))
        );
        assert_eq!(c["url"], "mxc://hs/z");
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
