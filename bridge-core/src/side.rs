//! The `Side` trait: how a protocol side plugs into the hub.
//!
//! **API Boundary:** sides see only the types in this module and in [`crate::ir`].

use crate::ids::{ChatId, MessageId, OutboxId, PuppetId, SideName};
use crate::ir::EventKind;
use async_trait::async_trait;
use std::time::Duration;

/// What a side can express. The hub degrades honestly where a flag is false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Edits can be carried natively.
    pub edits: bool,
    /// Deletions for everyone can be carried natively.
    pub redactions: bool,
    /// Reactions can be carried.
    pub reactions: bool,
    /// Files can be carried.
    pub attachments: bool,
    /// Read receipts can be carried.
    pub receipts: bool,
    /// The side wants every chat, even ones not linked to it yet (it opens a portal on first delivery).
    pub auto_portal: bool,
    /// A person may hold several reactions on one message (Matrix); otherwise a new reaction
    /// replaces the person's earlier one (RFC 9078 as Delta Chat applies it, XEP-0444).
    pub multiple_reactions: bool,
}

impl Capabilities {
    /// Every capability on (test and recording sides that stand in for a full side).
    pub fn all() -> Self {
        Self {
            edits: true,
            redactions: true,
            reactions: true,
            attachments: true,
            receipts: true,
            auto_portal: true,
            multiple_reactions: false,
        }
    }
}

/// A chat member as a side sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The hub's id of the person.
    pub puppet_id: PuppetId,
    /// Display name.
    pub display_name: String,
    /// The side the person is native to.
    pub origin_side: String,
    /// Their id on their native side.
    pub native_id: String,
    /// Their id on the side this view is for, if linked there (e.g. an email-native person's address).
    pub remote_id_here: Option<String>,
    /// Whether they are a current member (false: past member).
    pub joined: bool,
    /// When they joined or left, Unix seconds.
    pub changed_ts: i64,
}

/// A chat as a side sees it when delivering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatView {
    /// The hub's id.
    pub id: ChatId,
    /// The stable group id of the chat.
    pub group_id: String,
    /// Name.
    pub name: String,
    /// When the name was last set, Unix seconds.
    pub name_ts: i64,
    /// Topic / description.
    pub topic: String,
    /// This side's id of the chat, if linked.
    pub remote_chat_id: Option<String>,
    /// Members, current and past.
    pub members: Vec<MemberView>,
    /// This side's id of the chat's first linked message (thread root).
    pub thread_root: Option<String>,
    /// This side's ids of the latest linked messages before this one, oldest first (at most 3).
    pub recent: Vec<String>,
}

/// One outbox row, fully resolved for the side that must send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// The row; stable across retries, usable as an idempotency key.
    pub outbox_id: OutboxId,
    /// How many attempts failed before this one.
    pub attempts: i64,
    /// The chat.
    pub chat: ChatView,
    /// The hub's event.
    pub message_id: MessageId,
    /// A random, stable id of the event (for Message-IDs and transaction ids).
    pub message_uuid: String,
    /// The side the event came from.
    pub origin_side: String,
    /// Who sent it (`None` for the bridge's own notices).
    pub sender: Option<MemberView>,
    /// When, Unix milliseconds.
    pub ts_ms: i64,
    /// The event, relations resolved for this side.
    pub event: EventKind,
}

/// What a successful delivery produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Remote ids to link to the event: (part, remote id). Part `""` is the whole message.
    pub links: Vec<(String, String)>,
    /// A remote chat id to link the chat to (a portal the side just created).
    pub chat_link: Option<String>,
    /// Ghost ids the side used for people (puppet, id on this side), so replies from them map back.
    pub puppet_links: Vec<(PuppetId, String)>,
    /// Partial problems to tell the people on the side the event came from (e.g. one recipient refused).
    pub notices: Vec<String>,
}

/// Why a delivery failed, classified so the hub can choose between a retry, a notice and a drop.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// The side cannot express this; the hub records it and may tell the chat.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Try again later.
    #[error("retryable: {message}")]
    Retryable {
        /// What went wrong.
        message: String,
        /// Server-requested wait, if any.
        retry_after: Option<Duration>,
    },
    /// Will never work; the hub records it and tells the chat.
    #[error("permanent: {0}")]
    Permanent(String),
    /// Nothing to do (e.g. an event that has no meaning on this side).
    #[error("ignored: {0}")]
    Ignored(String),
}

impl SideError {
    /// A retryable error without a server-requested wait.
    pub fn retry(message: impl Into<String>) -> Self {
        SideError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A protocol side.
///
/// Lifecycle: the binary builds the side, registers it with the [`crate::Bridge`], and starts the side's
/// own ingest loops, which call [`crate::Router::ingest`]. The hub drains the side's outbox through
/// [`Side::deliver`], one item at a time per chat, in order.
#[async_trait]
pub trait Side: Send + Sync + 'static {
    /// The side's name; constant.
    fn name(&self) -> SideName;
    /// What the side can express; constant, no I/O.
    fn capabilities(&self) -> Capabilities;
    /// Send one item. Must be idempotent for the same `outbox_id` (it is retried after a crash).
    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError>;
    /// Fetches the bytes of an attachment this side handed the hub with a `source` instead of
    /// data. `Retryable` errors retry the delivery that needs the file; others make it a line
    /// that names the file.
    async fn fetch_media(&self, source: &str) -> Result<Fetched, SideError> {
        Err(SideError::Unsupported(format!(
            "{} cannot fetch {source}",
            self.name()
        )))
    }
}

/// An attachment's bytes fetched from its origin side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes.
    pub data: Vec<u8>,
    /// The MIME type the origin reported, if any.
    pub mime_type: Option<String>,
}
