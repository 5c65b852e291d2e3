//! Plain data types shared by the parser and the builder.

/// One email address with an optional display name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// Display name, if any (decoded, trimmed, never empty).
    pub name: Option<String>,
    /// The address. The parser lower-cases it.
    pub addr: String,
}

impl Mailbox {
    /// A mailbox with a display name.
    pub fn new(name: impl Into<String>, addr: impl Into<String>) -> Self {
        let name = name.into();
        Mailbox {
            name: if name.trim().is_empty() {
                None
            } else {
                Some(name)
            },
            addr: addr.into(),
        }
    }

    /// A mailbox without a display name.
    pub fn addr_only(addr: impl Into<String>) -> Self {
        Mailbox {
            name: None,
            addr: addr.into(),
        }
    }
}

/// An Autocrypt header (Autocrypt Level 1): the sender's key and preference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Autocrypt {
    /// The address the key belongs to (lower-cased by the parser).
    pub addr: String,
    /// `prefer-encrypt=mutual` was given.
    pub prefer_encrypt_mutual: bool,
    /// The binary (not armored) OpenPGP public key.
    pub keydata: Vec<u8>,
}
