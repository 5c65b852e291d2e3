//! Data-driven codec tests: every `.eml` under `testdata/deltachat-2.65/`
//! (real Delta Chat 2.65 captures) and `testdata/classic/` (hand-made classic
//! mail) is parsed and compared with its row in a table.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use coi_side::codec::{ParseLimits, ParsedEmail, parse};

/// What one fixture must parse to. Every field is checked for every file, so
/// the defaults in [`BASE`] assert absence.
#[derive(Clone, Copy)]
struct Expect {
    file: &'static str,
    message_id: Option<&'static str>,
    /// (display name, lower-cased address)
    from: Option<(Option<&'static str>, &'static str)>,
    sender: Option<&'static str>,
    subject: Option<&'static str>,
    group_name: Option<&'static str>,
    group_description: Option<&'static str>,
    in_reply_to: &'static [&'static str],
    references: Option<&'static [&'static str]>,
    reaction: Option<&'static str>,
    edit_target: Option<&'static str>,
    member_added: Option<&'static str>,
    member_removed: Option<&'static str>,
    name_changed_from: Option<&'static str>,
    past_members: &'static [&'static str],
    member_timestamps: &'static [i64],
    /// (file name, mime type, decoded size, voice, duration)
    attachments: &'static [(&'static str, &'static str, usize, bool, Option<u64>)],
    text: &'static str,
    top_quote: Option<&'static str>,
    footer: Option<&'static str>,
    html_contains: Option<&'static str>,
    mdn_ids: Option<&'static [&'static str]>,
    mdn_requested_to: Option<&'static str>,
    is_chat: bool,
    forwarded: bool,
    cut: bool,
    encrypted: bool,
    autocrypt: bool,
}

const BASE: Expect = Expect {
    file: "",
    message_id: None,
    from: None,
    sender: None,
    subject: None,
    group_name: None,
    group_description: None,
    in_reply_to: &[],
    references: None,
    reaction: None,
    edit_target: None,
    member_added: None,
    member_removed: None,
    name_changed_from: None,
    past_members: &[],
    member_timestamps: &[],
    attachments: &[],
    text: "",
    top_quote: None,
    footer: None,
    html_contains: None,
    mdn_ids: None,
    mdn_requested_to: None,
    is_chat: false,
    forwarded: false,
    cut: false,
    encrypted: false,
    autocrypt: false,
};

const M01: &str = "b58bd00b-3d8b-431b-8de4-a89f87d1d861@localhost";
const M02: &str = "eb3087b6-0deb-46c2-9df0-89acf49ae0dc@localhost";
const M05: &str = "2c6c12ca-90e0-4825-b940-f806a898e3ab@localhost";
const M06: &str = "5649a1b2-bff3-41f6-bdf7-3556dc54d8a2@localhost";
const ALICE: (Option<&str>, &str) = (Some("Alice"), "alice@example.test");
const BOB: (Option<&str>, &str) = (Some("Bob"), "bob@example.test");
const T0: i64 = 1_795_811_304;

/// Delta Chat 2.65 group (unencrypted, so no Chat-Group-ID) as seen by a puppet.
const DC: Expect = Expect {
    is_chat: true,
    autocrypt: true,
    group_name: Some("Spike Group"),
    subject: Some("Re: Spike Group"),
    member_timestamps: &[T0, T0],
    ..BASE
};

const DELTACHAT: &[Expect] = &[
    Expect {
        file: "01-alice-group-text.eml",
        message_id: Some(M01),
        from: Some(ALICE),
        subject: Some("Spike Group"),
        group_description: Some(""),
        references: Some(&[M01]),
        text: "Hello group, this is Alice (plain text).",
        ..DC
    },
    Expect {
        file: "02-bob-group-reply-quote.eml",
        message_id: Some(M02),
        from: Some(BOB),
        in_reply_to: &[M01],
        text: "Reply from Bob (quoting Alice).",
        top_quote: Some("Hello group, this is Alice (plain text)."),
        ..DC
    },
    Expect {
        file: "03-bob-reaction.eml",
        message_id: Some("02620248-2a1e-4c7b-b4e4-8463639596f6@localhost"),
        from: Some(BOB),
        in_reply_to: &[M01],
        references: Some(&[M01, M01, M02]),
        reaction: Some("👍"),
        text: "",
        ..DC
    },
    Expect {
        file: "04-alice-edit.eml",
        message_id: Some("128c311b-af74-48b5-91d8-21174a5622ca@localhost"),
        from: Some(ALICE),
        in_reply_to: &[M01],
        edit_target: Some(M01),
        text: "Hello group, this is Alice (EDITED).",
        top_quote: Some("Hello group, this is Alice (plain text)."),
        ..DC
    },
    Expect {
        file: "05a-alice-to-be-deleted.eml",
        message_id: Some(M05),
        from: Some(ALICE),
        in_reply_to: &[M02],
        text: "This message will be deleted.",
        ..DC
    },
    Expect {
        file: "06-alice-image.eml",
        message_id: Some(M06),
        from: Some(ALICE),
        in_reply_to: &[M05],
        references: Some(&[M01, M02, M05]),
        attachments: &[("test-image.jpg", "image/jpeg", 972, false, None)],
        text: "An image from Alice",
        ..DC
    },
    Expect {
        file: "06b-alice-override-sender-name.eml",
        message_id: Some("1c91fc4b-3971-4abb-a6df-8ebb4224417b@localhost"),
        from: Some((Some("Matrix User Carol"), "alice@example.test")),
        sender: Some("alice@example.test"),
        in_reply_to: &[M06],
        text: "Message with overrideSenderName",
        ..DC
    },
    Expect {
        file: "07-alice-1to1-to-puppet.eml",
        message_id: Some("37ece408-2471-4414-a0ab-680974f7ceb4@localhost"),
        from: Some(ALICE),
        subject: Some("Message from Alice"),
        group_name: None,
        member_timestamps: &[],
        references: Some(&["37ece408-2471-4414-a0ab-680974f7ceb4@localhost"]),
        text: "Direct (1:1) message from Alice to the puppet",
        ..DC
    },
    Expect {
        file: "09-alice-member-added-abc-1.eml",
        message_id: Some("ce1d376e-df61-46c3-951b-f798b4516259@localhost"),
        from: Some(ALICE),
        in_reply_to: &["44c54a2d-bdda-402a-bbf4-87b698f9bb4b@bridge.example.test"],
        member_added: Some("abc@bridge.example.test"),
        member_timestamps: &[1_795_811_913, T0, T0],
        group_description: Some(""),
        text: "Member abc@bridge.example.test was added.",
        ..DC
    },
    Expect {
        file: "09-alice-member-added-abc-2.eml",
        message_id: Some("ce1d376e-df61-46c3-951b-f798b4516259@localhost"),
        from: Some(ALICE),
        in_reply_to: &["44c54a2d-bdda-402a-bbf4-87b698f9bb4b@bridge.example.test"],
        member_added: Some("abc@bridge.example.test"),
        member_timestamps: &[1_795_811_913, T0, T0],
        group_description: Some(""),
        text: "Member abc@bridge.example.test was added.",
        ..DC
    },
    Expect {
        file: "10-alice-group-renamed-1.eml",
        message_id: Some("f84ee7f0-63b1-4ee6-a32b-44e405822b08@localhost"),
        from: Some(ALICE),
        subject: Some("Re: Spike Group renamed"),
        group_name: Some("Spike Group renamed"),
        name_changed_from: Some("Spike Group"),
        in_reply_to: &["ce1d376e-df61-46c3-951b-f798b4516259@localhost"],
        member_timestamps: &[1_795_811_913, T0, T0],
        text: "Chat name changed.",
        ..DC
    },
    Expect {
        file: "10-alice-group-renamed-2.eml",
        message_id: Some("f84ee7f0-63b1-4ee6-a32b-44e405822b08@localhost"),
        from: Some(ALICE),
        subject: Some("Re: Spike Group renamed"),
        group_name: Some("Spike Group renamed"),
        name_changed_from: Some("Spike Group"),
        in_reply_to: &["ce1d376e-df61-46c3-951b-f798b4516259@localhost"],
        member_timestamps: &[1_795_811_913, T0, T0],
        text: "Chat name changed.",
        ..DC
    },
    Expect {
        file: "11-alice-member-removed-abc-1.eml",
        message_id: Some("2939968e-b5ff-4d02-8899-c2cd9dc5e29e@localhost"),
        from: Some(ALICE),
        subject: Some("Re: Spike Group renamed"),
        group_name: Some("Spike Group renamed"),
        in_reply_to: &["f84ee7f0-63b1-4ee6-a32b-44e405822b08@localhost"],
        member_removed: Some("abc@bridge.example.test"),
        past_members: &["abc@bridge.example.test"],
        member_timestamps: &[T0, T0, 1_795_811_917],
        text: "Member abc@bridge.example.test was removed.",
        ..DC
    },
    Expect {
        file: "11-alice-member-removed-abc-2.eml",
        message_id: Some("2939968e-b5ff-4d02-8899-c2cd9dc5e29e@localhost"),
        from: Some(ALICE),
        subject: Some("Re: Spike Group renamed"),
        group_name: Some("Spike Group renamed"),
        in_reply_to: &["f84ee7f0-63b1-4ee6-a32b-44e405822b08@localhost"],
        member_removed: Some("abc@bridge.example.test"),
        past_members: &["abc@bridge.example.test"],
        member_timestamps: &[T0, T0, 1_795_811_917],
        text: "Member abc@bridge.example.test was removed.",
        ..DC
    },
    Expect {
        file: "12-encrypted-msg-as-seen-in-bob-inbox.eml",
        message_id: Some("33587dcb-b224-425e-a2e1-58a9387ec7ea@localhost"),
        from: Some((None, "alice@example.test")),
        subject: Some("[...]"),
        encrypted: true,
        ..BASE
    },
];

const CLASSIC: &[Expect] = &[
    Expect {
        file: "thunderbird-reply.eml",
        message_id: Some("a1b2c3d4-tb@classic.example"),
        from: Some((Some("Carol Classic"), "carol@classic.example")),
        subject: Some("Re: Spike Group"),
        in_reply_to: &[M01],
        text: "Sounds good, see you then.",
        cut: true,
        ..BASE
    },
    Expect {
        file: "outlook-reply.eml",
        message_id: Some("DM6PR01MB1234ABCD@corp.example"),
        from: Some((Some("Dave (Outlook)"), "dave@corp.example")),
        subject: Some("RE: Spike Group"),
        in_reply_to: &[M01],
        text: "Thanks, that works for me.\n\nDave",
        html_contains: Some("<p>Dave</p>"),
        cut: true,
        ..BASE
    },
    Expect {
        file: "german-reply-latin1.eml",
        message_id: Some("de-reply-1@example.de"),
        from: Some((Some("Jürgen Müller"), "juergen@example.de")),
        subject: Some("Re: Grüße"),
        in_reply_to: &[M01],
        text: "Schöne Grüße zurück!",
        cut: true,
        ..BASE
    },
    Expect {
        file: "bottom-posted.eml",
        message_id: Some("bottom-1@bottom.example"),
        from: Some((Some("Bea Bottom"), "bea@bottom.example")),
        subject: Some("Re: Spike Group"),
        text: "Hi Alice, replying below the quote.",
        top_quote: Some("Hello group, this is Alice (plain text)."),
        ..BASE
    },
    Expect {
        file: "html-only.eml",
        message_id: Some("html-only-1@html.example"),
        from: Some((Some("Newsy"), "news@html.example")),
        subject: Some("HTML only"),
        text: "Hello HTML world & friends\n\nLine one\nLine two\n\nCafé €5 <ok>",
        html_contains: Some("<b>HTML</b>"),
        ..BASE
    },
    Expect {
        file: "format-flowed.eml",
        message_id: Some("flowed-1@flowed.example"),
        from: Some((Some("Flo Flowed"), "flo@flowed.example")),
        subject: Some("flowed text"),
        text: "This paragraph was wrapped by the client at a safe width. With DelSp=yes \
               the space before a soft break is removed, so a word can be cut: \
               supercalifragilistic.\nFrom the start of a line, space-stuffed.\nSecond line stays.",
        cut: true,
        ..BASE
    },
    Expect {
        file: "forwarded.eml",
        message_id: Some("fwd-1@fwd.example"),
        from: Some((Some("Fred"), "fred@fwd.example")),
        subject: Some("Fwd: Party"),
        text: "Party on Saturday at 8!",
        forwarded: true,
        ..BASE
    },
    Expect {
        file: "signature.eml",
        message_id: Some("sig-1@sig.example"),
        from: Some((Some("Sig Person"), "sig@sig.example")),
        subject: Some("with a signature"),
        text: "See you tomorrow.",
        footer: Some("Sig Person\nHead of Testing, Example Corp"),
        ..BASE
    },
    Expect {
        file: "zwsp-escaped.eml",
        message_id: Some("zwsp-1@localhost"),
        from: Some(ALICE),
        subject: Some("Re: Spike Group"),
        text: "Two dashes at a line start:\n-- this is not a footer\n--no space variant",
        footer: Some("Alice's status"),
        is_chat: true,
        ..BASE
    },
    Expect {
        file: "nonstandard-footer.eml",
        message_id: Some("nsf-1@lists.example"),
        from: Some((Some("List Poster"), "poster@lists.example")),
        subject: Some("meeting"),
        text: "The meeting moves to 3 pm.",
        cut: true,
        ..BASE
    },
    Expect {
        file: "dc-mdn.eml",
        message_id: Some("mdn-1@localhost"),
        from: Some(BOB),
        subject: Some("Receipt Notification"),
        text: "This is a receipt notification.",
        mdn_ids: Some(&[
            "m1@bridge.example.test",
            "m2@bridge.example.test",
            "m3@bridge.example.test",
        ]),
        is_chat: true,
        ..BASE
    },
    Expect {
        file: "voice-and-inline.eml",
        message_id: Some("voice-1@localhost"),
        from: Some(ALICE),
        subject: Some("Re: Spike Group"),
        attachments: &[("Sprachnachricht ü.ogg", "audio/ogg", 14, true, Some(4200))],
        mdn_requested_to: Some("alice@example.test"),
        is_chat: true,
        ..BASE
    },
    Expect {
        file: "inline-image-related.eml",
        message_id: Some("inline-1@apple.example"),
        from: Some((Some("Mia Mail"), "mia@apple.example")),
        subject: Some("photo"),
        text: "Look at this!",
        html_contains: Some("cid:photo"),
        // the named inline image counts, the unnamed cid: logo does not
        attachments: &[("beach.jpg", "image/jpeg", 6, false, None)],
        ..BASE
    },
];

fn testdata(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir)
}

fn eml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("testdata dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect()
}

fn check(dir: &str, table: &[Expect]) {
    let dir_path = testdata(dir);
    let files = eml_files(&dir_path);
    let listed: BTreeSet<String> = table.iter().map(|e| e.file.to_owned()).collect();
    assert_eq!(
        files, listed,
        "{dir}: every .eml needs exactly one table row"
    );
    let mut failures = Vec::new();
    for e in table {
        let raw = std::fs::read(dir_path.join(e.file)).expect("read fixture");
        let parsed = parse(&raw, &ParseLimits::default())
            .unwrap_or_else(|err| panic!("{}: parse failed: {err}", e.file));
        if let Err(msg) = compare(e, &parsed) {
            failures.push(format!("{}: {msg}\n{parsed:#?}", e.file));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn compare(e: &Expect, p: &ParsedEmail) -> Result<(), String> {
    macro_rules! same {
        ($what:literal, $got:expr, $want:expr) => {
            if $got != $want {
                return Err(format!("{}: got {:?}, want {:?}", $what, $got, $want));
            }
        };
    }
    same!("message_id", p.message_id.as_deref(), e.message_id);
    let from = p
        .from
        .as_ref()
        .map(|m| (m.name.as_deref(), m.addr.as_str()));
    same!("from", from, e.from);
    same!(
        "sender",
        p.sender.as_ref().map(|m| m.addr.as_str()),
        e.sender
    );
    same!("subject", p.subject.as_deref(), e.subject);
    same!("group name", p.group.name.as_deref(), e.group_name);
    same!("group id", p.group.id.as_deref(), None::<&str>);
    same!(
        "group description",
        p.group.description.as_deref(),
        e.group_description
    );
    same!("in_reply_to", p.in_reply_to.as_slice(), e.in_reply_to);
    if let Some(refs) = e.references {
        same!("references", p.references.as_slice(), refs);
    }
    same!("reaction", p.reaction.as_deref(), e.reaction);
    same!("edit target", p.chat_edit.as_deref(), e.edit_target);
    same!("chat_delete", p.chat_delete.len(), 0);
    same!(
        "member added",
        p.group.member_added.as_deref(),
        e.member_added
    );
    same!(
        "member removed",
        p.group.member_removed.as_deref(),
        e.member_removed
    );
    same!(
        "name changed from",
        p.group.name_changed_from.as_deref(),
        e.name_changed_from
    );
    let past: Vec<&str> = p
        .group
        .past_members
        .iter()
        .map(|m| m.addr.as_str())
        .collect();
    same!("past members", past.as_slice(), e.past_members);
    same!(
        "member timestamps",
        p.group.member_timestamps.as_slice(),
        e.member_timestamps
    );
    let atts: Vec<(&str, &str, usize, bool, Option<u64>)> = p
        .attachments
        .iter()
        .map(|a| {
            (
                a.filename.as_deref().unwrap_or(""),
                a.mime_type.as_str(),
                a.data.len(),
                a.voice_message,
                a.duration_ms,
            )
        })
        .collect();
    same!("attachments", atts.as_slice(), e.attachments);
    same!("text", p.text.as_str(), e.text);
    same!("top quote", p.top_quote.as_deref(), e.top_quote);
    same!("footer", p.footer.as_deref(), e.footer);
    match e.html_contains {
        Some(needle) => {
            if !p.html.as_deref().is_some_and(|h| h.contains(needle)) {
                return Err(format!("html should contain {needle:?}"));
            }
        }
        None => same!("html", p.html.as_deref(), None::<&str>),
    }
    let mdn = p.mdn.as_ref().map(|m| {
        m.original_message_ids
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    });
    same!("mdn", mdn.as_deref(), e.mdn_ids);
    same!("mdn requested to", p.mdn_requested_to(), e.mdn_requested_to);
    same!("is_chat", p.is_chat, e.is_chat);
    same!("is_forwarded", p.is_forwarded, e.forwarded);
    same!("text_was_cut", p.text_was_cut, e.cut);
    same!("is_encrypted", p.is_encrypted, e.encrypted);
    same!("autocrypt", p.autocrypt.is_some(), e.autocrypt);
    same!("warnings", p.warnings.as_slice(), &[] as &[String]);
    Ok(())
}

#[test]
fn deltachat_fixtures() {
    check("deltachat-2.65", DELTACHAT);
}

#[test]
fn classic_fixtures() {
    check("classic", CLASSIC);
}

#[test]
fn dc_delivered_to_and_autocrypt() {
    let raw = std::fs::read(testdata("deltachat-2.65").join("09-alice-member-added-abc-1.eml"))
        .expect("fixture");
    let p = parse(&raw, &ParseLimits::default()).expect("parse");
    assert_eq!(p.delivered_to, ["abc@bridge.example.test"]);
    assert_eq!(p.date_unix, Some(1_795_811_913));
    let ac = p.autocrypt.expect("autocrypt");
    assert_eq!(ac.addr, "alice@example.test");
    assert!(ac.prefer_encrypt_mutual);
    // an OpenPGP public-key packet starts with 0xc6 (new format, tag 6)
    assert_eq!(ac.keydata.first(), Some(&0xc6));
    assert!(ac.keydata.len() > 300);
    let to: Vec<_> =
        p.to.iter()
            .map(|m| (m.name.as_deref(), m.addr.as_str()))
            .collect();
    assert_eq!(
        to,
        [
            (Some("ABC (Matrix)"), "abc@bridge.example.test"),
            (Some("Bob"), "bob@example.test"),
            (Some("XYZ (Matrix)"), "xyz@bridge.example.test"),
        ]
    );
}

#[test]
fn dc_encrypted_payload_is_exposed() {
    let raw =
        std::fs::read(testdata("deltachat-2.65").join("12-encrypted-msg-as-seen-in-bob-inbox.eml"))
            .expect("fixture");
    let p = parse(&raw, &ParseLimits::default()).expect("parse");
    let payload = p.encrypted_payload.expect("payload");
    assert!(payload.starts_with(b"-----BEGIN PGP MESSAGE-----"));
    assert!(p.attachments.is_empty());
    assert_eq!(p.text, "");
}
