//! Puppet address escaping: round trip on many generated ids, and the
//! properties of the escaped form.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use coi_side::codec::{CodecError, MAX_LOCALPART_LEN, escape_localpart, unescape_localpart};

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Characters remote ids are made of, with the awkward ones over-represented.
const POOL: &[char] = &[
    'a', 'b', 'z', '0', '9', 'A', 'Q', 'Z', '.', '.', '_', '-', '=', '@', ':', '/', '+', '%', ' ',
    '!', '"', '\\', '<', '>', '\u{0}', '\u{7f}', 'é', 'ß', 'Ω', '😀', '中', '\u{200b}', '\u{fffd}',
];

fn check_shape(local: &str) {
    assert!(!local.is_empty());
    assert!(local.len() <= MAX_LOCALPART_LEN, "{local}");
    assert!(
        local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-=".contains(&b)),
        "{local}"
    );
    assert!(
        !local.starts_with('.') && !local.ends_with('.') && !local.contains(".."),
        "{local}"
    );
}

#[test]
fn matrix_and_xmpp_examples() {
    let cases = [
        ("@bob:matrix.test", "=40bob=3amatrix.test"),
        ("@Alice:Matrix.Example", "=40=41lice=3a=4datrix.=45xample"),
        (
            "romeo@montague.example/orchard",
            "romeo=40montague.example=2forchard",
        ),
        ("a.b", "a.b"),
        ("...", "=2e.=2e"),
        ("x=y", "x=3dy"),
        ("é", "=c3=a9"),
    ];
    for (id, want) in cases {
        let local = escape_localpart(id).expect("escape");
        assert_eq!(local, want, "{id}");
        check_shape(&local);
        assert_eq!(unescape_localpart(&local).as_deref(), Some(id));
        // mail systems may change the case of a local part: still the same id
        assert_eq!(
            unescape_localpart(&local.to_ascii_uppercase()).as_deref(),
            Some(id)
        );
    }
}

#[test]
fn roundtrip_many_generated_ids() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut ok = 0;
    for _ in 0..20_000 {
        let len = 1 + (rng.next() % 24) as usize;
        let id: String = (0..len).map(|_| *rng.pick(POOL)).collect();
        match escape_localpart(&id) {
            Ok(local) => {
                check_shape(&local);
                assert_eq!(
                    unescape_localpart(&local).as_deref(),
                    Some(id.as_str()),
                    "{id:?}"
                );
                ok += 1;
            }
            Err(CodecError::TooLarge { size, limit, .. }) => {
                assert_eq!(limit, MAX_LOCALPART_LEN);
                assert!(size > limit);
            }
            Err(e) => panic!("{id:?}: {e:?}"),
        }
    }
    assert!(
        ok > 5_000,
        "the generator should mostly make ids that fit: {ok}"
    );
}

#[test]
fn unescape_accepts_only_canonical_forms() {
    let mut rng = Rng(42);
    let alphabet: Vec<char> = "abcAZ09._-=4e2fG!@ ".chars().collect();
    for _ in 0..20_000 {
        let len = 1 + (rng.next() % 20) as usize;
        let local: String = (0..len).map(|_| *rng.pick(&alphabet)).collect();
        if let Some(id) = unescape_localpart(&local) {
            // whatever is accepted maps back to exactly that text (case-folded)
            assert_eq!(
                escape_localpart(&id).ok(),
                Some(local.to_ascii_lowercase()),
                "{local:?}"
            );
        }
    }
    for bad in [
        "",
        "=",
        "=4",
        "=g0",
        "a..b",
        ".a",
        "a.",
        "=61",
        "ABC!",
        "=c3",
        &"a".repeat(65),
    ] {
        assert_eq!(unescape_localpart(bad), None, "{bad:?}");
    }
}

#[test]
fn too_long_and_empty_ids_are_errors() {
    assert!(matches!(
        escape_localpart(""),
        Err(CodecError::InvalidInput(_))
    ));
    assert_eq!(escape_localpart(&"a".repeat(64)).map(|s| s.len()), Ok(64));
    assert!(matches!(
        escape_localpart(&"a".repeat(65)),
        Err(CodecError::TooLarge { limit: 64, .. })
    ));
    // upper case costs three characters each
    assert!(escape_localpart(&"A".repeat(21)).is_ok());
    assert!(escape_localpart(&"A".repeat(22)).is_err());
}
