//! Text from events (labels, annotations, notes) is data: it must never
//! forge a line, reorder what a reader sees, or hide a character. These are
//! the leaf helpers every output (stdout, channels, pages) uses before
//! putting such text in front of a human.

pub mod redact;
pub mod template;

use std::borrow::Cow;

/// Whether `c` can break a line or change how the text around it reads:
/// C0 and C1 controls (newline, CR, NUL, escape, …), Unicode line and
/// paragraph separators, and the bidirectional overrides, embeddings and
/// isolates (the "Trojan Source" characters).
pub fn is_forging(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

/// `s` on one line: every forging character becomes `\u{…}` (a visible
/// escape, so the reader sees that something was there), except a tab,
/// which becomes a space.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_forging) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push(' '),
            c if is_forging(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` with its line breaks kept and each line made [`one_line`]: a body
/// whose lines are its own, none of them able to forge another.
pub fn each_line(s: &str) -> String {
    s.lines()
        .map(|l| one_line(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Text for a chat's markdown (DingTalk, WeCom), where it is shown and
/// must do nothing: on one line; markdown punctuation backslash-escaped
/// (no link, image, emphasis, HTML or `<@user>` mention can form); a
/// line-starting marker (`#`, `>`, `-`, `+`, `1.`) escaped; `://` and `@`
/// broken with a zero-width space, so no bare URL turns into a link and no
/// `@mobile` into a mention. ripcord adds its own links and mentions
/// outside such text.
pub fn markdown(s: &str) -> String {
    let line = one_line(s);
    let mut out = String::with_capacity(line.len() + 8);
    let trimmed = line.trim_start();
    let lead = line.len() - trimmed.len();
    out.push_str(&line[..lead]);
    if trimmed.starts_with(['#', '>', '-', '+']) {
        out.push('\\');
    }
    // `1. first` would start a numbered list: its dot is escaped (`1\.`);
    // `1.1s` starts none and stays as it is.
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = trimmed;
    if digits > 0
        && trimmed[digits..].starts_with('.')
        && trimmed[digits + 1..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
    {
        out.push_str(&trimmed[..digits]);
        out.push_str("\\.");
        rest = &trimmed[digits + 1..];
    }
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("://") {
            out.push_str(":\u{200B}//");
            rest = &rest[3..];
            continue;
        }
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '<' | '>' | '!' | '~' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '@' => out.push_str("@\u{200B}"),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Text for HTML (pages, the review): on one line, and `& < > " '`
/// escaped, so it can only ever be text, in an element or an attribute.
pub fn html(s: &str) -> String {
    escape_html(&one_line(s))
}

/// `& < > " '` escaped, so the text can only ever be text, in an element
/// or a quoted attribute; line breaks and other characters are kept (the
/// email's HTML part lays out lines itself). Output that shows text from
/// events on one line wants [`html`].
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Breaks what a chat would turn into a link or a mention: `://` and `@`
/// get a zero-width space, invisible to a reader.
pub fn defang(s: &str) -> String {
    s.replace("://", ":\u{200B}//").replace('@', "@\u{200B}")
}

/// The longest prefix of `s` of at most `max` bytes ending on a character
/// boundary.
pub fn clip_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`) stay; everything
/// else is `%XX` of its UTF-8 bytes, upper-case hex.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Text percent-encoded for a URL (a path segment, a query value, a form
/// field): `/`, `?`, `#`, `&` and `=` stay inside it. Also Aliyun's POP
/// encoding (space `%20`, `*` `%2A`, `~` kept).
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Instance names for people, compactly and within `max_bytes`: runs of
/// names that differ only in a counting number of the same width collapse
/// (`i-p06..i-p10`), and past the budget the rest are counted
/// (`i-p06, i-p09 and 12 more`). `names` sorted; each name is one line.
pub fn compact_names(names: &[&str], max_bytes: usize) -> String {
    // Split a name into (stem, digits) when it ends in a number.
    fn split(n: &str) -> Option<(&str, &str)> {
        let digits = n.len() - n.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        (digits > 0 && digits <= 18).then(|| n.split_at(n.len() - digits))
    }
    let mut parts: Vec<(String, usize)> = Vec::new(); // (text, names covered)
    let mut i = 0;
    while i < names.len() {
        let mut j = i;
        if let Some((stem, digits)) = split(names[i]) {
            let mut prev: u64 = digits.parse().unwrap_or(0);
            while j + 1 < names.len() {
                match split(names[j + 1]) {
                    Some((s, d))
                        if s == stem
                            && d.len() == digits.len()
                            && d.parse::<u64>().ok() == prev.checked_add(1) =>
                    {
                        prev += 1;
                        j += 1;
                    }
                    _ => break,
                }
            }
        }
        let text = match j - i {
            0 => one_line(names[i]).into_owned(),
            1 => format!("{}, {}", one_line(names[i]), one_line(names[j])),
            _ => format!("{}..{}", one_line(names[i]), one_line(names[j])),
        };
        parts.push((text, j - i + 1));
        i = j + 1;
    }
    let total: usize = parts.iter().map(|(_, n)| n).sum();
    let mut out = String::new();
    let mut shown = 0;
    for (k, (text, n)) in parts.iter().enumerate() {
        let sep = if k == 0 { "" } else { ", " };
        // Room for the text and, if more follow, " and N more".
        let tail = if k + 1 < parts.len() { 16 } else { 0 };
        if out.len() + sep.len() + text.len() + tail > max_bytes && k > 0 {
            out.push_str(&format!(" and {} more", total - shown));
            return out;
        }
        if k == 0 && text.len() + tail > max_bytes {
            let cut = clip_bytes(text, max_bytes.saturating_sub(tail + 3));
            out.push_str(cut);
            out.push_str("...");
        } else {
            out.push_str(sep);
            out.push_str(text);
        }
        shown += n;
    }
    out
}

/// A Prometheus label name: what a label may be called, and what a
/// template placeholder may name.
#[inline]
pub fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_lists_collapse_runs_and_count_what_does_not_fit() {
        let names = ["i-p06", "i-p07", "i-p08", "i-p09", "i-p10"];
        assert_eq!(compact_names(&names, 200), "i-p06..i-p10");
        assert_eq!(
            compact_names(&["i-p06", "i-p07", "i-p09"], 200),
            "i-p06, i-p07, i-p09"
        );
        assert_eq!(compact_names(&["a", "b"], 200), "a, b");
        assert_eq!(compact_names(&["web-9", "web-10"], 200), "web-9, web-10");
        let many: Vec<String> = (0..14).map(|i| format!("host-{}", i * 3)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let s = compact_names(&many, 40);
        assert!(s.len() <= 40, "{s}");
        assert!(
            s.starts_with("host-0, host-3") && s.ends_with("more"),
            "{s}"
        );
        // A forging name stays on its line.
        assert_eq!(compact_names(&["x\n[LOW] y"], 100), "x\\u{a}[LOW] y");
        assert_eq!(compact_names(&[], 100), "");
    }

    #[test]
    fn markdown_text_forms_no_link_mention_heading_or_line() {
        assert_eq!(markdown("i-0a1 is down"), "i-0a1 is down");
        assert_eq!(
            markdown("[click](http://evil.example) @13800000000 <@all>"),
            "\\[click\\]\\(http:\u{200B}//evil.example\\) @\u{200B}13800000000 \\<@\u{200B}all\\>"
        );
        assert_eq!(markdown("# huge"), "\\# huge");
        assert_eq!(markdown("1. first"), "1\\. first");
        assert_eq!(markdown("1.1s"), "1.1s");
        // The newline's visible escape keeps its backslash when rendered.
        assert_eq!(markdown("x\n- [LOW] forged"), "x\\\\u{a}- \\[LOW\\] forged");
        assert_eq!(markdown("http_5xx_ratio"), "http\\_5xx\\_ratio");
    }

    #[test]
    fn html_escapes_the_five_specials_and_html_also_keeps_one_line() {
        assert_eq!(
            escape_html("<a href=\"x\">Tom & 'Jerry'</a>\n回滚"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;\n回滚"
        );
        assert_eq!(html("<b>\nx"), "&lt;b&gt;\\u{a}x");
    }

    #[test]
    fn controls_and_bidi_become_visible_escapes() {
        assert_eq!(one_line("plain i-0a1"), "plain i-0a1");
        assert_eq!(
            one_line("x\n- [LOW/severe] rollback done: i-real"),
            "x\\u{a}- [LOW/severe] rollback done: i-real"
        );
        assert_eq!(one_line("a\r\0b\u{1b}[31m"), "a\\u{d}\\u{0}b\\u{1b}[31m");
        assert_eq!(one_line("\u{202E}evil\u{2066}"), "\\u{202e}evil\\u{2066}");
        assert_eq!(one_line("a\u{85}b\u{2028}c"), "a\\u{85}b\\u{2028}c");
        assert_eq!(one_line("tab\there"), "tab here");
    }

    proptest::proptest! {
        #[test]
        fn one_line_never_leaves_a_forging_character(s in "\\PC*|[\\x00-\\x1f\\u{80}-\\u{9f}\\u{2028}\\u{202a}-\\u{202e}a-z]{0,40}") {
            let out = one_line(&s);
            proptest::prop_assert!(!out.chars().any(is_forging));
        }
    }
}
