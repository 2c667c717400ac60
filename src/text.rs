//! Text from events (labels, annotations, notes) is data: it must never
//! forge a line, reorder what a reader sees, or hide a character. These are
//! the leaf helpers every output (stdout, channels, pages) uses before
//! putting such text in front of a human.

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

#[cfg(test)]
mod tests {
    use super::*;

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
