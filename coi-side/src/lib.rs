//! The email side of coi-bridge: COI / Delta Chat and plain email group chats.
//!
//! `codec` is sans-I/O (MIME parse and build); `transport` does the network I/O (IMAP, LMTP, SMTP);
//! `receive` and `outgoing` map between mail and the hub's IR; `side` wires them to the hub.

pub mod codec;
pub mod config;
pub mod outgoing;
pub mod receive;
pub mod side;
pub mod transport;

pub use config::EmailConfig;
pub use side::{EmailSide, MailSink, Replayed, run_ingest};
