//! The coi-bridge hub: the side-neutral message IR, the chat / puppet / message model, the `Side` trait,
//! the router and the SQL store.
//!
//! **Architecture Invariant:** `bridge-core` knows nothing about ruma, xmpp-parsers, IMAP or MIME.

pub mod bridge;
pub mod config;
pub mod ids;
pub mod ir;
pub mod router;
pub mod side;
pub mod store;
pub mod testing;

pub use bridge::{Bridge, BridgeBuilder, DrainStats, RetryPolicy};
pub use ids::{ChatId, MessageId, OutboxId, PuppetId, SideName};
pub use router::{IngestOutcome, Router, RouterError};
pub use side::{
    Capabilities, ChatView, Delivered, Fetched, MemberView, OutboxItem, Side, SideError,
};
pub use store::{Store, StoreError};
