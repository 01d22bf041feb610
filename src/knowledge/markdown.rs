//! An entry's Markdown as HTML a browser may show: rendered with
//! pulldown-cmark, raw HTML shown as text, wiki links as anchors (broken ones
//! marked), and the whole sanitised by ammonia (so `javascript:` URLs,
//! event handlers and the like never get through, whatever the renderer did).

use std::collections::HashSet;
use std::sync::LazyLock;

use pulldown_cmark::{Event, Options, Parser, html};

use super::links::WikiLink;

/// Marks where a wiki link goes while the rest is rendered: private-use
/// characters, which `clean_text` takes out of stored content.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// Content as stored: without the placeholder characters (and so without
/// any way to forge a link or a snippet highlight).
pub fn clean_text(content: &str) -> String {
    content.replace([OPEN, CLOSE], "\u{FFFD}")
}

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut b = ammonia::Builder::default();
    b.add_allowed_classes("a", ["wikilink", "broken"])
        .url_schemes(HashSet::from(["http", "https", "mailto"]));
    b
});

/// The HTML of `content` whose `links` (from `links::parse` of the same
/// text) resolve to the slugs `resolved` gives (None: broken).
pub fn render(content: &str, links: &[WikiLink], resolved: &[Option<String>]) -> String {
    // Each link becomes a placeholder the renderer passes through as text.
    let mut marked = String::with_capacity(content.len());
    let mut at = 0;
    for (n, link) in links.iter().enumerate() {
        marked.push_str(&content[at..link.span.start]);
        marked.push(OPEN);
        marked.push_str(&n.to_string());
        marked.push(CLOSE);
        at = link.span.end;
    }
    marked.push_str(&content[at..]);

    let parser = Parser::new_ext(&marked, Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES)
        // Raw HTML is shown, not interpreted.
        .map(|event| match event {
            Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
            other => other,
        });
    let mut rendered = String::with_capacity(marked.len() * 5 / 4);
    html::push_html(&mut rendered, parser);

    let mut out = String::with_capacity(rendered.len());
    let mut rest = rendered.as_str();
    while let Some(open) = rest.find(OPEN) {
        out.push_str(&rest[..open]);
        let after = &rest[open + OPEN.len_utf8()..];
        let Some(close) = after.find(CLOSE) else {
            break;
        };
        if let Some(link) = after[..close]
            .parse::<usize>()
            .ok()
            .and_then(|n| links.get(n).map(|l| (n, l)))
        {
            let (n, link) = link;
            out.push_str(&anchor(link, resolved.get(n).and_then(Option::as_deref)));
        }
        rest = &after[close + CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    SANITIZER.clean(&out).to_string()
}

fn anchor(link: &WikiLink, slug: Option<&str>) -> String {
    let text = escape(link.text());
    match slug {
        Some(slug) => format!(r#"<a class="wikilink" href="/knowledge/entries/{slug}">{text}</a>"#),
        None => format!(
            r#"<a class="wikilink broken" title="no entry yet: {}">{text}</a>"#,
            escape(&link.target)
        ),
    }
}

/// Text made safe inside HTML elements and quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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

/// A search snippet from PostgreSQL's `ts_headline` run with OPEN/CLOSE as
/// the highlight marks: escaped as text, the marks made `<mark>`.
pub fn snippet_html(headline: &str) -> String {
    escape(headline).replace(OPEN, "<mark>").replace(CLOSE, "</mark>")
}

/// HTML another instance rendered (an entry's `contentHtml`), held to the
/// same rules as ours.
pub fn sanitize(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

/// A snippet another instance made: text with `<mark>` and nothing else.
pub fn sanitize_snippet(html: &str) -> String {
    static MARKS: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
        let mut b = ammonia::Builder::empty();
        b.add_tags(["mark"]);
        b
    });
    MARKS.clean(html).to_string()
}

/// The highlight marks to give `ts_headline` (StartSel, StopSel).
pub const HIGHLIGHT: (char, char) = (OPEN, CLOSE);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::links;

    fn html(content: &str, resolve: impl Fn(&str) -> Option<String>) -> String {
        let content = clean_text(content);
        let found = links::parse(&content);
        let slugs: Vec<_> = found.iter().map(|l| resolve(&l.key())).collect();
        render(&content, &found, &slugs)
    }

    #[test]
    fn a_peers_html_keeps_only_what_ours_may_hold() {
        let html = sanitize(r#"<p onclick="x()">hi <a href="javascript:alert(1)">a</a><script>bad()</script></p>"#);
        assert!(
            !html.contains("onclick") && !html.contains("javascript") && !html.contains("<script"),
            "{html}"
        );
        let snippet = sanitize_snippet(r#"a <mark>b</mark> <img src=x onerror=y()> <b>c</b>"#);
        assert_eq!(snippet, "a <mark>b</mark>  c");
    }

    #[test]
    fn renders_markdown_and_links() {
        let out = html("# Hi\n\nSee [[Design|the design]] and [[nowhere]].", |k| {
            (k == "design").then(|| "design".to_string())
        });
        assert!(out.contains("<h1>Hi</h1>"), "{out}");
        assert!(out.contains(r#"href="/knowledge/entries/design""#), "{out}");
        assert!(out.contains(">the design</a>"), "{out}");
        assert!(out.contains(r#"class="wikilink broken""#), "{out}");
        assert!(out.contains(">nowhere</a>"), "{out}");
        // Code stays code.
        let out = html("`[[x]]`", |_| Some("x".into()));
        assert!(out.contains("<code>[[x]]</code>"), "{out}");
    }

    #[test]
    fn nothing_executable_gets_through() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[click](javascript:alert(1))",
            "[click](JaVaScRiPt:alert(1))",
            "![x](javascript:alert(1))",
            "<a href=\"javascript:alert(1)\">x</a>",
            "[[<script>alert(1)</script>]]",
            "[[x|<img src=x onerror=alert(1)>]]",
            "\u{E000}0\u{E001}<script>",
            "<iframe src=https://evil.example>",
        ] {
            let out = html(attack, |k| Some(k.replace(' ', "-")));
            // Text may mention anything (escaped); tags are what a browser runs.
            for tag in out
                .split('<')
                .skip(1)
                .map(|t| t.split('>').next().unwrap_or_default().to_lowercase())
            {
                let name = tag
                    .trim_start_matches('/')
                    .split_whitespace()
                    .next()
                    .unwrap_or_default();
                assert!(
                    ["p", "a", "code", "em", "strong", "img"].contains(&name),
                    "{attack} gave <{tag}> in {out}"
                );
                for bad in ["javascript:", "onerror", "src="] {
                    assert!(!tag.contains(bad), "{attack} gave <{tag}> in {out}");
                }
            }
        }
    }

    #[test]
    fn snippets_escape_all_but_the_marks() {
        assert_eq!(
            snippet_html("a <b> \u{E000}word\u{E001}"),
            "a &lt;b&gt; <mark>word</mark>"
        );
    }
}
