//! Wiki links in Markdown: `[[Title]]`, `[[slug]]`, `[[target|label]]`.
//!
//! Pure and total: any input gives a list (possibly empty), never a panic.
//! Not a link: text in inline code, fenced or indented code blocks, an
//! escaped `\[[`, empty brackets, brackets not closed on their line. Of
//! nested brackets, `[[a [[b]] c]]`, the innermost pair is the link.

use std::ops::Range;

/// The longest target a link may name; longer bracketed text is not a link.
pub const MAX_TARGET_CHARS: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WikiLink {
    /// The target as written, trimmed.
    pub target: String,
    /// The text after `|`, trimmed, when there is one and it is not empty.
    pub label: Option<String>,
    /// Where `[[…]]` is in the text, in bytes.
    pub span: Range<usize>,
}

impl WikiLink {
    /// What the link is resolved by: compared with slugs and lower-case titles.
    pub fn key(&self) -> String {
        self.target.to_lowercase()
    }

    /// The text a reader sees.
    pub fn text(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.target)
    }
}

/// Every link in `text`, in order.
pub fn parse(text: &str) -> Vec<WikiLink> {
    let mut links = Vec::new();
    let mut fence: Option<(u8, usize)> = None;
    let mut previous_blank = true;
    let mut in_indented_code = false;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let blank = content.trim().is_empty();
        if let Some((marker, len)) = fence {
            if closes_fence(content, marker, len) {
                fence = None;
            }
        } else if let Some(open) = opens_fence(content) {
            fence = Some(open);
        } else if !blank && indent_columns(content) >= 4 && (previous_blank || in_indented_code) {
            in_indented_code = true;
        } else {
            if !blank {
                in_indented_code = false;
            }
            scan_line(content, start, &mut links);
        }
        previous_blank = blank;
        start += line.len();
    }
    links
}

/// Columns of leading whitespace (a tab to the next multiple of four).
fn indent_columns(line: &str) -> usize {
    let mut columns = 0;
    for b in line.bytes() {
        match b {
            b' ' => columns += 1,
            b'\t' => columns += 4 - columns % 4,
            _ => break,
        }
    }
    columns
}

/// A fence opening: up to three spaces, then three or more ` or ~.
fn opens_fence(line: &str) -> Option<(u8, usize)> {
    if indent_columns(line) > 3 {
        return None;
    }
    let rest = line.trim_start();
    let marker = *rest.as_bytes().first()?;
    if marker != b'`' && marker != b'~' {
        return None;
    }
    let len = rest.bytes().take_while(|&b| b == marker).count();
    // A backtick fence's info string may not contain a backtick.
    if len < 3 || (marker == b'`' && rest[len..].contains('`')) {
        return None;
    }
    Some((marker, len))
}

fn closes_fence(line: &str, marker: u8, len: usize) -> bool {
    if indent_columns(line) > 3 {
        return false;
    }
    let rest = line.trim();
    rest.len() >= len && rest.bytes().all(|b| b == marker)
}

/// Links in one line of ordinary text; `offset` is the line's place in the text.
fn scan_line(line: &str, offset: usize, links: &mut Vec<WikiLink>) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // An escaped character is text, whatever it is.
            b'\\' if i + 1 < bytes.len() && bytes[i + 1].is_ascii_punctuation() => i += 2,
            b'`' => {
                let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
                i = match closing_backticks(bytes, i + run, run) {
                    Some(end) => end,
                    // An unmatched run is literal backticks.
                    None => i + run,
                };
            }
            b'[' if bytes.get(i + 1) == Some(&b'[') => match link_at(line, i) {
                Some((target, label, end)) => {
                    links.push(WikiLink {
                        target,
                        label,
                        span: offset + i..offset + end,
                    });
                    i = end;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
}

/// The end of the backtick run of exactly `run` that closes a code span.
fn closing_backticks(bytes: &[u8], mut i: usize, run: usize) -> Option<usize> {
    while i < bytes.len() {
        if bytes[i] == b'`' {
            let n = bytes[i..].iter().take_while(|&&b| b == b'`').count();
            if n == run {
                return Some(i + n);
            }
            i += n;
        } else {
            i += 1;
        }
    }
    None
}

/// The link that starts with `[[` at `i`: (target, label, end after `]]`).
fn link_at(line: &str, i: usize) -> Option<(String, Option<String>, usize)> {
    let inner_start = i + 2;
    let close = line[inner_start..].find("]]")? + inner_start;
    let inner = &line[inner_start..close];
    // `[[a [[b]]`: the later `[[` opens the link; this one is text.
    if inner.contains("[[") {
        return None;
    }
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t.trim(), Some(l.trim()).filter(|l| !l.is_empty())),
        None => (inner.trim(), None),
    };
    if target.is_empty() || target.chars().count() > MAX_TARGET_CHARS || target.contains('[') {
        return None;
    }
    Some((target.to_string(), label.map(str::to_string), close + 2))
}

/// The slug a title makes: lower-case ASCII letters and digits joined by
/// single hyphens, at most 100 characters; "entry" when nothing is left.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 100 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() { "entry".into() } else { slug.into() }
}

/// Whether `s` is a slug: `a-z0-9` words joined by single hyphens, 1-120 bytes.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 120
        && s.split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn targets(text: &str) -> Vec<(String, Option<String>)> {
        parse(text).into_iter().map(|l| (l.target, l.label)).collect()
    }

    fn t(target: &str) -> (String, Option<String>) {
        (target.into(), None)
    }

    #[test]
    fn finds_titles_slugs_and_labels() {
        let text = "See [[Design Notes]] and [[deploy-guide]], or [[ops | the runbook ]].";
        assert_eq!(
            targets(text),
            [
                t("Design Notes"),
                t("deploy-guide"),
                ("ops".into(), Some("the runbook".into()))
            ]
        );
        let first = &parse(text)[0];
        assert_eq!(&text[first.span.clone()], "[[Design Notes]]");
        assert_eq!(first.key(), "design notes");
        // An empty label is no label.
        assert_eq!(targets("[[a|]]"), [t("a")]);
    }

    #[test]
    fn code_and_escapes_are_not_links() {
        assert_eq!(targets("`[[code]]` and ``x `[[still code]]` y`` [[real]]"), [t("real")]);
        assert_eq!(targets("```\n[[fenced]]\n```\n[[after]]"), [t("after")]);
        assert_eq!(
            targets("~~~~ rust\n[[fenced]]\n~~~\n[[inside]]\n~~~~\n[[out]]"),
            [t("out")]
        );
        assert_eq!(targets("para\n\n    [[indented]]\n\t[[tab]]\n\n[[out]]"), [t("out")]);
        // An indented line continuing a paragraph is not a code block.
        assert_eq!(targets("para\n    [[continued]]"), [t("continued")]);
        assert_eq!(targets(r"\[[escaped]] [[kept]]"), [t("kept")]);
        // An unmatched backtick is a literal one.
        assert_eq!(targets("a ` b [[c]]"), [t("c")]);
    }

    #[test]
    fn empty_nested_and_unclosed_brackets() {
        assert!(targets("[[]] [[ ]] [[|label]]").is_empty());
        assert_eq!(targets("[[outer [[inner]] rest]]"), [t("inner")]);
        assert!(targets("[[unclosed\n]] next line").is_empty());
        assert_eq!(targets("[[[triple]]]"), [t("triple")]);
        assert!(targets("[[").is_empty());
        assert!(targets("]]").is_empty());
        assert!(targets(&format!("[[{}]]", "x".repeat(MAX_TARGET_CHARS + 1))).is_empty());
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Hello, World!"), "hello-world");
        assert_eq!(slugify("  --Déjà vu 2 "), "d-j-vu-2");
        assert_eq!(slugify("日本語"), "entry");
        assert!(slugify(&"ab ".repeat(100)).len() <= 101);
        assert!(is_slug(&slugify(&"ab ".repeat(100))));
        assert!(is_slug("a-b-9"));
        for bad in ["", "A", "a--b", "-a", "a-", "a b", "á"] {
            assert!(!is_slug(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_input_parses_without_panic(text in ".{0,300}") {
            for link in parse(&text) {
                prop_assert!(text.get(link.span.clone()).is_some());
                prop_assert!(text[link.span.clone()].starts_with("[["));
                prop_assert!(!link.target.is_empty());
            }
        }

        #[test]
        fn bracket_soup_parses_without_panic(text in "[\\[\\]|`\\\\a \n~]{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn slugify_always_makes_a_slug(title in ".{0,300}") {
            prop_assert!(is_slug(&slugify(&title)));
        }
    }
}
