//! Matrix ids made and parsed by this side: ghost localparts and room/user id checks.
//!
//! A ghost is `@<prefix><escaped>:<server>`. The escape is reversible and only produces characters
//! allowed in a Matrix localpart (`a-z 0-9 . _ = - /`): lowercase letters, digits, `.` and `-` pass;
//! `_` becomes `__`; an uppercase letter `X` becomes `_x`; every other byte becomes `=xx` (lowercase hex).

/// Escapes any string into a lowercase-safe Matrix localpart fragment.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => out.push(char::from(b)),
            b'_' => out.push_str("__"),
            b'A'..=b'Z' => {
                out.push('_');
                out.push(char::from(b.to_ascii_lowercase()));
            }
            _ => {
                out.push('=');
                out.push_str(&format!("{b:02x}"));
            }
        }
    }
    out
}

/// Reverses [`escape`]; `None` if the input is not a valid escape.
pub fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => {
                out.push(b);
                i += 1;
            }
            b'_' => {
                match bytes.get(i + 1)? {
                    b'_' => out.push(b'_'),
                    c @ b'a'..=b'z' => out.push(c.to_ascii_uppercase()),
                    _ => return None,
                }
                i += 2;
            }
            b'=' => {
                let hex = s.get(i + 1..i + 3)?;
                if hex.bytes().any(|c| c.is_ascii_uppercase()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Names ghosts and recognises them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GhostNamer {
    /// Localpart prefix of every ghost, e.g. `_coi_`.
    pub prefix: String,
    /// The homeserver's server name.
    pub server_name: String,
    /// The bot's localpart.
    pub bot_localpart: String,
}

impl GhostNamer {
    /// The ghost localpart for a person native to `origin_side` with id `native_id`.
    ///
    /// Email people get the escaped address; people of other sides get `side:id` escaped.
    pub fn localpart(&self, origin_side: &str, native_id: &str) -> String {
        let key = if origin_side == "email" {
            native_id.to_owned()
        } else {
            format!("{origin_side}:{native_id}")
        };
        format!("{}{}", self.prefix, escape(&key))
    }

    /// The full ghost user id.
    pub fn user_id(&self, origin_side: &str, native_id: &str) -> String {
        format!(
            "@{}:{}",
            self.localpart(origin_side, native_id),
            self.server_name
        )
    }

    /// The bot's user id.
    pub fn bot_user_id(&self) -> String {
        format!("@{}:{}", self.bot_localpart, self.server_name)
    }

    /// If `user_id` is one of our ghosts: the person it stands for, as (origin side, native id).
    pub fn parse(&self, user_id: &str) -> Option<(String, String)> {
        let local = user_id
            .strip_prefix('@')?
            .strip_suffix(&self.server_name)?
            .strip_suffix(':')?;
        let key = unescape(local.strip_prefix(&self.prefix)?)?;
        match key.split_once(':') {
            Some((side, id))
                if !side.is_empty() && side.bytes().all(|c| c.is_ascii_lowercase()) =>
            {
                Some((side.to_owned(), id.to_owned()))
            }
            _ => Some(("email".to_owned(), key)),
        }
    }

    /// Whether a user id belongs to this bridge (a ghost or the bot): its events are our own echoes.
    pub fn is_ours(&self, user_id: &str) -> bool {
        user_id == self.bot_user_id()
            || user_id
                .strip_prefix('@')
                .and_then(|u| u.strip_suffix(&self.server_name))
                .and_then(|u| u.strip_suffix(':'))
                .is_some_and(|local| local.starts_with(&self.prefix))
    }
}

/// The localpart of a user id (`@local:server` → `local`); anything else is returned as is.
pub fn localpart_of(user_id: &str) -> &str {
    user_id
        .strip_prefix('@')
        .and_then(|u| u.split_once(':'))
        .map_or(user_id, |(l, _)| l)
}

/// Whether `s` looks like a Matrix user id (`@local:server`), checked by ruma.
pub fn is_user_id(s: &str) -> bool {
    <&ruma::UserId>::try_from(s).is_ok()
}

/// Whether `s` looks like a Matrix room id (`!opaque:server` or v12 `!opaque`), checked by ruma.
pub fn is_room_id(s: &str) -> bool {
    <&ruma::RoomId>::try_from(s).is_ok()
}

/// Percent-encodes one URL path segment (everything but RFC 3986 unreserved characters).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn namer() -> GhostNamer {
        GhostNamer {
            prefix: "_coi_".into(),
            server_name: "matrix.test".into(),
            bot_localpart: "coi_bot".into(),
        }
    }

    #[test]
    fn escape_round_trips() {
        for s in [
            "bob@example.org",
            "Bob.Smith+tag@Example.ORG",
            "under_score@x.y",
            "ümlaut@例え.jp",
            "a=b/c d",
            "",
        ] {
            let e = escape(s);
            assert!(
                e.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-')),
                "{e}"
            );
            assert_eq!(unescape(&e).as_deref(), Some(s), "{s} -> {e}");
        }
        assert_eq!(escape("Bob_x@Ex.org"), "_bob__x=40_ex.org");
    }

    #[test]
    fn unescape_rejects_garbage() {
        for s in ["_", "_1", "=4", "=zz", "=4A", "A", "x y", "=ff"] {
            assert_eq!(unescape(s), None, "{s}");
        }
    }

    #[test]
    fn ghosts() {
        let n = namer();
        let id = n.user_id("email", "bob@example.org");
        assert_eq!(id, "@_coi_bob=40example.org:matrix.test");
        assert!(is_user_id(&id));
        assert_eq!(
            n.parse(&id),
            Some(("email".into(), "bob@example.org".into()))
        );
        let x = n.user_id("xmpp", "carol@xmpp.test/res");
        assert_eq!(
            n.parse(&x),
            Some(("xmpp".into(), "carol@xmpp.test/res".into()))
        );
        assert!(n.is_ours(&id));
        assert!(n.is_ours("@coi_bot:matrix.test"));
        assert!(!n.is_ours("@alice:matrix.test"));
        assert!(!n.is_ours("@_coi_bob:other.test"));
        assert_eq!(n.parse("@alice:matrix.test"), None);
    }

    #[test]
    fn ids_and_segments() {
        assert!(is_room_id("!abc:matrix.test"));
        assert!(!is_room_id("#abc:matrix.test"));
        assert_eq!(path_segment("!a:b.c"), "%21a%3Ab.c");
    }
}
