//! Low-level wire encoders used by the builder: header sanitising, RFC 2047
//! encoded words, folding, quoted-printable, base64 lines, RFC 5322 dates.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::error::CodecError;
use super::headers::HeaderDef;

/// Soft limit for header and body lines (RFC 5322 recommends 78).
const SOFT_LINE: usize = 78;
/// Longest single header word (an id, a quoted name) the builder accepts.
pub(crate) const MAX_WORD: usize = 250;
/// Bytes of UTF-8 per encoded word: 30 bytes → 40 base64 chars → 52 with the
/// `=?utf-8?B?…?=` frame, so that even `Chat-Group-Description: ` plus one
/// word stays within 78 characters (RFC 2047 allows 75 per word).
const ENCODED_WORD_BYTES: usize = 30;

/// Makes caller text safe for a header: CR, LF, tabs, other C0/C1 controls,
/// DEL and Unicode line/paragraph separators become spaces (or vanish), runs
/// of whitespace collapse to one space, ends are trimmed. This is what stops
/// header injection: no line break can survive.
pub(crate) fn sanitize_header_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for ch in s.chars() {
        let is_space =
            ch.is_whitespace() || ch.is_control() || ch == '\u{2028}' || ch == '\u{2029}';
        if is_space {
            // Controls other than whitespace are dropped, whitespace-like ones separate words.
            if ch.is_whitespace() || matches!(ch, '\r' | '\n' | '\t') {
                pending_space = true;
            }
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(ch);
    }
    out
}

/// True when `s` (already sanitised) must be sent as RFC 2047 encoded words.
pub(crate) fn needs_encoding(s: &str) -> bool {
    !s.is_ascii() || s.contains("=?") || s.split(' ').any(|w| w.len() > 70)
}

/// Encodes `s` as `=?utf-8?B?…?=` words, split at character boundaries.
/// An empty string gives the single empty word `=?utf-8?B??=` (what Delta Chat
/// sends for an empty group description).
pub(crate) fn encoded_words(s: &str) -> Vec<String> {
    if s.is_empty() {
        return vec!["=?utf-8?B??=".to_owned()];
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in s.chars() {
        if chunk.len() + ch.len_utf8() > ENCODED_WORD_BYTES {
            words.push(format!("=?utf-8?B?{}?=", B64.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(ch);
    }
    if !chunk.is_empty() {
        words.push(format!("=?utf-8?B?{}?=", B64.encode(chunk.as_bytes())));
    }
    words
}

/// Header words for free text (subject, group name, …): plain words when
/// the text is short ASCII, encoded words otherwise.
pub(crate) fn text_words(s: &str) -> Vec<String> {
    let s = sanitize_header_text(s);
    if needs_encoding(&s) {
        encoded_words(&s)
    } else {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Writes `Name: word word …\r\n`, folding between words so that lines stay
/// under 78 characters where possible (every word is at most [`MAX_WORD`]
/// long, so no line can reach 998).
pub(crate) fn write_header(out: &mut String, name: HeaderDef, words: &[String]) {
    write_header_named(out, name.as_str(), words);
}

fn write_header_named(out: &mut String, name: &str, words: &[String]) {
    out.push_str(name);
    out.push(':');
    let mut line_len = name.len() + 1;
    let mut first = true;
    for word in words {
        if !first && line_len + 1 + word.len() > SOFT_LINE {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
        first = false;
    }
    out.push_str("\r\n");
}

/// Checks an addr-spec for the wire: ASCII, one `@`, no whitespace, controls
/// or RFC 5322 specials. Returns it unchanged.
pub(crate) fn checked_addr(addr: &str) -> Result<&str, CodecError> {
    let bad = |why: &str| CodecError::InvalidInput(format!("address {addr:?}: {why}"));
    if addr.is_empty() {
        return Err(bad("empty"));
    }
    if addr.len() > MAX_WORD {
        return Err(bad("too long"));
    }
    let Some((local, domain)) = addr.split_once('@') else {
        return Err(bad("no @"));
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(bad("needs exactly one @ between local part and domain"));
    }
    if local.len() > 64 {
        return Err(bad("local part longer than 64"));
    }
    if let Some(c) = addr
        .chars()
        .find(|c| !c.is_ascii_graphic() || "<>()[]\\,;:\"".contains(*c))
    {
        return Err(bad(&format!("character {c:?} not allowed")));
    }
    Ok(addr)
}

/// Checks a Message-ID (given without angle brackets).
pub(crate) fn checked_msgid(id: &str) -> Result<&str, CodecError> {
    let bad = |why: &str| CodecError::InvalidInput(format!("message id {id:?}: {why}"));
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if id.len() > MAX_WORD {
        return Err(bad("too long"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '<' | '>' | '"' | '\\' | ',' | '(' | ')'))
    {
        return Err(bad(&format!("character {c:?} not allowed")));
    }
    Ok(id)
}

/// `<id>` for the wire.
pub(crate) fn bracketed(id: &str) -> Result<String, CodecError> {
    Ok(format!("<{}>", checked_msgid(id)?))
}

/// A display name as a quoted-string, escaping `\` and `"`.
pub(crate) fn quoted_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// Splits text into lines on CRLF, LF or lone CR.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Returns the text with CRLF line ends and a final CRLF (lone CRs become line ends).
pub(crate) fn crlf_text(text: &str) -> String {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(normalized.len() + 16);
    for line in normalized.split('\n') {
        out.push_str(line);
        out.push_str("\r\n");
    }
    if normalized.ends_with('\n') {
        // split() produced an empty last element: drop its extra CRLF
        out.truncate(out.len() - 2);
    }
    out
}

/// True when the text (CRLF) can go as 7bit: ASCII, no NUL, lines ≤ 998.
pub(crate) fn is_7bit_safe(text: &str) -> bool {
    text.is_ascii()
        && !text.contains('\0')
        && lines(text).all(|l| l.len() <= 998 && !l.contains('\r'))
}

/// Quoted-printable (RFC 2045) of a text whose lines end in CRLF. Line breaks
/// stay hard breaks; output lines are at most 76 characters.
pub(crate) fn quoted_printable(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3 / 2);
    let normalized = text.replace("\r\n", "\n");
    let mut line_iter = normalized.split('\n').peekable();
    while let Some(line) = line_iter.next() {
        let bytes = line.as_bytes();
        let mut col = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let token_len = if literal { 1 } else { 3 };
            // keep room for the soft-break "=" (76 incl. it)
            if col + token_len > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            if literal {
                out.push(char::from(b));
            } else {
                out.push('=');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
            col += token_len;
        }
        if line_iter.peek().is_some() {
            out.push_str("\r\n");
        }
    }
    out
}

/// Base64 in 76-character lines, each ending in CRLF.
pub(crate) fn base64_lines(data: &[u8]) -> String {
    let encoded = B64.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        // base64 output is ASCII, so every chunk is valid UTF-8
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// RFC 5322 date in UTC, e.g. `Fri, 27 Nov 2026 20:28:24 +0000`.
pub(crate) fn rfc5322_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = DAYS
        .get(usize::try_from(days.rem_euclid(7)).unwrap_or(0))
        .copied()
        .unwrap_or("Thu");
    let month_name = MONTHS
        .get(usize::try_from(month.saturating_sub(1)).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day} {month_name} {year:04} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// 64-bit FNV-1a, used for deterministic MIME boundaries.
pub(crate) fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed.wrapping_mul(0x100_0000_01b3);
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Percent-encoding for RFC 2231 parameter values (attr-char stays literal).
pub(crate) fn rfc2231_percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_811_304),
            "Fri, 27 Nov 2026 20:28:24 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn sanitize_kills_line_breaks() {
        assert_eq!(
            sanitize_header_text("a\r\nBcc: x\u{0}y\u{2028}z "),
            "a Bcc: xy z"
        );
    }

    #[test]
    fn qp_soft_breaks() {
        let long = "é".repeat(100);
        let qp = quoted_printable(&long);
        assert!(qp.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(quoted_printable("a \r\nb"), "a=20\r\nb");
    }
}
