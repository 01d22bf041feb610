//! Media types in `Accept` and `Content-Type` headers (RFC 9110 §12.5.1,
//! §8.3), parsed without I/O.

/// How much an `Accept` header wants `media` (a lowercase `type/subtype`):
/// the weight (0 to 1000, i.e. q times 1000) of the most specific range that
/// matches it, or 0 when none does. Ranges naming a charset other than UTF-8
/// do not match: Mosaic answers only in UTF-8.
pub fn weight(accept: &str, media: &str) -> Weight {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    let mut best: Option<(u8, u16)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let specificity = if name == media {
            2
        } else if name.strip_suffix("/*") == Some(kind) {
            1
        } else if name == "*/*" {
            0
        } else {
            continue;
        };
        let mut q = Some(1000);
        let mut utf8 = true;
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => q = parse_q(value),
                "charset" => utf8 = is_utf8(value),
                _ => {}
            }
        }
        // A malformed weight makes the range mean nothing rather than everything.
        let (Some(q), true) = (q, utf8) else { continue };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    match best {
        Some((specificity, q)) => Weight {
            q,
            named: specificity == 2,
        },
        None => Weight { q: 0, named: false },
    }
}

/// What an `Accept` header says of one media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight {
    /// q times 1000; 0 is "not acceptable".
    pub q: u16,
    /// Whether a range names the type itself (not `type/*` or `*/*`).
    pub named: bool,
}

impl Weight {
    pub fn acceptable(self) -> bool {
        self.q > 0
    }
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn parse_q(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn is_utf8(charset: &str) -> bool {
    charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
}

/// Whether a `Content-Type` is `media` (lowercase `type/subtype`) in UTF-8:
/// no charset parameter (UTF-8 is then assumed) or `charset=utf-8`.
pub fn is_content_type(content_type: &str, media: &str) -> bool {
    let mut parts = content_type.split(';');
    if !parts.next().unwrap_or("").trim().eq_ignore_ascii_case(media) {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((key, value)) if key.trim().eq_ignore_ascii_case("charset") => is_utf8(value.trim().trim_matches('"')),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";

    fn q(accept: &str, media: &str) -> u16 {
        weight(accept, media).q
    }

    #[test]
    fn the_most_specific_matching_range_gives_the_weight() {
        assert_eq!(q("application/json", JSON), 1000);
        assert_eq!(q("Application/JSON", JSON), 1000);
        assert_eq!(q("text/html", JSON), 0);
        assert_eq!(q("*/*;q=0.3", JSON), 300);
        assert_eq!(q("application/*;q=0.4, */*;q=0.1", JSON), 400);
        assert_eq!(
            q("*/*, application/json;q=0", JSON),
            0,
            "named refusal beats the wildcard"
        );
        assert_eq!(q("application/json;q=0.9, */*", JSON), 900);
        assert_eq!(q("text/html, application/xhtml+xml, */*;q=0.8", JSON), 800);
        assert!(weight("application/json", JSON).named);
        assert!(!weight("*/*", JSON).named);
    }

    #[test]
    fn charsets_other_than_utf8_and_malformed_weights_match_nothing() {
        assert_eq!(q("application/json; charset=utf-8", JSON), 1000);
        assert_eq!(q("application/json; charset=\"UTF-8\"", JSON), 1000);
        assert_eq!(q("application/json; charset=latin1", JSON), 0);
        assert_eq!(q("application/json; charset=latin1, */*;q=0.2", JSON), 200);
        for bad in ["2", "0.1234", "-1", "x", "1.5", ""] {
            assert_eq!(q(&format!("application/json;q={bad}"), JSON), 0, "q={bad}");
        }
        assert_eq!(q("application/json;q=1.000", JSON), 1000);
        assert_eq!(q("application/json;q=0.05", JSON), 50);
        assert_eq!(q("", JSON), 0);
        assert_eq!(q(",,;", JSON), 0);
    }

    #[test]
    fn content_types_are_matched_with_their_charset() {
        assert!(is_content_type("application/json", JSON));
        assert!(is_content_type("Application/Json ; charset=UTF-8", JSON));
        assert!(is_content_type("application/json; boundary=x", JSON));
        assert!(!is_content_type("application/json; charset=utf-16", JSON));
        assert!(!is_content_type("application/jsonx", JSON));
        assert!(!is_content_type("text/plain", JSON));
        assert!(!is_content_type("application/x-www-form-urlencoded", JSON));
        assert!(!is_content_type("", JSON));
    }
}
