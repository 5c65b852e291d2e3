//! The codec's error type.

use thiserror::Error;

/// Why the codec refused a message (parse) or a request (build).
///
/// The codec is deterministic: feeding it the same bytes or the same
/// [`OutgoingEmail`](super::OutgoingEmail) again gives the same error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The message, or one attachment in it, is bigger than the configured limit.
    #[error("{what} too large: {size} bytes, limit {limit}")]
    TooLarge {
        /// What was too large ("message", "attachment", "local part").
        what: &'static str,
        /// Its size in bytes (for a message: the raw size; for an attachment: decoded).
        size: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The MIME tree is nested deeper than the configured limit.
    #[error("MIME structure nested {depth} levels deep, limit {limit}")]
    TooDeep {
        /// The depth that was reached (the root part has depth 0).
        depth: usize,
        /// The configured maximum depth.
        limit: usize,
    },
    /// The message has more MIME parts than the configured limit.
    #[error("more than {limit} MIME parts")]
    TooManyParts {
        /// The configured maximum number of parts.
        limit: usize,
    },
    /// The bytes are not an email message at all (no header could be parsed).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Something required is absent (build side: a field the body kind needs).
    #[error("missing {0}")]
    Missing(&'static str),
    /// A caller-supplied value cannot be put on the wire (build side), for example
    /// an address with spaces or a Message-ID with angle brackets.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl CodecError {
    /// True when retrying with the same input cannot succeed.
    ///
    /// Every current variant is permanent, because the codec does no I/O and
    /// depends only on its input: the caller should drop the message (with a
    /// visible notice) rather than retry. The match is exhaustive on purpose, so
    /// a new variant has to be classified when it is added.
    pub fn is_permanent(&self) -> bool {
        match self {
            CodecError::TooLarge { .. }
            | CodecError::TooDeep { .. }
            | CodecError::TooManyParts { .. }
            | CodecError::Malformed(_)
            | CodecError::Missing(_)
            | CodecError::InvalidInput(_) => true,
        }
    }
}
