//! Identifier newtypes used by the hub.
//!
//! Internal ids (`ChatId`, `MessageId`, `PuppetId`) are store row ids and are only made by the store.
//! Remote ids are opaque strings made and parsed only by their own side.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The name of a side (`"email"`, `"matrix"`, `"xmpp"`, or a test side).
///
/// Unique per process; it is the `side` column of every link table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SideName(pub &'static str);

impl<'de> Deserialize<'de> for SideName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(SideName::intern(&s))
    }
}

impl SideName {
    /// The email side (COI / Delta Chat / plain mail).
    pub const EMAIL: SideName = SideName("email");
    /// The Matrix side (application service).
    pub const MATRIX: SideName = SideName("matrix");
    /// The XMPP side (XEP-0114 component).
    pub const XMPP: SideName = SideName("xmpp");

    /// The side name for a stored string; each distinct unknown name is allocated once per process.
    pub fn intern(name: &str) -> SideName {
        use std::collections::BTreeSet;
        use std::sync::Mutex;
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        for known in [Self::EMAIL, Self::MATRIX, Self::XMPP] {
            if known.0 == name {
                return known;
            }
        }
        let Ok(mut names) = NAMES.lock() else {
            return SideName("unknown");
        };
        if let Some(n) = names.get(name) {
            return SideName(n);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(leaked);
        SideName(leaked)
    }

    /// The name as stored in the database.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for SideName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

row_id!(
    /// A bridged conversation (row of `chat`). Unique per database; never reused.
    ChatId
);
row_id!(
    /// One logical event in a chat (row of `message`): a message, edit, reaction, … Unique per database.
    MessageId
);
row_id!(
    /// One human as the bridge knows them (row of `puppet`). Unique per database.
    PuppetId
);
row_id!(
    /// One row of the durable outbox. Unique per database; a side may use it as an idempotency key.
    OutboxId
);
