//! Text simplification: separate what the sender typed from quotes, footers
//! and forward headers, the way Delta Chat lays a message out:
//!
//! `[forward header][top quote]user text[\r\n\r\n-- \r\nfooter]`
//!
//! Chat messages (with `Chat-Version`) only lose the forward header, the top
//! quote and the `-- ` footer. Classic mail additionally loses bottom quotes
//! with their "On … wrote:" line, Outlook-style quoted originals and short
//! non-standard footers; then [`Simplified::text_was_cut`] is set.

/// The parts of a text body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Simplified {
    /// What the sender wrote (LF line ends, no trailing whitespace).
    pub text: String,
    /// The quote at the top (without `> ` prefixes), when there is one.
    pub top_quote: Option<String>,
    /// The signature / status after the `-- ` line.
    pub footer: Option<String>,
    /// The body started with a forward header.
    pub is_forwarded: bool,
    /// Something (bottom quote, non-standard footer) was cut from classic mail.
    pub text_was_cut: bool,
}

/// The line Delta Chat writes before a forwarded message.
pub(crate) const FORWARD_HEADER: &str = "---------- Forwarded message ----------";
/// Zero width space, put between the dashes of user lines starting with `--`.
pub(crate) const ZWSP: char = '\u{200B}';

/// Splits a text body into text, top quote, footer (see the module doc).
pub fn simplify(text: &str, is_chat: bool) -> Simplified {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<&str> = normalized.split('\n').collect();
    let mut out = Simplified::default();

    if !is_chat {
        drop_leading_empty(&mut lines);
    }
    out.is_forwarded = strip_forward_header(&mut lines, is_chat);

    // Footer: everything after the first line that is exactly "-- " (or "--  ").
    // Classic mail often loses the trailing space, so there a bare "--" near
    // the end counts too.
    let footer_at = lines
        .iter()
        .position(|l| *l == "-- " || *l == "--  ")
        .or_else(|| {
            if is_chat {
                None
            } else {
                bare_dashes_footer(&lines)
            }
        });
    if let Some(ix) = footer_at {
        let mut footer: Vec<&str> = lines.split_off(ix + 1);
        lines.truncate(ix);
        if !is_chat && cut_bottom_quote(&mut footer) {
            out.text_was_cut = true;
        }
        let footer = join_trimmed(&footer);
        if !footer.is_empty() {
            out.footer = Some(unescape_footer_marks(&footer));
        }
    }

    if !is_chat {
        out.text_was_cut |= cut_outlook_quote(&mut lines);
        out.text_was_cut |= cut_nonstandard_footer(&mut lines);
        out.text_was_cut |= cut_bottom_quote(&mut lines);
    }

    out.top_quote = take_top_quote(&mut lines, is_chat);
    out.text = unescape_footer_marks(&join_trimmed(&lines));
    out
}

/// The last bare `--` line with at most six non-empty lines after it and some
/// text before it.
fn bare_dashes_footer(lines: &[&str]) -> Option<usize> {
    let ix = lines.iter().rposition(|l| l.trim_end() == "--")?;
    let after = lines[ix + 1..]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .count();
    let before = lines[..ix].iter().any(|l| !l.trim().is_empty());
    (after <= 6 && before).then_some(ix)
}

fn drop_leading_empty(lines: &mut Vec<&str>) {
    let n = lines.iter().take_while(|l| l.trim().is_empty()).count();
    lines.drain(..n);
}

/// Delta Chat: forward line, `From: …`, empty line. Classic mail (Gmail,
/// Thunderbird): a dashed "Forwarded message" line and a header block up to
/// the first empty line.
fn strip_forward_header(lines: &mut Vec<&str>, is_chat: bool) -> bool {
    let Some(first) = lines.first() else {
        return false;
    };
    let first = first.trim_end();
    let is_dc_header =
        first == FORWARD_HEADER && lines.get(1).is_some_and(|l| l.starts_with("From:"));
    if is_dc_header {
        let end = if lines.get(2).is_some_and(|l| l.trim().is_empty()) {
            3
        } else {
            2
        };
        lines.drain(..end.min(lines.len()));
        return true;
    }
    if is_chat {
        return false;
    }
    let classic = first.starts_with("--") && first.ends_with("--") && {
        let lower = first.to_lowercase();
        lower.contains("forwarded message")
            || lower.contains("original message") && lower.contains("forward")
    };
    if classic {
        let header_end = lines
            .iter()
            .skip(1)
            .position(|l| l.trim().is_empty())
            .map_or(lines.len(), |p| p + 2);
        lines.drain(..header_end.min(lines.len()));
        return true;
    }
    false
}

fn is_quote_line(line: &str) -> bool {
    line.starts_with('>')
}

fn strip_quote_prefix(line: &str) -> &str {
    line.strip_prefix("> ")
        .or_else(|| line.strip_prefix('>'))
        .unwrap_or(line)
}

/// A top quote is a block of `>` lines at the very start, followed by an empty
/// line or the end. An empty first line (what the builder writes before user
/// text that starts with `>`) means there is no quote. Classic mail may have an
/// "On … wrote:" line before the block.
fn take_top_quote(lines: &mut Vec<&str>, is_chat: bool) -> Option<String> {
    let mut start = 0;
    if !is_chat
        && lines.first().is_some_and(|l| is_quote_headline(l))
        && lines.get(1).is_some_and(|l| is_quote_line(l))
    {
        start = 1;
    }
    if !lines.get(start).is_some_and(|l| is_quote_line(l)) {
        return None;
    }
    let end = lines[start..]
        .iter()
        .position(|l| !is_quote_line(l))
        .map_or(lines.len(), |p| p + start);
    if end < lines.len() && !lines.get(end).is_some_and(|l| l.trim().is_empty()) {
        // quote directly followed by text: interleaved reply, leave it alone
        return None;
    }
    let quote: Vec<&str> = lines[start..end]
        .iter()
        .map(|l| strip_quote_prefix(l))
        .collect();
    let quote = unescape_footer_marks(&join_trimmed(&quote));
    lines.drain(..(end + 1).min(lines.len()));
    Some(quote)
}

/// Removes a trailing block of `>` lines (empty lines may separate them) and
/// the attribution line above it. Returns true when something was cut.
fn cut_bottom_quote(lines: &mut Vec<&str>) -> bool {
    let mut end = lines.len();
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut start = end;
    while start > 0 {
        let line = lines[start - 1];
        if is_quote_line(line) || line.trim().is_empty() && start < end {
            start -= 1;
        } else {
            break;
        }
    }
    // do not count empty lines at the top of the block as part of it
    while start < end && lines[start].trim().is_empty() {
        start += 1;
    }
    if start == end {
        return false;
    }
    let mut cut_from = start;
    // the attribution, possibly wrapped over two lines
    let mut above = start;
    while above > 0 && lines[above - 1].trim().is_empty() {
        above -= 1;
    }
    if above > 0 && is_quote_headline(lines[above - 1]) {
        cut_from = above - 1;
        if cut_from > 0 {
            let joined = format!("{} {}", lines[cut_from - 1].trim(), lines[cut_from].trim());
            if starts_like_headline(lines[cut_from - 1]) && is_quote_headline(&joined) {
                cut_from -= 1;
            }
        }
    } else if above > 1 {
        let joined = format!("{} {}", lines[above - 2].trim(), lines[above - 1].trim());
        if starts_like_headline(lines[above - 2]) && is_quote_headline(&joined) {
            cut_from = above - 2;
        }
    }
    if lines[..cut_from].iter().all(|l| l.trim().is_empty()) {
        // the whole message is a quote: keep it rather than show nothing
        return false;
    }
    lines.truncate(cut_from);
    true
}

fn starts_like_headline(line: &str) -> bool {
    let t = line.trim_start();
    [
        "On ", "Am ", "Le ", "El ", "Il ", "Op ", "Den ", "W dniu ", "Em ",
    ]
    .iter()
    .any(|p| t.starts_with(p))
}

/// "On … wrote:" and its common translations.
fn is_quote_headline(line: &str) -> bool {
    let t = line.trim();
    if !t.ends_with(':') || t.len() > 300 {
        return false;
    }
    let lower = t.to_lowercase();
    const MARKERS: [&str; 14] = [
        "wrote:",
        "schrieb",
        "a écrit",
        "escribió:",
        "ha scritto:",
        "schreef",
        "skrev",
        "kirjoitti:",
        "napisał",
        "написал",
        "escreveu:",
        "yazdı:",
        "έγραψε:",
        "写道：",
    ];
    MARKERS.iter().any(|m| lower.contains(m))
}

/// Outlook and similar: a separator (`____…` or `-----Original Message-----`)
/// followed by a `From:` header block; everything from there is the quoted
/// original.
fn cut_outlook_quote(lines: &mut Vec<&str>) -> bool {
    const FROM: [&str; 5] = ["From:", "Von:", "De:", "Van:", "Från:"];
    let is_from = |l: &str| FROM.iter().any(|f| l.trim_start().starts_with(f));
    for ix in 1..lines.len() {
        let line = lines[ix].trim();
        let lower = line.to_lowercase();
        let is_separator = line.len() >= 10 && line.chars().all(|c| c == '_')
            || line.starts_with("-----") && lower.contains("original message");
        let next_is_from = lines.get(ix + 1).is_some_and(|l| is_from(l));
        let header_block = is_from(line)
            && lines.get(ix + 1).is_some_and(|l| {
                let n = l.trim_start();
                n.starts_with("Sent:") || n.starts_with("Gesendet:") || n.starts_with("Envoyé :")
            });
        if (is_separator && (next_is_from || lower.contains("original message"))) || header_block {
            if lines[..ix].iter().all(|l| l.trim().is_empty()) {
                return false;
            }
            lines.truncate(ix);
            return true;
        }
    }
    false
}

/// A line of 3+ identical `-`, `_`, `=`, `*` or `~` near the end (at most six
/// non-empty lines follow, some text precedes) starts a footer that is cut.
fn cut_nonstandard_footer(lines: &mut Vec<&str>) -> bool {
    let is_separator = |l: &str| {
        let t = l.trim_end();
        t.len() >= 3
            && t.chars()
                .next()
                .is_some_and(|c| "-_=*~".contains(c) && t.chars().all(|x| x == c))
    };
    for ix in (0..lines.len()).rev() {
        let after = lines[ix + 1..]
            .iter()
            .filter(|l| !l.trim().is_empty())
            .count();
        if after > 6 {
            break;
        }
        if is_separator(lines[ix]) {
            if lines[..ix].iter().all(|l| l.trim().is_empty()) {
                return false;
            }
            lines.truncate(ix);
            return true;
        }
    }
    false
}

/// Joins lines with LF, dropping leading empty lines and trailing whitespace.
fn join_trimmed(lines: &[&str]) -> String {
    let start = lines
        .iter()
        .position(|l| !l.trim().is_empty())
        .unwrap_or(lines.len());
    let joined = lines[start..].join("\n");
    joined.trim_end().to_owned()
}

/// `-\u{200B}-` at a line start back to `--`.
pub(crate) fn unescape_footer_marks(text: &str) -> String {
    let escaped = format!("-{ZWSP}-");
    if !text.contains(&escaped) {
        return text.to_owned();
    }
    text.split('\n')
        .map(|l| match l.strip_prefix(&escaped) {
            Some(rest) => format!("--{rest}"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `--` at a line start becomes `-\u{200B}-`, so it cannot be read as a footer.
pub(crate) fn escape_footer_marks(text: &str) -> String {
    if !text.starts_with("--") && !text.contains("\n--") {
        return text.to_owned();
    }
    text.split('\n')
        .map(|l| match l.strip_prefix("--") {
            Some(rest) => format!("-{ZWSP}-{rest}"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decodes `format=flowed` (RFC 3676): joins soft-broken lines, removes space
/// stuffing, keeps quote depth as `> ` prefixes.
pub(crate) fn unflow(text: &str, delsp: bool) -> String {
    let normalized = text.replace("\r\n", "\n");
    let mut out: Vec<String> = Vec::new();
    // (depth, text so far, last line was flowed)
    let mut current: Option<(usize, String, bool)> = None;
    for raw in normalized.split('\n') {
        let depth = raw.chars().take_while(|c| *c == '>').count();
        let mut content = &raw[depth..];
        if let Some(unstuffed) = content.strip_prefix(' ') {
            content = unstuffed;
        }
        let flowed = content.ends_with(' ') && content != "-- ";
        let piece = if flowed && delsp {
            &content[..content.len() - 1]
        } else {
            content
        };
        let continues = content != "-- " && matches!(&current, Some((d, _, true)) if *d == depth);
        if continues {
            if let Some((_, acc, last_flowed)) = current.as_mut() {
                acc.push_str(piece);
                *last_flowed = flowed;
            }
        } else {
            if let Some((d, acc, _)) = current.take() {
                out.push(quote_prefixed(d, &acc));
            }
            current = Some((depth, piece.to_owned(), flowed));
        }
    }
    if let Some((d, acc, _)) = current {
        out.push(quote_prefixed(d, &acc));
    }
    out.join("\n")
}

fn quote_prefixed(depth: usize, text: &str) -> String {
    if depth == 0 {
        text.to_owned()
    } else {
        format!("{} {}", ">".repeat(depth), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_layout() {
        let s = simplify(
            "---------- Forwarded message ----------\r\nFrom: Delta Chat\r\n\r\n> quoted\r\n> more\r\n\r\nHello\r\n-\u{200B}- not a footer\r\n\r\n-- \r\nmy status\r\n",
            true,
        );
        assert!(s.is_forwarded);
        assert_eq!(s.top_quote.as_deref(), Some("quoted\nmore"));
        assert_eq!(s.text, "Hello\n-- not a footer");
        assert_eq!(s.footer.as_deref(), Some("my status"));
        assert!(!s.text_was_cut);
    }

    #[test]
    fn empty_line_first_means_no_quote() {
        let s = simplify("\r\n> not a quote\r\n", true);
        assert_eq!(s.top_quote, None);
        assert_eq!(s.text, "> not a quote");
    }

    #[test]
    fn chat_keeps_bottom_quote() {
        let text = "Hi\n\nOn Mon, Bob wrote:\n> old";
        assert_eq!(simplify(text, true).text, text);
        let classic = simplify(text, false);
        assert_eq!(classic.text, "Hi");
        assert!(classic.text_was_cut);
    }

    #[test]
    fn flowed() {
        assert_eq!(
            unflow("Hello \r\nworld\r\n> a \r\n> b\r\n-- \r\nsig", false),
            "Hello world\n> a b\n-- \nsig"
        );
        assert_eq!(unflow("Hel \r\nlo", true), "Hello");
        assert_eq!(unflow(" >stuffed", false), ">stuffed");
    }

    #[test]
    fn escape_roundtrip() {
        let t = "-- a\n--b\nx -- y";
        assert_eq!(unescape_footer_marks(&escape_footer_marks(t)), t);
        assert!(!escape_footer_marks(t).lines().any(|l| l.starts_with("--")));
    }
}
