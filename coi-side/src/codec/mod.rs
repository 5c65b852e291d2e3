//! Sans-I/O email codec for the COI / Delta Chat side.
//!
//! * [`parse`]: raw RFC 5322 bytes → [`ParsedEmail`], an inert struct
//!   (limits checked first, never panics, oddities become warnings).
//! * [`simplify`]: a text body → user text, top quote, footer.
//! * [`build`]: [`OutgoingEmail`] → CRLF bytes shaped like Delta Chat 2.65's
//!   unencrypted group messages.
//! * [`escape_localpart`] / [`unescape_localpart`]: puppet addresses.
//!
//! **Architecture Invariant:** nothing under `codec/` does I/O or depends on an
//! async runtime, a database or a network crate (`tests/codec_tidy.rs`
//! enforces it). Header names are spelled only in [`HeaderDef`].

mod address;
mod build;
mod encode;
mod error;
mod headers;
mod html;
mod model;
mod parse;
mod simplify;

pub use address::{MAX_LOCALPART_LEN, escape_localpart, unescape_localpart};
pub use build::{
    OutgoingAttachment, OutgoingBody, OutgoingEmail, OutgoingGroup, build, new_message_id,
};
pub use error::CodecError;
pub use headers::HeaderDef;
pub use model::{Autocrypt, Mailbox};
pub use parse::{Attachment, GroupHeaders, Mdn, ParseLimits, ParsedEmail, parse};
pub use simplify::{Simplified, simplify};
