//! A small HTML → plain text renderer for HTML-only mail. It is not a
//! sanitiser and not a layout engine: it drops tags, skips script/style/head,
//! decodes common entities and turns block elements into line breaks.

/// Renders HTML as plain text (LF line ends, trimmed).
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut pre_depth = 0usize;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        if rest.starts_with('<') {
            let Some(end) = rest.find('>') else {
                // unterminated tag: drop the rest
                break;
            };
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect();
            match name.as_str() {
                "script" | "style" | "head" | "title" if !closing && !tag.ends_with('/') => {
                    rest = skip_until_closing(rest, &name);
                }
                "br" => out.push('\n'),
                "p" | "blockquote" | "table" | "ul" | "ol" | "h1" | "h2" | "h3" | "h4" | "h5"
                | "h6" | "hr" => paragraph_break(&mut out),
                "pre" => {
                    paragraph_break(&mut out);
                    if closing {
                        pre_depth = pre_depth.saturating_sub(1);
                    } else {
                        pre_depth += 1;
                    }
                }
                "div" | "li" | "tr" | "dt" | "dd" => line_break(&mut out),
                "td" | "th" if !closing => out.push(' '),
                _ => {}
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..next];
        rest = &rest[next..];
        push_text(&mut out, &decode_entities(text), pre_depth > 0);
    }
    tidy(&out)
}

fn skip_until_closing<'a>(rest: &'a str, name: &str) -> &'a str {
    let needle = format!("</{name}");
    let lower = rest.to_ascii_lowercase();
    match lower.find(&needle) {
        Some(pos) => {
            let after = &rest[pos..];
            after.find('>').map_or("", |end| &after[end + 1..])
        }
        None => "",
    }
}

fn line_break(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn paragraph_break(out: &mut String) {
    if out.is_empty() {
        return;
    }
    line_break(out);
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
}

fn push_text(out: &mut String, text: &str, preformatted: bool) {
    if preformatted {
        out.push_str(&text.replace("\r\n", "\n"));
        return;
    }
    for ch in text.chars() {
        if ch.is_whitespace() && ch != '\u{a0}' {
            if !out.is_empty() && !out.ends_with([' ', '\n']) {
                out.push(' ');
            }
        } else if ch == '\u{a0}' {
            out.push(' ');
        } else {
            out.push(ch);
        }
    }
}

/// Trims each line, collapses 3+ line breaks to one empty line, trims the whole.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut empty_run = 0usize;
    for line in text.split('\n') {
        let line = line.trim_matches(' ');
        if line.is_empty() {
            empty_run += 1;
            if empty_run > 1 {
                continue;
            }
        } else {
            empty_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_matches('\n').to_owned()
}

/// Decodes named (a common subset) and numeric character references.
pub(crate) fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest
            .char_indices()
            .take(12)
            .find(|(_, c)| *c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|end| entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        return char::from_u32(code).filter(|c| *c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "laquo" => '«',
        "raquo" => '»',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "copy" => '©',
        "reg" => '®',
        "euro" => '€',
        "shy" => '\u{ad}',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "aacute" => 'á',
        "ccedil" => 'ç',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "ntilde" => 'ñ',
        "bull" => '•',
        "middot" => '·',
        "trade" => '™',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_blocks_and_entities() {
        let html = "<html><head><title>x</title><style>p{}</style></head><body>\
            <p>Hello&nbsp;<b>world</b> &amp; you</p><div>line<br>two</div>\
            <!-- hidden --><script>alert(1)</script>&#x1F600;&unknown; &lt;tag&gt;</body></html>";
        assert_eq!(
            html_to_text(html),
            "Hello world & you\n\nline\ntwo\n😀&unknown; <tag>"
        );
    }

    #[test]
    fn survives_garbage() {
        for s in ["<", "<<<>>>", "&", "&#99999999;", "<script>", "<!--", "a<b"] {
            let _ = html_to_text(s);
        }
    }
}
