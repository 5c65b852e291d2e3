//! The side-neutral message IR: what a side hands the hub and what the hub hands a side.
//!
//! **Architecture Invariant:** nothing here knows about MIME, ruma or XMPP types.

use crate::ids::{MessageId, SideName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A person as one side names them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserRef {
    /// The side whose id space `remote_id` lives in (a side may name a ghost of another side).
    pub side: SideName,
    /// The side's id of the person (email address, Matrix user id, real JID).
    pub remote_id: String,
    /// Display name, when the side knows one.
    pub display_name: Option<String>,
}

impl UserRef {
    /// A person of side `side` with id `remote_id`.
    pub fn new(side: SideName, remote_id: impl Into<String>, display_name: Option<String>) -> Self {
        Self {
            side,
            remote_id: remote_id.into(),
            display_name,
        }
    }
}

/// A pointer at another message (reply target, edit target, reaction target).
///
/// Inbound, a side fills `remote_id` with its own id of the target; the router fills `message_id`.
/// Outbound, the hub fills `message_id`, the target side's `remote_id` (if the target is linked there),
/// a short `excerpt` of its text for quotes, its sender, and whether that sender asked for a read receipt.
///
/// Stored events keep relations as JSON: new fields must be `#[serde(default)]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// The target's id on the side that reads this relation.
    pub remote_id: Option<String>,
    /// The target in the hub.
    pub message_id: Option<MessageId>,
    /// The target's text (shortened), for quote fallbacks.
    pub excerpt: Option<String>,
    /// The target's sender display name, for quote fallbacks.
    pub sender_name: Option<String>,
    /// Outbound: the target sender's id on the side that reads this relation (an email person's
    /// address on the email side), if they are linked there.
    #[serde(default)]
    pub sender_remote_id: Option<String>,
    /// Outbound: the target is a message whose sender asked for a read receipt
    /// ([`MessageContent::wants_receipt`]).
    #[serde(default)]
    pub wants_receipt: bool,
}

impl Relation {
    /// An inbound relation naming a remote id.
    pub fn remote(id: impl Into<String>) -> Self {
        Self {
            remote_id: Some(id.into()),
            ..Self::default()
        }
    }
}

/// What kind of file an attachment is, as far as chat clients care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachmentKind {
    /// A picture.
    Image,
    /// A sticker (an image shown without a bubble).
    Sticker,
    /// Audio.
    Audio,
    /// A recorded voice message.
    Voice,
    /// Video.
    Video,
    /// Anything else.
    File,
}

impl AttachmentKind {
    /// A guess from a MIME type.
    pub fn from_mime(mime: &str) -> Self {
        let top = mime.split('/').next().unwrap_or("").to_ascii_lowercase();
        match top.as_str() {
            "image" => Self::Image,
            "audio" => Self::Audio,
            "video" => Self::Video,
            _ => Self::File,
        }
    }
}

/// One part of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Text, with an optional sanitised HTML rendering.
    Text {
        /// Plain text; always present.
        body: String,
        /// Formatted version, if any.
        html: Option<String>,
        /// `/me` style action.
        emote: bool,
        /// Automated notice (bots).
        notice: bool,
    },
    /// A file.
    Attachment {
        /// File name as sent.
        filename: String,
        /// MIME type.
        mime_type: String,
        /// What it is.
        kind: AttachmentKind,
        /// The bytes; empty while they are still at `source`.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// Duration of audio or video, in milliseconds.
        duration_ms: Option<u64>,
        /// Where the origin side can fetch the bytes (e.g. an `mxc://` URI) when `data` is empty:
        /// the hub fetches them through [`crate::Side::fetch_media`] when it delivers, so inputs
        /// are taken at once and the outbox does not hold the file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
}

impl Part {
    /// A plain text part.
    pub fn text(body: impl Into<String>) -> Self {
        Part::Text {
            body: body.into(),
            html: None,
            emote: false,
            notice: false,
        }
    }
}

/// A message's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageContent {
    /// Ordered parts.
    pub parts: Vec<Part>,
    /// The message this one replies to.
    pub reply_to: Option<Relation>,
    /// Whether the sender asked for a read receipt (email: `Chat-Disposition-Notification-To`
    /// naming the `From` address).
    #[serde(default)]
    pub wants_receipt: bool,
}

impl MessageContent {
    /// Concatenated text of all text parts.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            if let Part::Text { body, .. } = p {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(body);
            }
        }
        out
    }
}

/// A membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Joined or was added.
    Join,
    /// Left or was removed.
    Leave,
}

/// The event itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A new message.
    Message(MessageContent),
    /// A new version of an earlier message (always relative to the original, never layered).
    Edit {
        /// The original message.
        target: Relation,
        /// Its new content.
        content: MessageContent,
    },
    /// Delete an earlier message for everyone.
    Redaction {
        /// The message to delete.
        target: Relation,
    },
    /// A reaction; an empty key takes the sender's reaction back.
    Reaction {
        /// The message reacted to.
        target: Relation,
        /// The emoji (or other key).
        key: String,
        /// The sender's earlier reaction events on the target that this one replaces or takes
        /// back (filled by the hub), for sides where reactions are separate events (Matrix).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaces: Vec<Relation>,
    },
    /// Somebody joined or left.
    Membership {
        /// Who.
        subject: UserRef,
        /// How.
        change: MembershipChange,
    },
    /// Chat name or topic changed; `None` means unchanged.
    ///
    /// Outbound, the item's chat view shows the chat as it was just before this event, so the
    /// previous name is `OutboxItem::chat.name`.
    ChatInfo {
        /// New name.
        name: Option<String>,
        /// New topic.
        topic: Option<String>,
    },
    /// The sender has seen these messages. The hub drops targets the sender had already seen.
    Receipt {
        /// The messages seen.
        targets: Vec<Relation>,
    },
    /// A notice from the bridge itself (errors, degradations).
    Notice {
        /// What to say.
        text: String,
    },
}

impl EventKind {
    /// Short name used in the `message.kind` column and logs.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Message(_) => "message",
            EventKind::Edit { .. } => "edit",
            EventKind::Redaction { .. } => "redaction",
            EventKind::Reaction { .. } => "reaction",
            EventKind::Membership { .. } => "membership",
            EventKind::ChatInfo { .. } => "chat_info",
            EventKind::Receipt { .. } => "receipt",
            EventKind::Notice { .. } => "notice",
        }
    }
}

/// How the hub finds (or creates) the chat of an inbound event, tried in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatLocator {
    /// The side's id of the chat (Matrix room id, MUC JID, Chat-Group-ID).
    pub remote_chat_id: Option<String>,
    /// Ids (on the same side) of messages this one refers to (In-Reply-To, References).
    pub via_messages: Vec<String>,
    /// Chat name plus exact member set (Delta Chat ad-hoc groups carry no group id).
    pub name_and_members: Option<(String, BTreeSet<UserRef>)>,
    /// If nothing matches: open a new chat with this shape, or `None` when not allowed.
    pub create: Option<NewChat>,
}

/// A chat to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChat {
    /// Its name.
    pub name: String,
    /// Its topic.
    pub topic: String,
    /// Its initial members (the sender is added anyway).
    pub members: Vec<UserRef>,
    /// The side's id to link it to, if any.
    pub remote_chat_id: Option<String>,
}

/// An event a side hands the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEvent {
    /// The side it came from.
    pub side: SideName,
    /// Its unique id on that side (Message-ID, event id, stanza-id). Dedupe key.
    pub remote_id: String,
    /// Which chat.
    pub chat: ChatLocator,
    /// Who sent it.
    pub sender: UserRef,
    /// When, in Unix milliseconds.
    pub ts_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// The raw input, kept when the event cannot be placed.
    pub raw: Option<Vec<u8>>,
}

mod b64 {
    //! Base64 (standard, padded) for byte fields in JSON.
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(data))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
