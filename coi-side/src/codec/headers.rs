//! Every header (and MDN report field) name the codec reads or writes, defined once.
//!
//! The parser matches incoming names against [`HeaderDef::from_name`]; the
//! builder writes [`HeaderDef::as_str`]. No other module spells a header name.

macro_rules! header_defs {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// A header field name known to the codec.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum HeaderDef {
            $($(#[$doc])* $variant,)+
        }

        impl HeaderDef {
            /// All known names, in declaration order.
            pub const ALL: &'static [HeaderDef] = &[$(HeaderDef::$variant,)+];

            /// The canonical spelling used on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(HeaderDef::$variant => $name,)+
                }
            }
        }
    };
}

header_defs! {
    /// RFC 5322 author.
    From => "From",
    /// RFC 5322 sender (relay mode: the bridge).
    Sender => "Sender",
    /// RFC 5322 recipients.
    To => "To",
    /// RFC 5322 carbon copy.
    Cc => "Cc",
    /// RFC 5322 origination date.
    Date => "Date",
    /// RFC 5322 message identifier.
    MessageId => "Message-ID",
    /// RFC 5322 subject.
    Subject => "Subject",
    /// RFC 5322 parent message.
    InReplyTo => "In-Reply-To",
    /// RFC 5322 thread ancestry.
    References => "References",
    /// RFC 2045.
    MimeVersion => "MIME-Version",
    /// RFC 2045.
    ContentType => "Content-Type",
    /// RFC 2045.
    ContentTransferEncoding => "Content-Transfer-Encoding",
    /// RFC 2183 (and RFC 9078 `reaction`).
    ContentDisposition => "Content-Disposition",
    /// Added by the delivering MTA / LMTP server: the envelope recipient.
    DeliveredTo => "Delivered-To",
    /// RFC 3834.
    AutoSubmitted => "Auto-Submitted",
    /// Autocrypt Level 1.
    Autocrypt => "Autocrypt",
    /// Delta Chat / COI marker.
    ChatVersion => "Chat-Version",
    /// Delta Chat group id (encrypted groups only).
    ChatGroupId => "Chat-Group-ID",
    /// Delta Chat group name.
    ChatGroupName => "Chat-Group-Name",
    /// Last-writer-wins timestamp of the group name.
    ChatGroupNameTimestamp => "Chat-Group-Name-Timestamp",
    /// Old name on a rename system message.
    ChatGroupNameChanged => "Chat-Group-Name-Changed",
    /// Member-added system message.
    ChatGroupMemberAdded => "Chat-Group-Member-Added",
    /// Member-removed system message.
    ChatGroupMemberRemoved => "Chat-Group-Member-Removed",
    /// Add/remove timestamps for To + past members.
    ChatGroupMemberTimestamps => "Chat-Group-Member-Timestamps",
    /// Recently removed members.
    ChatGroupPastMembers => "Chat-Group-Past-Members",
    /// Group description (RFC 2047 encoded).
    ChatGroupDescription => "Chat-Group-Description",
    /// Timestamp of the group description.
    ChatGroupDescriptionTimestamp => "Chat-Group-Description-Timestamp",
    /// Description-changed system message (empty value; the new description is in `Chat-Group-Description`).
    ChatGroupDescriptionChanged => "Chat-Group-Description-Changed",
    /// Edit request: the Message-ID of the edited message.
    ChatEdit => "Chat-Edit",
    /// Delete request: Message-IDs of the deleted messages.
    ChatDelete => "Chat-Delete",
    /// Read-receipt request (Delta Chat).
    ChatDispositionNotificationTo => "Chat-Disposition-Notification-To",
    /// Read-receipt request (RFC 8098, used by COI and classic clients).
    DispositionNotificationTo => "Disposition-Notification-To",
    /// Voice message flag (`1`).
    ChatVoiceMessage => "Chat-Voice-Message",
    /// Media duration in milliseconds.
    ChatDuration => "Chat-Duration",
    /// Content hint (`sticker`, …).
    ChatContent => "Chat-Content",
    /// MDN report field (RFC 8098).
    OriginalRecipient => "Original-Recipient",
    /// MDN report field (RFC 8098).
    FinalRecipient => "Final-Recipient",
    /// MDN report field (RFC 8098).
    OriginalMessageId => "Original-Message-ID",
    /// MDN report field (RFC 8098).
    Disposition => "Disposition",
    /// Delta Chat MDN extension: more acknowledged Message-IDs.
    AdditionalMessageIds => "Additional-Message-IDs",
}

impl HeaderDef {
    /// Looks a name up case-insensitively.
    pub fn from_name(name: &str) -> Option<HeaderDef> {
        let name = name.trim();
        HeaderDef::ALL
            .iter()
            .copied()
            .find(|def| def.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for HeaderDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
