//! Parsing: raw RFC 5322 bytes → [`ParsedEmail`], an inert struct.
//!
//! mail-parser does the MIME work; this module enforces limits, reads the
//! Delta Chat / COI headers, classifies body parts and simplifies the text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    Header, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use super::error::CodecError;
use super::headers::HeaderDef;
use super::html::html_to_text;
use super::model::{Autocrypt, Mailbox};
use super::simplify::{simplify, unflow};

/// Resource limits for [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest raw message accepted, checked before anything is parsed.
    pub max_message_bytes: usize,
    /// Deepest MIME nesting accepted; the root part has depth 0.
    pub max_mime_depth: usize,
    /// Most MIME parts accepted (containers included, nested messages counted).
    pub max_parts: usize,
    /// Largest decoded attachment accepted.
    pub max_attachment_bytes: usize,
}

impl Default for ParseLimits {
    /// 40 MiB per message, depth 16, 256 parts, 30 MiB per attachment (the
    /// chatmail relays' message limit; base64 makes 30 MiB about 40 MiB).
    fn default() -> Self {
        ParseLimits {
            max_message_bytes: 40 * 1024 * 1024,
            max_mime_depth: 16,
            max_parts: 256,
            max_attachment_bytes: 30 * 1024 * 1024,
        }
    }
}

/// Delta Chat group headers (`Chat-Group-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupHeaders {
    /// `Chat-Group-ID` (only encrypted Delta Chat groups carry one).
    pub id: Option<String>,
    /// `Chat-Group-Name`, decoded.
    pub name: Option<String>,
    /// `Chat-Group-Name-Changed`: the old name, decoded.
    pub name_changed_from: Option<String>,
    /// `Chat-Group-Name-Timestamp` (Unix seconds).
    pub name_timestamp: Option<i64>,
    /// `Chat-Group-Member-Added` (lower-cased address).
    pub member_added: Option<String>,
    /// `Chat-Group-Member-Removed` (lower-cased address).
    pub member_removed: Option<String>,
    /// `Chat-Group-Member-Timestamps`: one per `To` entry, then one per past member.
    pub member_timestamps: Vec<i64>,
    /// `Chat-Group-Past-Members`.
    pub past_members: Vec<Mailbox>,
    /// `Chat-Group-Description`, decoded (`=?utf-8?B??=` is `Some("")`).
    pub description: Option<String>,
    /// `Chat-Group-Description-Timestamp` (Unix seconds).
    pub description_timestamp: Option<i64>,
    /// `Chat-Group-Description-Changed` is present (its value is empty by design).
    pub description_changed: bool,
}

/// A read receipt (RFC 8098 MDN, Delta Chat flavour).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mdn {
    /// Message-IDs acknowledged: `Original-Message-ID` then
    /// `Additional-Message-IDs`; `In-Reply-To` when the report names none.
    pub original_message_ids: Vec<String>,
}

/// One file carried by the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// File name (directory parts and control characters removed).
    pub filename: Option<String>,
    /// Lower-cased `type/subtype`.
    pub mime_type: String,
    /// Decoded content. For `text/*` parts this is the content converted to UTF-8.
    pub data: Vec<u8>,
    /// `Chat-Voice-Message: 1`.
    pub voice_message: bool,
    /// `Chat-Duration` in milliseconds, when 0 < d < 24 h.
    pub duration_ms: Option<u64>,
    /// `Chat-Content: sticker`.
    pub sticker: bool,
}

/// Everything the bridge reads from one email. Inert: no methods with effects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedEmail {
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// First `From` mailbox (address lower-cased).
    pub from: Option<Mailbox>,
    /// `Sender` (relay mode: the bridge or bot that sent for `from`).
    pub sender: Option<Mailbox>,
    /// All `To` mailboxes.
    pub to: Vec<Mailbox>,
    /// All `Cc` mailboxes.
    pub cc: Vec<Mailbox>,
    /// Every `Delivered-To` (the envelope recipients, e.g. puppet addresses).
    pub delivered_to: Vec<String>,
    /// `Date` as Unix seconds.
    pub date_unix: Option<i64>,
    /// `Subject`, decoded.
    pub subject: Option<String>,
    /// `In-Reply-To` ids, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// `References` ids, without angle brackets.
    pub references: Vec<String>,
    /// `Chat-Version`.
    pub chat_version: Option<String>,
    /// `Auto-Submitted`.
    pub auto_submitted: Option<String>,
    /// Top-level `multipart/encrypted` (PGP/MIME).
    pub is_encrypted: bool,
    /// For PGP/MIME: the `application/octet-stream` part (the armored message).
    pub encrypted_payload: Option<Vec<u8>>,
    /// `Chat-Group-*` headers.
    pub group: GroupHeaders,
    /// `Chat-Edit`: the Message-ID of the edited message.
    pub chat_edit: Option<String>,
    /// `Chat-Delete`: Message-IDs to delete.
    pub chat_delete: Vec<String>,
    /// RFC 9078 reaction: the trimmed body of the `Content-Disposition:
    /// reaction` part; an empty string takes a reaction back.
    pub reaction: Option<String>,
    /// `Chat-Disposition-Notification-To` (else RFC 8098 `Disposition-Notification-To`)
    /// as sent (lower-cased address). Only honour it through [`ParsedEmail::mdn_requested_to`].
    pub mdn_request: Option<String>,
    /// The message is a read receipt.
    pub mdn: Option<Mdn>,
    /// `Autocrypt` header.
    pub autocrypt: Option<Autocrypt>,
    /// Simplified text (LF line ends). For edits the `✏️` prefix is removed.
    pub text: String,
    /// Top quote (reply with quote), without `> ` prefixes.
    pub top_quote: Option<String>,
    /// Text after the `-- ` line.
    pub footer: Option<String>,
    /// The text started with a forward header.
    pub is_forwarded: bool,
    /// Classic mail: a bottom quote or non-standard footer was cut.
    pub text_was_cut: bool,
    /// The `text/html` body, if any. For HTML-only mail `text` holds a plain rendering.
    pub html: Option<String>,
    /// Files.
    pub attachments: Vec<Attachment>,
    /// `Chat-Version` is present.
    pub is_chat: bool,
    /// Non-fatal oddities (invalid UTF-8 replaced, duplicate headers, …).
    pub warnings: Vec<String>,
}

impl ParsedEmail {
    /// The address a read receipt may be sent to: the requested address only when it
    /// equals the `From` address (Delta Chat's and COI's rule).
    pub fn mdn_requested_to(&self) -> Option<&str> {
        let requested = self.mdn_request.as_deref()?;
        let from = self.from.as_ref()?;
        (from.addr == requested).then_some(requested)
    }
}

/// Parses one message. Fails only on limits and on bytes that hold no header
/// at all; everything else yields a result, with `warnings` for oddities.
pub fn parse(raw: &[u8], limits: &ParseLimits) -> Result<ParsedEmail, CodecError> {
    if raw.len() > limits.max_message_bytes {
        return Err(CodecError::TooLarge {
            what: "message",
            size: raw.len(),
            limit: limits.max_message_bytes,
        });
    }
    prescan(raw, limits)?;
    let message = MessageParser::new()
        .parse(raw)
        .ok_or_else(|| CodecError::Malformed("no header found".to_owned()))?;
    check_structure(&message, limits)?;
    let root = message
        .parts
        .first()
        .ok_or_else(|| CodecError::Malformed("no MIME part".to_owned()))?;

    let mut warnings = Warnings::default();
    let header_block = raw.get(..root.offset_body as usize).unwrap_or(raw);
    if std::str::from_utf8(header_block).is_err() {
        warnings.push("invalid UTF-8 in the header block was replaced".to_owned());
    }
    let top = Headers::new(raw, &root.headers);
    for def in SINGLETONS {
        if top.count(def) > 1 {
            warnings.push(format!("duplicate {def} header; the first one is used"));
        }
    }

    let mut out = ParsedEmail {
        message_id: top
            .ids(HeaderDef::MessageId, &mut warnings)
            .into_iter()
            .next(),
        from: None,
        sender: top
            .mailboxes(HeaderDef::Sender, &mut warnings)
            .into_iter()
            .next(),
        to: top.mailboxes(HeaderDef::To, &mut warnings),
        cc: top.mailboxes(HeaderDef::Cc, &mut warnings),
        delivered_to: top
            .all(HeaderDef::DeliveredTo)
            .map(|h| top.raw_value(h, &mut warnings))
            .map(|v| bare_addr(&v))
            .filter(|v| !v.is_empty())
            .collect(),
        date_unix: top.first(HeaderDef::Date).and_then(|h| match &h.value {
            HeaderValue::DateTime(dt) if dt.is_valid() => Some(dt.to_timestamp()),
            _ => None,
        }),
        subject: top.text(HeaderDef::Subject, &mut warnings),
        in_reply_to: top.ids(HeaderDef::InReplyTo, &mut warnings),
        references: top.ids(HeaderDef::References, &mut warnings),
        chat_version: top.raw(HeaderDef::ChatVersion, &mut warnings),
        auto_submitted: top.raw(HeaderDef::AutoSubmitted, &mut warnings),
        chat_edit: top
            .ids(HeaderDef::ChatEdit, &mut warnings)
            .into_iter()
            .next(),
        chat_delete: top.ids(HeaderDef::ChatDelete, &mut warnings),
        mdn_request: top
            .raw(HeaderDef::ChatDispositionNotificationTo, &mut warnings)
            .or_else(|| top.raw(HeaderDef::DispositionNotificationTo, &mut warnings))
            .map(|v| bare_addr(&v))
            .filter(|v| !v.is_empty()),
        ..ParsedEmail::default()
    };
    let from = top.mailboxes(HeaderDef::From, &mut warnings);
    if from.len() > 1 {
        warnings.push("From names more than one mailbox; the first one is used".to_owned());
    }
    out.from = from.into_iter().next();
    if out.from.is_none() {
        warnings.push("missing From".to_owned());
    }
    if out.message_id.is_none() {
        warnings.push("missing Message-ID".to_owned());
    }
    if top.first(HeaderDef::Date).is_some() && out.date_unix.is_none() {
        warnings.push("unparsable Date".to_owned());
    }
    out.is_chat = out.chat_version.is_some();
    out.group = read_group(&top, &mut warnings);
    out.autocrypt = top
        .raw(HeaderDef::Autocrypt, &mut warnings)
        .and_then(|v| parse_autocrypt(&v, &mut warnings));

    let root_type = content_type_of(root);
    out.is_encrypted = root_type.0 == "multipart" && root_type.1 == "encrypted";

    let body = walk_body(&message, raw, &top, limits, &mut warnings)?;
    if let Some(ids) = body.mdn_ids {
        let ids = if ids.is_empty() {
            out.in_reply_to.clone()
        } else {
            ids
        };
        out.mdn = Some(Mdn {
            original_message_ids: ids,
        });
    }
    out.reaction = body.reaction;
    out.attachments = body.attachments;
    out.encrypted_payload = body.encrypted_payload;
    out.html = (!body.html.is_empty()).then(|| body.html.join("\n"));

    let text = if body.plain.is_empty() {
        body.html
            .iter()
            .map(|h| html_to_text(h))
            .collect::<Vec<_>>()
            .join("\n\n")
    } else {
        body.plain.join("\n\n")
    };
    let simplified = simplify(&text, out.is_chat);
    out.text = simplified.text;
    if out.chat_edit.is_some()
        && let Some(rest) = out
            .text
            .strip_prefix("\u{270f}\u{fe0f}")
            .or_else(|| out.text.strip_prefix('\u{270f}'))
    {
        out.text = rest.to_owned();
    }
    out.top_quote = simplified.top_quote;
    out.footer = simplified.footer;
    out.is_forwarded = simplified.is_forwarded;
    out.text_was_cut = simplified.text_was_cut;
    out.warnings = warnings.0;
    Ok(out)
}

/// Headers that should appear once; a second copy earns a warning.
const SINGLETONS: [HeaderDef; 11] = [
    HeaderDef::From,
    HeaderDef::Sender,
    HeaderDef::MessageId,
    HeaderDef::Subject,
    HeaderDef::Date,
    HeaderDef::InReplyTo,
    HeaderDef::References,
    HeaderDef::ChatVersion,
    HeaderDef::ChatGroupId,
    HeaderDef::ChatGroupName,
    HeaderDef::ChatEdit,
];

#[derive(Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn push(&mut self, w: String) {
        // a hostile message can repeat an oddity many times: keep the list short
        if self.0.len() < 64 && !self.0.contains(&w) {
            self.0.push(w);
        }
    }
}

/// Cheap guard before mail-parser runs: counts `Content-Type:` lines. A
/// message with more of them than `max_parts` is refused without parsing.
fn prescan(raw: &[u8], limits: &ParseLimits) -> Result<(), CodecError> {
    const NEEDLE: &[u8] = b"content-type:";
    let mut count = 0usize;
    let mut at_line_start = true;
    for (i, &b) in raw.iter().enumerate() {
        if at_line_start
            && (b == b'c' || b == b'C')
            && raw
                .get(i..i + NEEDLE.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(NEEDLE))
        {
            count += 1;
            if count > limits.max_parts {
                return Err(CodecError::TooManyParts {
                    limit: limits.max_parts,
                });
            }
        }
        at_line_start = b == b'\n';
    }
    Ok(())
}

/// Counts parts and measures depth without recursion.
fn check_structure(message: &Message<'_>, limits: &ParseLimits) -> Result<(), CodecError> {
    let mut count = 0usize;
    let mut stack: Vec<(&Message<'_>, usize, usize)> = vec![(message, 0, 0)];
    while let Some((msg, id, depth)) = stack.pop() {
        count += 1;
        if count > limits.max_parts {
            return Err(CodecError::TooManyParts {
                limit: limits.max_parts,
            });
        }
        if depth > limits.max_mime_depth {
            return Err(CodecError::TooDeep {
                depth,
                limit: limits.max_mime_depth,
            });
        }
        let Some(part) = msg.parts.get(id) else {
            continue;
        };
        match &part.body {
            PartType::Multipart(children) => {
                for &child in children.iter().rev() {
                    let child = child as usize;
                    // children always come after their parent; anything else would loop
                    if child > id {
                        stack.push((msg, child, depth + 1));
                    }
                }
            }
            PartType::Message(inner) => stack.push((inner, 0, depth + 1)),
            _ => {}
        }
    }
    Ok(())
}

/// Header access over one part's headers, with raw-byte fallbacks.
struct Headers<'m, 'x> {
    raw: &'x [u8],
    list: Vec<(HeaderDef, &'m Header<'x>)>,
}

impl<'m, 'x> Headers<'m, 'x> {
    fn new(raw: &'x [u8], headers: &'m [Header<'x>]) -> Self {
        let list = headers
            .iter()
            .filter_map(|h| HeaderDef::from_name(h.name.as_str()).map(|def| (def, h)))
            .collect();
        Headers { raw, list }
    }

    fn all(&self, def: HeaderDef) -> impl Iterator<Item = &'m Header<'x>> + '_ {
        self.list
            .iter()
            .filter(move |(d, _)| *d == def)
            .map(|(_, h)| *h)
    }

    fn first(&self, def: HeaderDef) -> Option<&'m Header<'x>> {
        self.all(def).next()
    }

    fn count(&self, def: HeaderDef) -> usize {
        self.all(def).count()
    }

    fn bytes(&self, h: &Header<'_>) -> &'x [u8] {
        self.raw
            .get(h.offset_start as usize..h.offset_end as usize)
            .unwrap_or_default()
    }

    /// The unfolded raw value: line breaks removed, controls dropped, trimmed.
    fn raw_value(&self, h: &Header<'_>, warnings: &mut Warnings) -> String {
        let bytes = self.bytes(h);
        let text = String::from_utf8_lossy(bytes);
        let unfolded: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        clean_text(unfolded.trim(), h.name.as_str(), warnings)
    }

    fn raw(&self, def: HeaderDef, warnings: &mut Warnings) -> Option<String> {
        self.first(def)
            .map(|h| self.raw_value(h, warnings))
            .filter(|v| !v.is_empty())
    }

    /// Unstructured text with RFC 2047 encoded words decoded.
    fn text(&self, def: HeaderDef, warnings: &mut Warnings) -> Option<String> {
        let h = self.first(def)?;
        let raw_value = self.raw_value(h, warnings);
        if raw_value.split_whitespace().all(is_empty_encoded_word) {
            return Some(String::new());
        }
        let mut buf = raw_value.into_bytes();
        buf.push(b'\n');
        let decoded = match MessageStream::new(&buf).parse_unstructured() {
            HeaderValue::Text(t) => t.into_owned(),
            _ => String::new(),
        };
        Some(clean_text(decoded.trim(), h.name.as_str(), warnings))
    }

    /// Message-IDs of every copy of the header, without angle brackets.
    fn ids(&self, def: HeaderDef, warnings: &mut Warnings) -> Vec<String> {
        self.all(def)
            .flat_map(|h| extract_ids(&self.raw_value(h, warnings)))
            .collect()
    }

    /// Address lists: mail-parser's parsed value when it has one, else the
    /// raw value parsed as an address list.
    fn mailboxes(&self, def: HeaderDef, warnings: &mut Warnings) -> Vec<Mailbox> {
        let mut out = Vec::new();
        for h in self.all(def) {
            match &h.value {
                HeaderValue::Address(addr) => {
                    for a in addr.iter() {
                        push_mailbox(&mut out, a.name(), a.address(), warnings);
                    }
                }
                _ => {
                    let mut buf = self.raw_value(h, warnings).into_bytes();
                    buf.push(b'\n');
                    if let HeaderValue::Address(addr) = MessageStream::new(&buf).parse_address() {
                        for a in addr.iter() {
                            push_mailbox(&mut out, a.name(), a.address(), warnings);
                        }
                    }
                }
            }
        }
        out
    }
}

fn push_mailbox(
    out: &mut Vec<Mailbox>,
    name: Option<&str>,
    addr: Option<&str>,
    warnings: &mut Warnings,
) {
    let Some(addr) = addr else { return };
    let addr = clean_text(addr.trim(), "address", warnings).to_lowercase();
    if addr.is_empty() {
        return;
    }
    let name = name
        .map(|n| clean_text(n.trim(), "display name", warnings))
        .filter(|n| !n.is_empty());
    out.push(Mailbox { name, addr });
}

fn is_empty_encoded_word(word: &str) -> bool {
    let Some(inner) = word.strip_prefix("=?").and_then(|w| w.strip_suffix("??=")) else {
        return false;
    };
    let mut parts = inner.split('?');
    let charset = parts.next().unwrap_or_default();
    let encoding = parts.next().unwrap_or_default();
    parts.next().is_none() && !charset.is_empty() && matches!(encoding, "B" | "b" | "Q" | "q")
}

/// Tabs, CR and LF (e.g. from a decoded encoded-word) become spaces, other
/// control characters are dropped; a warning says when anything but tabs was there.
fn clean_text(s: &str, what: &str, warnings: &mut Warnings) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut suspicious = false;
    let cleaned: String = s
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            '\r' | '\n' => {
                suspicious = true;
                Some(' ')
            }
            c if c.is_control() => {
                suspicious = true;
                None
            }
            c => Some(c),
        })
        .collect();
    if suspicious {
        warnings.push(format!("control characters removed from {what}"));
    }
    cleaned
}

/// `<a@b>` → `a@b`, lower-cased; also accepts bare addresses.
fn bare_addr(v: &str) -> String {
    let v = v.trim();
    let inner = match (v.find('<'), v.rfind('>')) {
        (Some(s), Some(e)) if s < e => &v[s + 1..e],
        _ => v,
    };
    inner.trim().to_lowercase()
}

/// Message-IDs from a header value: every `<…>`, or whitespace-separated
/// tokens when there are no brackets (broken clients).
fn extract_ids(v: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = v;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else { break };
        let id: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if !id.is_empty() {
            ids.push(id);
        }
        rest = &after[end + 1..];
    }
    if ids.is_empty() && !v.contains('<') {
        ids = v
            .split_whitespace()
            .filter(|t| t.contains('@'))
            .map(str::to_owned)
            .collect();
    }
    ids
}

fn parse_timestamp(v: Option<String>, what: HeaderDef, warnings: &mut Warnings) -> Option<i64> {
    let v = v?;
    match v.trim().parse::<i64>() {
        Ok(t) => Some(t),
        Err(_) => {
            warnings.push(format!("{what}: not a timestamp"));
            None
        }
    }
}

fn read_group(top: &Headers<'_, '_>, warnings: &mut Warnings) -> GroupHeaders {
    let mut member_timestamps = Vec::new();
    if let Some(v) = top.raw(HeaderDef::ChatGroupMemberTimestamps, warnings) {
        for token in v.split_whitespace() {
            match token.parse::<i64>() {
                Ok(t) => member_timestamps.push(t),
                Err(_) => warnings.push(format!(
                    "{}: bad timestamp skipped",
                    HeaderDef::ChatGroupMemberTimestamps
                )),
            }
        }
    }
    let name_ts = top.raw(HeaderDef::ChatGroupNameTimestamp, warnings);
    let desc_ts = top.raw(HeaderDef::ChatGroupDescriptionTimestamp, warnings);
    GroupHeaders {
        id: top.raw(HeaderDef::ChatGroupId, warnings),
        name: top.text(HeaderDef::ChatGroupName, warnings),
        name_changed_from: top.text(HeaderDef::ChatGroupNameChanged, warnings),
        name_timestamp: parse_timestamp(name_ts, HeaderDef::ChatGroupNameTimestamp, warnings),
        member_added: top
            .raw(HeaderDef::ChatGroupMemberAdded, warnings)
            .map(|v| bare_addr(&v)),
        member_removed: top
            .raw(HeaderDef::ChatGroupMemberRemoved, warnings)
            .map(|v| bare_addr(&v)),
        member_timestamps,
        past_members: top.mailboxes(HeaderDef::ChatGroupPastMembers, warnings),
        description: top.text(HeaderDef::ChatGroupDescription, warnings),
        description_timestamp: parse_timestamp(
            desc_ts,
            HeaderDef::ChatGroupDescriptionTimestamp,
            warnings,
        ),
        description_changed: top.count(HeaderDef::ChatGroupDescriptionChanged) > 0,
    }
}

/// `addr=…; prefer-encrypt=mutual; keydata=…`. Unknown critical attributes
/// (not starting with `_`) make the header invalid, as Autocrypt requires.
fn parse_autocrypt(v: &str, warnings: &mut Warnings) -> Option<Autocrypt> {
    let mut addr = None;
    let mut mutual = false;
    let mut keydata = None;
    for attr in v.split(';') {
        let Some((name, value)) = attr.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "addr" => addr = Some(bare_addr(value)),
            "prefer-encrypt" => mutual = value.eq_ignore_ascii_case("mutual"),
            "keydata" => {
                let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                match B64.decode(compact.as_bytes()) {
                    Ok(bytes) => keydata = Some(bytes),
                    Err(_) => {
                        warnings.push(format!("{}: keydata is not base64", HeaderDef::Autocrypt));
                        return None;
                    }
                }
            }
            n if n.starts_with('_') => {}
            n => {
                warnings.push(format!("{}: unknown attribute {n}", HeaderDef::Autocrypt));
                return None;
            }
        }
    }
    match (addr, keydata) {
        (Some(addr), Some(keydata)) if !addr.is_empty() && !keydata.is_empty() => Some(Autocrypt {
            addr,
            prefer_encrypt_mutual: mutual,
            keydata,
        }),
        _ => {
            warnings.push(format!("{}: addr or keydata missing", HeaderDef::Autocrypt));
            None
        }
    }
}

/// Lower-cased (type, subtype); text/plain when there is no Content-Type.
fn content_type_of(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase(),
        ),
        None => ("text".to_owned(), "plain".to_owned()),
    }
}

#[derive(Clone, Copy, Default)]
struct Ctx {
    alternative: bool,
    related: bool,
    mdn_report: bool,
    encrypted: bool,
}

#[derive(Default)]
struct Body {
    plain: Vec<String>,
    html: Vec<String>,
    reaction: Option<String>,
    mdn_ids: Option<Vec<String>>,
    attachments: Vec<Attachment>,
    encrypted_payload: Option<Vec<u8>>,
}

/// Per-part Delta Chat media flags, read from the part and (for a single
/// attachment) from the top-level headers, where Delta Chat puts them.
#[derive(Default, Clone, Copy)]
struct MediaFlags {
    voice: Option<bool>,
    duration_ms: Option<Option<u64>>,
    sticker: Option<bool>,
}

fn media_flags(h: &Headers<'_, '_>, warnings: &mut Warnings) -> MediaFlags {
    MediaFlags {
        voice: h
            .raw(HeaderDef::ChatVoiceMessage, warnings)
            .map(|v| v.trim() == "1"),
        duration_ms: h.raw(HeaderDef::ChatDuration, warnings).map(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|d| *d > 0 && *d < 24 * 3600 * 1000)
        }),
        sticker: h
            .raw(HeaderDef::ChatContent, warnings)
            .map(|v| v.trim().eq_ignore_ascii_case("sticker")),
    }
}

fn walk_body(
    message: &Message<'_>,
    raw: &[u8],
    top: &Headers<'_, '_>,
    limits: &ParseLimits,
    warnings: &mut Warnings,
) -> Result<Body, CodecError> {
    let mut body = Body::default();
    let mut part_flags: Vec<MediaFlags> = Vec::new();
    let mut stack: Vec<(usize, Ctx)> = vec![(0, Ctx::default())];
    while let Some((id, ctx)) = stack.pop() {
        let Some(part) = message.parts.get(id) else {
            continue;
        };
        let (ctype, subtype) = content_type_of(part);
        if let PartType::Multipart(children) = &part.body {
            let report_type = part
                .content_type()
                .and_then(|ct| ct.attribute("report-type"))
                .map(str::to_ascii_lowercase);
            let child_ctx = Ctx {
                alternative: ctx.alternative || subtype == "alternative",
                related: ctx.related || subtype == "related",
                mdn_report: ctx.mdn_report
                    || subtype == "report"
                        && report_type.as_deref() == Some("disposition-notification"),
                encrypted: ctx.encrypted || subtype == "encrypted",
            };
            if subtype == "report" && child_ctx.mdn_report && body.mdn_ids.is_none() {
                body.mdn_ids = Some(Vec::new());
            }
            for &child in children.iter().rev() {
                let child = child as usize;
                if child > id {
                    stack.push((child, child_ctx));
                }
            }
            continue;
        }

        let disposition = part
            .content_disposition()
            .map(|d| d.ctype().to_ascii_lowercase());
        let is_attachment_disp = disposition.as_deref() == Some("attachment");
        let filename = part.attachment_name().and_then(clean_filename);

        if ctx.encrypted {
            if ctype == "application" && subtype == "octet-stream" {
                body.encrypted_payload = Some(part.contents().to_vec());
            }
            continue;
        }
        if disposition.as_deref() == Some("reaction") {
            let text = String::from_utf8_lossy(part.contents());
            body.reaction = Some(text.trim().to_owned());
            continue;
        }
        if ctx.mdn_report && ctype == "message" && subtype == "disposition-notification" {
            let fields = String::from_utf8_lossy(part.contents());
            body.mdn_ids = Some(mdn_ids(&fields));
            continue;
        }

        let inline_text = !is_attachment_disp && filename.is_none();
        match &part.body {
            PartType::Text(text) if inline_text && ctype == "text" && subtype == "plain" => {
                if part.is_encoding_problem {
                    warnings.push(format!(
                        "text part {id}: transfer encoding broken, raw text kept"
                    ));
                }
                check_charset(part, id, warnings);
                let mut text = strip_nul(text, warnings);
                if let Some(ct) = part.content_type() {
                    let flowed = ct
                        .attribute("format")
                        .is_some_and(|f| f.eq_ignore_ascii_case("flowed"));
                    if flowed {
                        let delsp = ct
                            .attribute("delsp")
                            .is_some_and(|d| d.eq_ignore_ascii_case("yes"));
                        text = unflow(&text, delsp);
                    }
                }
                if text.contains('\u{fffd}') {
                    warnings.push(format!("text part {id}: invalid bytes replaced"));
                }
                body.plain.push(text);
            }
            PartType::Html(html) if inline_text => {
                check_charset(part, id, warnings);
                body.html.push(strip_nul(html, warnings));
            }
            _ if part.is_encoding_problem && ctype != "text" => {
                warnings.push(format!(
                    "part {id} ({ctype}/{subtype}): transfer encoding broken, part dropped"
                ));
            }
            // another rendition of the text (text/enriched, text/markdown, …)
            _ if ctx.alternative && inline_text && ctype == "text" => {}
            // a resource referenced from HTML (cid:), not a file for the chat
            _ if ctx.related && inline_text && !matches!(part.body, PartType::Message(_)) => {}
            _ => {
                let data = part.contents();
                if data.len() > limits.max_attachment_bytes {
                    return Err(CodecError::TooLarge {
                        what: "attachment",
                        size: data.len(),
                        limit: limits.max_attachment_bytes,
                    });
                }
                let mime_type = if matches!(part.body, PartType::Message(_)) {
                    "message/rfc822".to_owned()
                } else if subtype.is_empty() {
                    "application/octet-stream".to_owned()
                } else {
                    format!("{ctype}/{subtype}")
                };
                part_flags.push(media_flags(&Headers::new(raw, &part.headers), warnings));
                body.attachments.push(Attachment {
                    filename,
                    mime_type,
                    data: data.to_vec(),
                    ..Attachment::default()
                });
            }
        }
    }

    let top_flags = media_flags(top, warnings);
    let single = body.attachments.len() == 1;
    for (att, flags) in body.attachments.iter_mut().zip(part_flags) {
        let pick = |own: Option<bool>, top: Option<bool>| own.or(if single { top } else { None });
        att.voice_message = pick(flags.voice, top_flags.voice).unwrap_or(false);
        att.sticker = pick(flags.sticker, top_flags.sticker).unwrap_or(false);
        att.duration_ms = flags
            .duration_ms
            .or(if single { top_flags.duration_ms } else { None })
            .flatten();
    }
    Ok(body)
}

fn check_charset(part: &MessagePart<'_>, id: usize, warnings: &mut Warnings) {
    if let Some(cs) = part.content_type().and_then(|ct| ct.attribute("charset")) {
        let lower = cs.to_ascii_lowercase();
        let is_utf8 = lower.contains("utf-8") || lower.contains("utf8");
        if !is_utf8 && charset_decoder(cs.as_bytes()).is_none() {
            warnings.push(format!(
                "part {id}: unknown charset {cs:?}, decoded as UTF-8"
            ));
        }
    }
}

fn strip_nul(text: &str, warnings: &mut Warnings) -> String {
    if text.contains('\0') {
        warnings.push("NUL bytes removed from text".to_owned());
        text.replace('\0', "")
    } else {
        text.to_owned()
    }
}

/// A file name without directories or control characters.
fn clean_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then(|| cleaned.to_owned())
}

/// Message-IDs from a `message/disposition-notification` body.
fn mdn_ids(fields: &str) -> Vec<String> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in fields.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = unfolded.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            unfolded.push(line.to_owned());
        }
    }
    let mut original = Vec::new();
    let mut additional = Vec::new();
    for line in &unfolded {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match HeaderDef::from_name(name) {
            Some(HeaderDef::OriginalMessageId) => original.extend(extract_ids(value)),
            Some(HeaderDef::AdditionalMessageIds) => additional.extend(extract_ids(value)),
            _ => {}
        }
    }
    original.extend(additional);
    original
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(extract_ids("<a@b> <c@d>\t<e@f>"), vec!["a@b", "c@d", "e@f"]);
        assert_eq!(extract_ids("a@b"), vec!["a@b"]);
        assert!(extract_ids("<>").is_empty());
        assert!(extract_ids("<unterminated").is_empty());
    }

    #[test]
    fn empty_encoded_word() {
        assert!(is_empty_encoded_word("=?utf-8?B??="));
        assert!(!is_empty_encoded_word("=?utf-8?B?YQ==?="));
    }

    #[test]
    fn filenames() {
        assert_eq!(
            clean_filename("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(clean_filename("C:\\x\\a.txt").as_deref(), Some("a.txt"));
        assert_eq!(clean_filename(".."), None);
    }
}
