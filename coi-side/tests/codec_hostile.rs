//! Hostile input: the parser must never panic, and must either refuse with a
//! clear error or return a result with warnings. Small cases live in
//! `testdata/hostile/`; big ones (deep nesting, a 30 MiB attachment, long
//! lines, random bytes) are generated here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};

use base64::Engine as _;
use coi_side::codec::{CodecError, ParseLimits, ParsedEmail, parse};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn hostile(name: &str) -> ParsedEmail {
    let raw = std::fs::read(dir("hostile").join(name)).expect("fixture");
    parse(&raw, &ParseLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn has_warning(p: &ParsedEmail, needle: &str) -> bool {
    p.warnings.iter().any(|w| w.contains(needle))
}

#[test]
fn every_hostile_fixture_is_covered() {
    let mut files: Vec<String> = std::fs::read_dir(dir("hostile"))
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "bad-autocrypt.eml",
            "bad-base64.eml",
            "bad-qp.eml",
            "duplicate-headers.eml",
            "header-injection.eml",
            "invalid-utf8.eml",
            "missing-from.eml",
            "missing-message-id.eml",
            "nul-bytes.eml",
            "truncated-mime.eml",
            "unknown-charset.eml",
        ],
        "a new hostile fixture needs a test below"
    );
}

#[test]
fn truncated_mime_keeps_the_text_and_drops_the_broken_file() {
    let p = hostile("truncated-mime.eml");
    assert_eq!(p.text, "The text survives.");
    assert!(p.attachments.is_empty());
    assert!(has_warning(&p, "part dropped"), "{:?}", p.warnings);
}

#[test]
fn bad_base64_is_reported() {
    let p = hostile("bad-base64.eml");
    assert!(p.attachments.is_empty());
    assert!(has_warning(&p, "raw text kept"), "{:?}", p.warnings);
    assert!(has_warning(&p, "application/pdf"), "{:?}", p.warnings);
}

#[test]
fn bad_quoted_printable_is_best_effort() {
    let p = hostile("bad-qp.eml");
    assert!(p.text.starts_with("Bad escape =ZZ here"), "{:?}", p.text);
    assert!(
        has_warning(&p, "invalid bytes replaced"),
        "{:?}",
        p.warnings
    );
    // an undecodable encoded word is kept literally
    assert_eq!(p.subject.as_deref(), Some("=?utf-8?Q?broken=ZZword=?="));
}

#[test]
fn invalid_utf8_is_replaced_with_warnings() {
    let p = hostile("invalid-utf8.eml");
    assert_eq!(p.message_id.as_deref(), Some("inv-1@hostile.example"));
    assert!(p.subject.as_deref().is_some_and(|s| s.contains('\u{fffd}')));
    assert!(
        p.from
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .is_some_and(|n| n.contains('\u{fffd}'))
    );
    assert!(p.text.contains("invalid"));
    assert!(has_warning(&p, "header block"), "{:?}", p.warnings);
    assert!(
        has_warning(&p, "invalid bytes replaced"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn encoded_line_breaks_cannot_smuggle_headers() {
    let p = hostile("header-injection.eml");
    for value in [
        p.subject.clone().unwrap_or_default(),
        p.from
            .as_ref()
            .and_then(|m| m.name.clone())
            .unwrap_or_default(),
        p.group.name.clone().unwrap_or_default(),
    ] {
        assert!(!value.contains(['\r', '\n']), "{value:?}");
    }
    assert_eq!(p.subject.as_deref(), Some("hello  Bcc: evil@x"));
    // the decoded group name only *mentions* the header; nothing was added
    assert_eq!(p.group.member_added, None);
    assert!(has_warning(&p, "control characters"), "{:?}", p.warnings);
}

#[test]
fn missing_from_and_message_id() {
    let p = hostile("missing-from.eml");
    assert_eq!(p.from, None);
    assert_eq!(p.text, "orphan text");
    assert!(has_warning(&p, "missing From"));

    let p = hostile("missing-message-id.eml");
    assert_eq!(p.message_id, None);
    assert_eq!(p.date_unix, None);
    assert!(has_warning(&p, "missing Message-ID"));
    assert!(has_warning(&p, "unparsable Date"));
}

#[test]
fn duplicate_headers_use_the_first() {
    let p = hostile("duplicate-headers.eml");
    assert_eq!(
        p.from.as_ref().map(|m| m.addr.as_str()),
        Some("first@hostile.example")
    );
    assert_eq!(p.subject.as_deref(), Some("first subject"));
    assert_eq!(p.message_id.as_deref(), Some("dup-1@hostile.example"));
    assert_eq!(p.group.name.as_deref(), Some("First name"));
    for h in ["From", "Subject", "Message-ID", "Chat-Group-Name"] {
        assert!(
            has_warning(&p, &format!("duplicate {h} header")),
            "{h}: {:?}",
            p.warnings
        );
    }
}

#[test]
fn nul_bytes_are_removed() {
    let p = hostile("nul-bytes.eml");
    assert_eq!(p.subject.as_deref(), Some("nulbyte"));
    assert_eq!(p.text, "beforeafter");
    assert!(has_warning(&p, "NUL"));
}

#[test]
fn unknown_charset_falls_back_to_utf8() {
    let p = hostile("unknown-charset.eml");
    assert_eq!(p.text, "plain ascii text");
    assert!(has_warning(&p, "unknown charset"));
}

#[test]
fn bad_autocrypt_and_numbers_are_skipped() {
    let p = hostile("bad-autocrypt.eml");
    assert_eq!(p.autocrypt, None);
    assert_eq!(p.group.member_timestamps, [12, 34]);
    assert!(has_warning(&p, "keydata is not base64"));
    assert!(has_warning(&p, "bad timestamp"));
}

fn nested_multipart(levels: usize) -> Vec<u8> {
    let mut msg = String::from("From: a@b.example\r\nMessage-ID: <deep@b.example>\r\n");
    for i in 0..levels {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    msg.push_str("Content-Type: text/plain\r\n\r\ndeep text\r\n");
    for i in (0..levels).rev() {
        msg.push_str(&format!("--b{i}--\r\n"));
    }
    msg.into_bytes()
}

fn nested_messages(levels: usize) -> Vec<u8> {
    let mut msg = String::from("From: a@b.example\r\nMessage-ID: <deep@b.example>\r\n");
    for _ in 0..levels {
        msg.push_str("Content-Type: message/rfc822\r\n\r\nFrom: c@d.example\r\n");
    }
    msg.push_str("Content-Type: text/plain\r\n\r\ninnermost\r\n");
    msg.into_bytes()
}

#[test]
fn thousand_nested_parts_are_refused() {
    for raw in [nested_multipart(1000), nested_messages(1000)] {
        // default limits: the cheap pre-scan refuses before mail-parser runs
        let err = parse(&raw, &ParseLimits::default()).expect_err("refused");
        assert_eq!(err, CodecError::TooManyParts { limit: 256 });
        assert!(err.is_permanent());
        // with a huge part limit mail-parser runs (no stack overflow) and the depth check refuses
        let limits = ParseLimits {
            max_parts: 100_000,
            ..ParseLimits::default()
        };
        let err = parse(&raw, &limits).expect_err("refused");
        assert!(
            matches!(err, CodecError::TooDeep { limit: 16, .. }),
            "{err:?}"
        );
    }
    // shallow nesting is fine
    let p = parse(&nested_multipart(10), &ParseLimits::default()).expect("parse");
    assert_eq!(p.text, "deep text");
    let limits = ParseLimits {
        max_mime_depth: 5,
        ..ParseLimits::default()
    };
    assert!(matches!(
        parse(&nested_multipart(10), &limits),
        Err(CodecError::TooDeep { .. })
    ));
}

#[test]
fn many_sibling_parts_are_refused() {
    let mut msg =
        String::from("From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n");
    for i in 0..300 {
        msg.push_str(&format!("--x\r\n\r\npart {i}\r\n"));
    }
    msg.push_str("--x--\r\n");
    let err = parse(msg.as_bytes(), &ParseLimits::default()).expect_err("refused");
    assert_eq!(err, CodecError::TooManyParts { limit: 256 });
}

fn with_attachment(size: usize) -> Vec<u8> {
    let data = vec![0xa5_u8; size];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
    let mut msg = String::with_capacity(encoded.len() * 80 / 76 + 1024);
    msg.push_str(
        "From: big@b.example\r\nMessage-ID: <big@b.example>\r\nContent-Type: multipart/mixed; boundary=\"big\"\r\n\r\n\
         --big\r\nContent-Type: text/plain\r\n\r\nhere it comes\r\n\
         --big\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"big.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in encoded.as_bytes().chunks(76) {
        msg.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        msg.push_str("\r\n");
    }
    msg.push_str("--big--\r\n");
    msg.into_bytes()
}

#[test]
fn oversized_attachment_is_refused() {
    // 30 MiB + 1 KiB decoded: about 41 MiB as base64
    let raw = with_attachment(30 * 1024 * 1024 + 1024);
    // the message limit (40 MiB) is checked first, before any parsing
    let err = parse(&raw, &ParseLimits::default()).expect_err("refused");
    assert!(
        matches!(
            err,
            CodecError::TooLarge {
                what: "message",
                ..
            }
        ),
        "{err:?}"
    );
    // with room for the message, the 30 MiB attachment limit refuses it
    let limits = ParseLimits {
        max_message_bytes: 64 * 1024 * 1024,
        ..ParseLimits::default()
    };
    let err = parse(&raw, &limits).expect_err("refused");
    assert_eq!(
        err,
        CodecError::TooLarge {
            what: "attachment",
            size: 30 * 1024 * 1024 + 1024,
            limit: 30 * 1024 * 1024
        }
    );
    assert!(err.is_permanent());
    // small attachments with a small limit
    let small = with_attachment(2048);
    let limits = ParseLimits {
        max_attachment_bytes: 2047,
        ..ParseLimits::default()
    };
    assert!(matches!(
        parse(&small, &limits),
        Err(CodecError::TooLarge {
            what: "attachment",
            ..
        })
    ));
    let p = parse(&small, &ParseLimits::default()).expect("fits");
    assert_eq!(p.attachments.len(), 1);
    assert_eq!(p.attachments[0].data.len(), 2048);
}

#[test]
fn absurdly_long_header_lines() {
    let long = "x".repeat(200_000);
    let raw = format!(
        "From: \"{long}\" <long@b.example>\r\nSubject: {long}\r\nMessage-ID: <{long}@b.example>\r\nX-{long}: y\r\nReferences: {}\r\n\r\nbody\r\n",
        "<r@x> ".repeat(10_000)
    );
    let p = parse(raw.as_bytes(), &ParseLimits::default()).expect("parse");
    assert_eq!(p.subject.as_deref().map(str::len), Some(200_000));
    assert_eq!(p.references.len(), 10_000);
    assert_eq!(p.text, "body");
}

#[test]
fn empty_and_headerless_input() {
    for raw in [&b""[..], b"\r\n\r\n", b"\x00\x01\x02"] {
        match parse(raw, &ParseLimits::default()) {
            Err(CodecError::Malformed(_)) => {}
            Ok(p) => assert!(!p.warnings.is_empty(), "{raw:?}: parsed silently"),
            Err(e) => panic!("{raw:?}: unexpected {e:?}"),
        }
    }
}

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn never_panics_on_mutated_fixtures_or_noise() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut corpus = Vec::new();
    for d in ["deltachat-2.65", "classic", "hostile"] {
        for entry in std::fs::read_dir(dir(d))
            .expect("dir")
            .filter_map(|e| e.ok())
        {
            corpus.push(std::fs::read(entry.path()).expect("read"));
        }
    }
    let alphabet = b"\r\n:;=?<>\"-\\ \tabcXYZ019+/\x00\xff\xc3";
    let limits = ParseLimits::default();
    let mut parsed = 0usize;
    for original in &corpus {
        for _ in 0..40 {
            let mut raw = original.clone();
            match rng.below(3) {
                0 => raw.truncate(rng.below(raw.len())),
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(raw.len());
                        if let Some(b) = raw.get_mut(i) {
                            *b = alphabet[rng.below(alphabet.len())];
                        }
                    }
                }
                _ => {
                    let i = rng.below(raw.len());
                    let insert: Vec<u8> = (0..rng.below(64))
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect();
                    raw.splice(i..i, insert);
                }
            }
            if parse(&raw, &limits).is_ok() {
                parsed += 1;
            }
        }
    }
    for _ in 0..200 {
        let len = rng.below(4096);
        let raw: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let _ = parse(&raw, &limits);
    }
    assert!(
        parsed > corpus.len() * 20,
        "most mutations still parse: {parsed}"
    );
}

#[test]
fn lf_only_line_ends_parse_the_same() {
    for entry in std::fs::read_dir(dir("deltachat-2.65"))
        .expect("dir")
        .filter_map(|e| e.ok())
    {
        let crlf = std::fs::read(entry.path()).expect("read");
        let lf: Vec<u8> = String::from_utf8_lossy(&crlf)
            .replace("\r\n", "\n")
            .into_bytes();
        let a = parse(&crlf, &ParseLimits::default()).expect("crlf");
        let b = parse(&lf, &ParseLimits::default()).expect("lf");
        assert_eq!(a.message_id, b.message_id);
        assert_eq!(a.text, b.text, "{:?}", entry.path());
        assert_eq!(a.top_quote, b.top_quote);
        assert_eq!(a.reaction, b.reaction);
        assert_eq!(a.group, b.group);
        assert_eq!(a.attachments, b.attachments);
    }
}
