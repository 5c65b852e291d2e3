//! Puppet addresses: a reversible mapping from any remote user id (a Matrix
//! id such as `@bob:matrix.test`, an XMPP JID) to an email local part.
//!
//! Alphabet of the result: `a-z`, `0-9`, `.`, `_`, `-` literally, everything
//! else (including upper-case letters, `=` itself and every byte of non-ASCII
//! characters) as `=xx`, two lower-case hex digits per UTF-8 byte. So the
//! result never depends on the case handling of a mail server. A dot is
//! escaped too when it would be first, last, or follow another literal dot,
//! which keeps the local part a valid RFC 5321 dot-atom.
//!
//! Every remote id has exactly one escaped form, and [`unescape_localpart`]
//! accepts only that form (after lower-casing): two different local parts can
//! never name the same remote user.

use super::error::CodecError;

/// The longest local part RFC 5321 allows.
pub const MAX_LOCALPART_LEN: usize = 64;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Escapes a remote user id into an email local part.
///
/// Errors: [`CodecError::InvalidInput`] for an empty id, and
/// [`CodecError::TooLarge`] when the escaped form is longer than
/// [`MAX_LOCALPART_LEN`] (64) characters. Such users need another mapping
/// (for example a stored, hash-based alias); this function never truncates.
pub fn escape_localpart(remote_id: &str) -> Result<String, CodecError> {
    if remote_id.is_empty() {
        return Err(CodecError::InvalidInput("empty remote id".to_owned()));
    }
    let bytes = remote_id.as_bytes();
    let mut out = String::with_capacity(bytes.len() + 8);
    for (i, &b) in bytes.iter().enumerate() {
        let literal = match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => true,
            b'.' => i != 0 && i + 1 != bytes.len() && !out.ends_with('.'),
            _ => false,
        };
        if literal {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        if out.len() > MAX_LOCALPART_LEN {
            break;
        }
    }
    if out.len() > MAX_LOCALPART_LEN {
        return Err(CodecError::TooLarge {
            what: "escaped local part",
            size: out.len(),
            limit: MAX_LOCALPART_LEN,
        });
    }
    Ok(out)
}

/// Reverses [`escape_localpart`]. Upper-case input is accepted (it is
/// lower-cased first). Returns `None` for anything that is not the canonical
/// escaped form of some id: bad characters, broken or unnecessary `=xx`
/// escapes, invalid UTF-8, more than 64 characters.
pub fn unescape_localpart(local: &str) -> Option<String> {
    if local.is_empty() || local.len() > MAX_LOCALPART_LEN || !local.is_ascii() {
        return None;
    }
    let lower = local.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                decoded.push(b);
                i += 1;
            }
            b'=' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                decoded.push(hi << 4 | lo);
                i += 3;
            }
            _ => return None,
        }
    }
    let id = String::from_utf8(decoded).ok()?;
    // canonical form only: re-escaping must give the same text
    (escape_localpart(&id).ok()? == lower).then_some(id)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(
            escape_localpart("@bob:matrix.test").ok().as_deref(),
            Some("=40bob=3amatrix.test")
        );
        assert_eq!(escape_localpart("Bob").ok().as_deref(), Some("=42ob"));
        assert_eq!(
            escape_localpart(".a..b.").ok().as_deref(),
            Some("=2ea.=2eb=2e")
        );
        assert_eq!(
            unescape_localpart("=40BOB=3Amatrix.test").as_deref(),
            Some("@bob:matrix.test")
        );
        assert_eq!(unescape_localpart("=61"), None, "unnecessary escape");
        assert_eq!(unescape_localpart("a..b"), None);
        assert_eq!(unescape_localpart("=zz"), None);
        assert_eq!(unescape_localpart("=c3"), None, "invalid utf-8");
        assert!(escape_localpart(&"A".repeat(22)).is_err());
        assert!(escape_localpart("").is_err());
    }
}
