//! Building: [`OutgoingEmail`] → CRLF bytes, laid out the way Delta Chat 2.65
//! sends unencrypted group messages (see the fixtures under
//! `testdata/deltachat-2.65/`): the same headers, in the same order.
//!
//! Every caller-supplied header value goes through [`sanitize_header_text`]
//! or a strict validator (addresses, Message-IDs, group ids), so no CR or LF
//! from a caller can reach the header block.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::encode::{
    MAX_WORD, base64_lines, bracketed, checked_addr, checked_msgid, crlf_text, encoded_words,
    fnv1a, is_7bit_safe, needs_encoding, quoted_printable, quoted_string, rfc2231_percent,
    rfc5322_date, sanitize_header_text, text_words, write_header,
};
use super::error::CodecError;
use super::headers::HeaderDef;
use super::model::{Autocrypt, Mailbox};
use super::simplify::{FORWARD_HEADER, escape_footer_marks};

/// Body of the first (text) part of an edit request, before the new text.
const EDIT_MARK: &str = "\u{270f}\u{fe0f}";
/// Body of a delete request.
const DELETE_MARK: &str = "\u{1f6ae}";

/// Group state sent with every group message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingGroup {
    /// `Chat-Group-ID`, only when set: unencrypted Delta Chat groups carry none.
    pub id: Option<String>,
    /// `Chat-Group-Name`.
    pub name: String,
    /// `Chat-Group-Name-Timestamp`.
    pub name_timestamp: Option<i64>,
    /// `Chat-Group-Member-Timestamps`: one per `To` entry, then one per past member.
    pub member_timestamps: Vec<i64>,
    /// `Chat-Group-Past-Members`.
    pub past_members: Vec<Mailbox>,
    /// `Chat-Group-Description` (always RFC 2047 encoded, like Delta Chat).
    pub description: Option<String>,
    /// `Chat-Group-Description-Timestamp`.
    pub description_timestamp: Option<i64>,
}

/// What the message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutgoingBody {
    /// Ordinary text, optionally with HTML and a quote of the message replied to.
    Text {
        /// Plain text.
        text: String,
        /// HTML alternative (makes the body `multipart/alternative`).
        html: Option<String>,
        /// Quoted text, rendered as `> ` lines above the text.
        quote: Option<String>,
        /// Start the body with Delta Chat's forward header.
        forwarded: bool,
    },
    /// RFC 9078 reaction to the message named in `in_reply_to`; an empty emoji
    /// takes the reaction back.
    Reaction {
        /// The reaction.
        emoji: String,
    },
    /// Delta Chat edit request.
    Edit {
        /// Message-ID of the edited message (also used as `In-Reply-To`).
        target_id: String,
        /// The new text.
        new_text: String,
        /// The old text, quoted for clients that do not understand edits.
        old_text: Option<String>,
    },
    /// Delta Chat delete request.
    Delete {
        /// Message-IDs to delete.
        target_ids: Vec<String>,
    },
    /// `Chat-Group-Member-Added` system message.
    MemberAdded {
        /// The added address.
        addr: String,
    },
    /// `Chat-Group-Member-Removed` system message.
    MemberRemoved {
        /// The removed address.
        addr: String,
    },
    /// `Chat-Group-Name-Changed` system message (the new name is in `group`).
    NameChanged {
        /// The previous name.
        old_name: String,
    },
    /// `Chat-Group-Description-Changed` system message (the new description is in `group`,
    /// which must carry one).
    DescriptionChanged,
    /// Read receipt for messages of the recipient (`To`).
    Mdn {
        /// Acknowledged Message-IDs; the first is `Original-Message-ID`.
        original_message_ids: Vec<String>,
    },
}

impl Default for OutgoingBody {
    fn default() -> Self {
        OutgoingBody::Text {
            text: String::new(),
            html: None,
            quote: None,
            forwarded: false,
        }
    }
}

/// A file to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingAttachment {
    /// File name (directory parts and controls are removed; empty → `file`).
    pub filename: String,
    /// `type/subtype`; anything malformed becomes `application/octet-stream`.
    pub mime_type: String,
    /// Content.
    pub data: Vec<u8>,
    /// `Chat-Voice-Message: 1`.
    pub voice_message: bool,
    /// `Chat-Duration` in milliseconds.
    pub duration_ms: Option<u64>,
    /// `Chat-Content: sticker`.
    pub sticker: bool,
}

/// One message to send. Time and ids are inputs, so the output is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// `From`. In relay mode: the person's name with the relay address.
    pub from: Mailbox,
    /// `Sender` (relay mode: the bridge itself).
    pub sender: Option<Mailbox>,
    /// `To`: all members except the sender.
    pub to: Vec<Mailbox>,
    /// `Date`, Unix seconds.
    pub date_unix: i64,
    /// `Message-ID` without angle brackets (see [`new_message_id`]).
    pub message_id: String,
    /// `Subject` (ignored for MDNs, which say "Receipt Notification").
    pub subject: String,
    /// `In-Reply-To` (for reactions: the target; for edits it is the target anyway).
    pub in_reply_to: Option<String>,
    /// `References`: the last three are sent; when empty, `In-Reply-To` or
    /// the message's own id is sent (Delta Chat's rule).
    pub references: Vec<String>,
    /// Group headers, for group messages.
    pub group: Option<OutgoingGroup>,
    /// `Auto-Submitted` (e.g. `auto-generated` for bot messages).
    pub auto_submitted: Option<String>,
    /// `Autocrypt`.
    pub autocrypt: Option<Autocrypt>,
    /// `Chat-Disposition-Notification-To` (read-receipt request); must be the From address to be honoured.
    pub mdn_request_to: Option<String>,
    /// The content.
    pub body: OutgoingBody,
    /// Files; only allowed with [`OutgoingBody::Text`].
    pub attachments: Vec<OutgoingAttachment>,
}

/// A new Message-ID (`<uuid-v4>@<domain>`, returned without brackets). An
/// empty or invalid domain becomes `localhost`, which Delta Chat uses too.
pub fn new_message_id(domain: &str) -> String {
    let domain_ok = !domain.is_empty()
        && domain.len() <= 200
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let domain = if domain_ok { domain } else { "localhost" };
    format!("{}@{domain}", uuid::Uuid::new_v4())
}

/// One MIME entity before boundaries are chosen.
enum Entity {
    Leaf {
        content_type: Vec<String>,
        disposition: Vec<String>,
        cte: &'static str,
        body: String,
        extra: Vec<(HeaderDef, String)>,
    },
    Multi {
        subtype: &'static str,
        params: Vec<String>,
        children: Vec<Entity>,
    },
}

/// Builds the message. Errors are [`CodecError::InvalidInput`] or
/// [`CodecError::Missing`]: the request itself is wrong and will stay wrong.
pub fn build(mail: &OutgoingEmail) -> Result<Vec<u8>, CodecError> {
    let own_id = checked_msgid(&mail.message_id)?;
    let is_mdn = matches!(mail.body, OutgoingBody::Mdn { .. });
    if !mail.attachments.is_empty() && !matches!(mail.body, OutgoingBody::Text { .. }) {
        return Err(CodecError::InvalidInput(
            "attachments are only allowed with a text body".to_owned(),
        ));
    }
    let group = if is_mdn { None } else { mail.group.as_ref() };

    // body-kind specific headers and the content entity
    let mut in_reply_to = mail.in_reply_to.clone();
    let mut edit_or_delete: Option<(HeaderDef, Vec<String>)> = None;
    let mut system: Vec<(HeaderDef, Vec<String>)> = Vec::new();
    let needs_group = |what: &'static str| group.map(|_| ()).ok_or(CodecError::Missing(what));
    let content = match &mail.body {
        OutgoingBody::Text {
            text,
            html,
            quote,
            forwarded,
        } => {
            let plain = text_leaf(&render_text(text, quote.as_deref(), *forwarded));
            let main = match html {
                Some(html) => Entity::Multi {
                    subtype: "alternative",
                    params: Vec::new(),
                    children: vec![plain, html_leaf(html)],
                },
                None => plain,
            };
            if mail.attachments.is_empty() {
                main
            } else {
                let mut children = vec![main];
                for att in &mail.attachments {
                    children.push(attachment_leaf(att));
                }
                Entity::Multi {
                    subtype: "mixed",
                    params: Vec::new(),
                    children,
                }
            }
        }
        OutgoingBody::Reaction { emoji } => {
            if in_reply_to.is_none() {
                return Err(CodecError::Missing("in_reply_to (the reaction target)"));
            }
            let emoji = sanitize_header_text(emoji);
            Entity::Leaf {
                content_type: vec!["text/plain;".to_owned(), "charset=\"utf-8\"".to_owned()],
                disposition: vec!["reaction".to_owned()],
                cte: "base64",
                body: base64_lines(emoji.as_bytes()),
                extra: Vec::new(),
            }
        }
        OutgoingBody::Edit {
            target_id,
            new_text,
            old_text,
        } => {
            let target = checked_msgid(target_id)?;
            in_reply_to = Some(target.to_owned());
            edit_or_delete = Some((HeaderDef::ChatEdit, vec![bracketed(target)?]));
            let text = format!("{EDIT_MARK}{new_text}");
            text_leaf(&render_text(&text, old_text.as_deref(), false))
        }
        OutgoingBody::Delete { target_ids } => {
            if target_ids.is_empty() {
                return Err(CodecError::Missing("target_ids"));
            }
            let ids = target_ids
                .iter()
                .map(|id| bracketed(id))
                .collect::<Result<Vec<_>, _>>()?;
            edit_or_delete = Some((HeaderDef::ChatDelete, ids));
            text_leaf(DELETE_MARK)
        }
        OutgoingBody::MemberAdded { addr } => {
            needs_group("group (for a member-added message)")?;
            let addr = checked_addr(addr)?;
            system.push((HeaderDef::ChatGroupMemberAdded, vec![addr.to_owned()]));
            text_leaf(&format!("Member {addr} was added."))
        }
        OutgoingBody::MemberRemoved { addr } => {
            needs_group("group (for a member-removed message)")?;
            let addr = checked_addr(addr)?;
            system.push((HeaderDef::ChatGroupMemberRemoved, vec![addr.to_owned()]));
            text_leaf(&format!("Member {addr} was removed."))
        }
        OutgoingBody::NameChanged { old_name } => {
            needs_group("group (for a name-changed message)")?;
            system.push((HeaderDef::ChatGroupNameChanged, text_words(old_name)));
            text_leaf("Chat name changed.")
        }
        OutgoingBody::DescriptionChanged => {
            let description =
                group
                    .and_then(|g| g.description.as_deref())
                    .ok_or(CodecError::Missing(
                        "group description (for a description-changed message)",
                    ))?;
            // Delta Chat sends the header with an empty value and shows its own line; the body is
            // for classic clients (and old Delta Chat versions), so it says what the description is.
            system.push((HeaderDef::ChatGroupDescriptionChanged, Vec::new()));
            if description.trim().is_empty() {
                text_leaf("Chat description removed.")
            } else {
                let text = format!("Chat description changed:\n\n{description}");
                text_leaf(&render_text(&text, None, false))
            }
        }
        OutgoingBody::Mdn {
            original_message_ids,
        } => mdn_entity(&mail.from, original_message_ids)?,
    };

    let mut out = String::with_capacity(2048);
    write_header(&mut out, HeaderDef::From, &mailbox_words(&mail.from)?);
    write_header(&mut out, HeaderDef::MessageId, &[bracketed(own_id)?]);
    write_header(&mut out, HeaderDef::MimeVersion, &["1.0".to_owned()]);
    if let Some(ac) = &mail.autocrypt {
        write_autocrypt(&mut out, ac)?;
    }

    let (content_headers, body) = render(content, own_id, &mut 0);
    // Content-Type (and Content-Disposition) come early, Content-Transfer-Encoding last
    let mut cte_header = None;
    for (def, words) in content_headers {
        if def == HeaderDef::ContentTransferEncoding {
            cte_header = Some(words);
        } else if def == HeaderDef::ContentType || def == HeaderDef::ContentDisposition {
            write_header(&mut out, def, &words);
        }
    }

    write_header(&mut out, HeaderDef::Date, &[rfc5322_date(mail.date_unix)]);
    if let Some(sender) = &mail.sender {
        write_header(&mut out, HeaderDef::Sender, &mailbox_words(sender)?);
    }
    if !mail.to.is_empty() {
        write_header(&mut out, HeaderDef::To, &mailbox_list_words(&mail.to)?);
    }
    if let Some(g) = group {
        if !g.past_members.is_empty() {
            write_header(
                &mut out,
                HeaderDef::ChatGroupPastMembers,
                &mailbox_list_words(&g.past_members)?,
            );
        }
        if !g.member_timestamps.is_empty() {
            let words: Vec<String> = g.member_timestamps.iter().map(i64::to_string).collect();
            write_header(&mut out, HeaderDef::ChatGroupMemberTimestamps, &words);
        }
    }
    let subject = if is_mdn {
        "Receipt Notification"
    } else {
        mail.subject.as_str()
    };
    let subject_words = text_words(subject);
    if !subject_words.is_empty() {
        write_header(&mut out, HeaderDef::Subject, &subject_words);
    }
    if let Some(parent) = &in_reply_to {
        write_header(&mut out, HeaderDef::InReplyTo, &[bracketed(parent)?]);
    }
    let references = references(mail, in_reply_to.as_deref(), own_id)?;
    write_header(&mut out, HeaderDef::References, &references);
    if let Some((def, ids)) = &edit_or_delete {
        write_header(&mut out, *def, ids);
    }
    write_header(&mut out, HeaderDef::ChatVersion, &["1.0".to_owned()]);
    let auto_submitted = if is_mdn {
        Some("auto-replied".to_owned())
    } else {
        mail.auto_submitted
            .as_deref()
            .map(token_value)
            .transpose()?
    };
    if let Some(value) = auto_submitted {
        write_header(&mut out, HeaderDef::AutoSubmitted, &[value]);
    }
    if let Some(addr) = &mail.mdn_request_to {
        write_header(
            &mut out,
            HeaderDef::ChatDispositionNotificationTo,
            &[checked_addr(addr)?.to_owned()],
        );
    }
    if let Some(g) = group {
        write_group(&mut out, g, &system)?;
    }
    if let [att] = mail.attachments.as_slice() {
        for (def, value) in media_headers(att) {
            write_header(&mut out, def, &[value]);
        }
    }
    if let Some(words) = cte_header {
        write_header(&mut out, HeaderDef::ContentTransferEncoding, &words);
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Ok(out.into_bytes())
}

/// DC's References: the caller's chain (last three), or `In-Reply-To`, or the own id.
fn references(
    mail: &OutgoingEmail,
    in_reply_to: Option<&str>,
    own_id: &str,
) -> Result<Vec<String>, CodecError> {
    let chain: Vec<&str> = if !mail.references.is_empty() {
        let skip = mail.references.len().saturating_sub(3);
        mail.references
            .iter()
            .skip(skip)
            .map(String::as_str)
            .collect()
    } else if let Some(parent) = in_reply_to {
        vec![parent]
    } else {
        vec![own_id]
    };
    chain.into_iter().map(bracketed).collect()
}

/// Group headers in Delta Chat's order; the system-message headers
/// (`-Name-Changed`, `-Member-Added`, `-Member-Removed`) go after the name.
fn write_group(
    out: &mut String,
    g: &OutgoingGroup,
    system: &[(HeaderDef, Vec<String>)],
) -> Result<(), CodecError> {
    if let Some(id) = &g.id {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(CodecError::InvalidInput(format!("group id {id:?}")));
        }
        write_header(out, HeaderDef::ChatGroupId, std::slice::from_ref(id));
    }
    let name = text_words(&g.name);
    if name.is_empty() {
        return Err(CodecError::Missing("group name"));
    }
    write_header(out, HeaderDef::ChatGroupName, &name);
    if let Some(ts) = g.name_timestamp {
        write_header(out, HeaderDef::ChatGroupNameTimestamp, &[ts.to_string()]);
    }
    for (def, words) in system {
        write_header(out, *def, words);
    }
    if let Some(description) = &g.description {
        let words = encoded_words(&sanitize_header_text(description));
        write_header(out, HeaderDef::ChatGroupDescription, &words);
        if let Some(ts) = g.description_timestamp {
            write_header(
                out,
                HeaderDef::ChatGroupDescriptionTimestamp,
                &[ts.to_string()],
            );
        }
    }
    Ok(())
}

/// `Autocrypt: addr=…; prefer-encrypt=mutual; keydata=…` with the key folded.
fn write_autocrypt(out: &mut String, ac: &Autocrypt) -> Result<(), CodecError> {
    if ac.keydata.is_empty() {
        return Err(CodecError::Missing("autocrypt keydata"));
    }
    let mut words = vec![format!("addr={};", checked_addr(&ac.addr)?)];
    if ac.prefer_encrypt_mutual {
        words.push("prefer-encrypt=mutual;".to_owned());
    }
    // " keydata=" plus 68 characters, then 76 per line: every line stays under 78
    let key = B64.encode(&ac.keydata);
    let (first, rest) = key.split_at(key.len().min(68));
    words.push(format!("keydata={first}"));
    words.extend(
        rest.as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned()),
    );
    write_header(out, HeaderDef::Autocrypt, &words);
    Ok(())
}

/// Header value that must be a single token (e.g. `auto-generated`).
fn token_value(v: &str) -> Result<String, CodecError> {
    let v = sanitize_header_text(v);
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.;=".contains(c));
    if ok {
        Ok(v)
    } else {
        Err(CodecError::InvalidInput(format!("header token {v:?}")))
    }
}

/// Words for `"Name" <addr>` (or `=?utf-8?B?…?= <addr>`, or `<addr>`).
fn mailbox_words(m: &Mailbox) -> Result<Vec<String>, CodecError> {
    let addr = checked_addr(m.addr.trim())?;
    let name = m
        .name
        .as_deref()
        .map(sanitize_header_text)
        .unwrap_or_default();
    let mut words = Vec::new();
    if !name.is_empty() {
        if needs_encoding(&name) || name.len() > 60 {
            words.extend(encoded_words(&name));
        } else {
            words.push(quoted_string(&name));
        }
    }
    words.push(format!("<{addr}>"));
    Ok(words)
}

fn mailbox_list_words(list: &[Mailbox]) -> Result<Vec<String>, CodecError> {
    let mut words = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let mut w = mailbox_words(m)?;
        if i + 1 < list.len()
            && let Some(last) = w.last_mut()
        {
            last.push(',');
        }
        words.append(&mut w);
    }
    Ok(words)
}

/// `[forward header][> quote lines + empty line]text`, footer marks escaped.
fn render_text(text: &str, quote: Option<&str>, forwarded: bool) -> String {
    let mut out = String::new();
    if forwarded {
        out.push_str(FORWARD_HEADER);
        out.push_str("\nFrom: Delta Chat\n\n");
    }
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    if let Some(quote) = quote {
        let quote = quote.replace("\r\n", "\n").replace('\r', "\n");
        for line in quote.trim_end_matches('\n').split('\n') {
            if line.is_empty() {
                out.push_str(">\n");
            } else {
                out.push_str("> ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
    } else if text.starts_with('>') && !forwarded {
        // otherwise the receiver would take the user's first lines for a quote
        out.push('\n');
    }
    out.push_str(&escape_footer_marks(&text));
    out
}

fn text_leaf(text: &str) -> Entity {
    let body = crlf_text(text);
    let (cte, body) = if is_7bit_safe(&body) {
        ("7bit", body)
    } else {
        ("quoted-printable", quoted_printable(&body))
    };
    Entity::Leaf {
        content_type: vec!["text/plain;".to_owned(), "charset=\"utf-8\"".to_owned()],
        disposition: Vec::new(),
        cte,
        body,
        extra: Vec::new(),
    }
}

fn html_leaf(html: &str) -> Entity {
    let body = crlf_text(html);
    let (cte, body) = if is_7bit_safe(&body) && body.split("\r\n").all(|l| l.len() <= 78) {
        ("7bit", body)
    } else {
        ("quoted-printable", quoted_printable(&body))
    };
    Entity::Leaf {
        content_type: vec!["text/html;".to_owned(), "charset=\"utf-8\"".to_owned()],
        disposition: Vec::new(),
        cte,
        body,
        extra: Vec::new(),
    }
}

fn media_headers(att: &OutgoingAttachment) -> Vec<(HeaderDef, String)> {
    let mut headers = Vec::new();
    if att.voice_message {
        headers.push((HeaderDef::ChatVoiceMessage, "1".to_owned()));
    }
    if let Some(d) = att.duration_ms {
        headers.push((HeaderDef::ChatDuration, d.to_string()));
    }
    if att.sticker {
        headers.push((HeaderDef::ChatContent, "sticker".to_owned()));
    }
    headers
}

fn attachment_leaf(att: &OutgoingAttachment) -> Entity {
    let mime = sanitize_header_text(&att.mime_type).to_ascii_lowercase();
    let is_token = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    let mime = match mime.split_once('/') {
        Some((t, s)) if is_token(t) && is_token(s) => mime.clone(),
        _ => "application/octet-stream".to_owned(),
    };
    let base = att.filename.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut filename = sanitize_header_text(base);
    if filename.is_empty() || filename == "." || filename == ".." {
        filename = "file".to_owned();
    }
    Entity::Leaf {
        content_type: vec![mime],
        disposition: filename_params(&filename),
        cte: "base64",
        body: base64_lines(&att.data),
        extra: media_headers(att),
    }
}

/// `attachment; filename="…"`, or RFC 2231 `filename*=utf-8''…` (with
/// continuations when long) for names that are not plain ASCII.
fn filename_params(name: &str) -> Vec<String> {
    let plain =
        name.is_ascii() && name.len() <= 60 && !name.contains(['"', '\\']) && !name.contains("=?");
    if plain {
        return vec![
            "attachment;".to_owned(),
            format!("filename={}", quoted_string(name)),
        ];
    }
    let encoded = rfc2231_percent(name);
    if encoded.len() <= 60 {
        return vec![
            "attachment;".to_owned(),
            format!("filename*=utf-8''{encoded}"),
        ];
    }
    let mut words = vec!["attachment;".to_owned()];
    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut rest = encoded.as_str();
    while !rest.is_empty() {
        // never split a %XX escape
        let take = if rest.starts_with('%') {
            3.min(rest.len())
        } else {
            1
        };
        current.push_str(&rest[..take]);
        rest = &rest[take..];
        if current.len() >= 57 {
            chunks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let prefix = if i == 0 { "utf-8''" } else { "" };
        let sep = if i + 1 < n { ";" } else { "" };
        words.push(format!("filename*{i}*={prefix}{chunk}{sep}"));
    }
    debug_assert!(words.iter().all(|w| w.len() <= MAX_WORD));
    words
}

fn mdn_entity(from: &Mailbox, ids: &[String]) -> Result<Entity, CodecError> {
    let (first, rest) = ids
        .split_first()
        .ok_or(CodecError::Missing("original_message_ids"))?;
    let me = checked_addr(from.addr.trim())?;
    let mut report = String::new();
    let mut field = |def: HeaderDef, words: &[String]| write_header(&mut report, def, words);
    field(HeaderDef::OriginalRecipient, &[format!("rfc822;{me}")]);
    field(HeaderDef::FinalRecipient, &[format!("rfc822;{me}")]);
    field(HeaderDef::OriginalMessageId, &[bracketed(first)?]);
    field(
        HeaderDef::Disposition,
        &[
            "manual-action/MDN-sent-automatically;".to_owned(),
            "displayed".to_owned(),
        ],
    );
    if !rest.is_empty() {
        let more = rest
            .iter()
            .map(|id| bracketed(id))
            .collect::<Result<Vec<_>, _>>()?;
        field(HeaderDef::AdditionalMessageIds, &more);
    }
    Ok(Entity::Multi {
        subtype: "report",
        params: vec!["report-type=disposition-notification;".to_owned()],
        children: vec![
            text_leaf("This is a receipt notification."),
            Entity::Leaf {
                content_type: vec!["message/disposition-notification".to_owned()],
                disposition: Vec::new(),
                cte: "7bit",
                body: report,
                extra: Vec::new(),
            },
        ],
    })
}

/// Content headers and encoded body of an entity whose boundaries are chosen.
type Rendered = (Vec<(HeaderDef, Vec<String>)>, String);

/// Renders children first, then picks a boundary (derived from the
/// Message-ID, so deterministic) that occurs in none of them.
fn render(entity: Entity, seed_id: &str, counter: &mut u64) -> Rendered {
    match entity {
        Entity::Leaf {
            content_type,
            disposition,
            cte,
            body,
            extra,
        } => {
            let mut headers = vec![(HeaderDef::ContentType, content_type)];
            if !disposition.is_empty() {
                headers.push((HeaderDef::ContentDisposition, disposition));
            }
            for (def, value) in extra {
                headers.push((def, vec![value]));
            }
            headers.push((HeaderDef::ContentTransferEncoding, vec![cte.to_owned()]));
            (headers, body)
        }
        Entity::Multi {
            subtype,
            params,
            children,
        } => {
            let children: Vec<String> = children
                .into_iter()
                .map(|c| {
                    let (headers, body) = render(c, seed_id, counter);
                    let mut s = String::with_capacity(body.len() + 256);
                    for (def, words) in headers {
                        write_header(&mut s, def, &words);
                    }
                    s.push_str("\r\n");
                    s.push_str(&body);
                    s
                })
                .collect();
            let seed = seed_id.as_bytes();
            let boundary = loop {
                *counter += 1;
                let b = format!(
                    "{:016x}_{:016x}_{:016x}",
                    fnv1a(seed, *counter),
                    fnv1a(seed, counter.wrapping_add(0x5151)),
                    fnv1a(seed, counter.wrapping_add(0xa2a2))
                );
                if !children.iter().any(|c| c.contains(&b)) {
                    break b;
                }
            };
            let mut content_type = vec![format!("multipart/{subtype};")];
            content_type.extend(params);
            content_type.push(format!("boundary=\"{boundary}\""));
            let mut body =
                String::with_capacity(children.iter().map(String::len).sum::<usize>() + 256);
            body.push_str("\r\n");
            for child in &children {
                body.push_str("--");
                body.push_str(&boundary);
                body.push_str("\r\n");
                body.push_str(child);
                if !child.ends_with("\r\n") {
                    body.push_str("\r\n");
                }
            }
            body.push_str("--");
            body.push_str(&boundary);
            body.push_str("--\r\n");
            (vec![(HeaderDef::ContentType, content_type)], body)
        }
    }
}
