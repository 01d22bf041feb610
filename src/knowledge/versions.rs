//! Diffs between two versions of an entry: unified text and structured hunks.

use std::time::Duration;

use async_graphql::{Enum, SimpleObject};
use similar::{ChangeTag, TextDiff};

/// A diff's work is bounded: past this, it is coarser but still correct.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);
const CONTEXT_LINES: usize = 3;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(name = "KnowledgeDiffLineKind")]
pub enum LineKind {
    Context,
    Added,
    Removed,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "KnowledgeDiffLine")]
pub struct DiffLine {
    pub kind: LineKind,
    /// The line without its line break.
    pub text: String,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "KnowledgeDiffHunk")]
pub struct Hunk {
    /// 1-based first line in the older text (as in a unified diff header).
    pub old_start: i32,
    pub old_lines: i32,
    pub new_start: i32,
    pub new_lines: i32,
    pub lines: Vec<DiffLine>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "KnowledgeDiff")]
pub struct Diff {
    pub from: i32,
    pub to: i32,
    /// `diff -u` text with `v<from>` and `v<to>` as the file names.
    pub unified: String,
    pub hunks: Vec<Hunk>,
}

pub fn diff(from: i32, to: i32, old: &str, new: &str) -> Diff {
    let text = TextDiff::configure().timeout(DIFF_TIMEOUT).diff_lines(old, new);
    let unified = text
        .unified_diff()
        .context_radius(CONTEXT_LINES)
        .header(&format!("v{from}"), &format!("v{to}"))
        .to_string();
    let hunks = text
        .grouped_ops(CONTEXT_LINES)
        .iter()
        .map(|group| {
            let (first, last) = (&group[0], &group[group.len() - 1]);
            let old_range = first.old_range().start..last.old_range().end;
            let new_range = first.new_range().start..last.new_range().end;
            let lines = group
                .iter()
                .flat_map(|op| text.iter_changes(op))
                .map(|change| DiffLine {
                    kind: match change.tag() {
                        ChangeTag::Equal => LineKind::Context,
                        ChangeTag::Insert => LineKind::Added,
                        ChangeTag::Delete => LineKind::Removed,
                    },
                    text: change.value().trim_end_matches(['\n', '\r']).to_string(),
                })
                .collect();
            Hunk {
                old_start: old_range.start as i32 + 1,
                old_lines: old_range.len() as i32,
                new_start: new_range.start as i32 + 1,
                new_lines: new_range.len() as i32,
                lines,
            }
        })
        .collect();
    Diff {
        from,
        to,
        unified,
        hunks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_and_structured_agree() {
        let d = diff(1, 2, "a\nb\nc\n", "a\nB\nc\nd\n");
        assert!(d.unified.starts_with("--- v1\n+++ v2\n"), "{}", d.unified);
        assert!(d.unified.contains("-b\n+B\n"), "{}", d.unified);
        assert!(d.unified.contains("+d\n"), "{}", d.unified);
        assert_eq!(d.hunks.len(), 1);
        let h = &d.hunks[0];
        assert_eq!((h.old_start, h.old_lines, h.new_start, h.new_lines), (1, 3, 1, 4));
        let kinds: Vec<_> = h.lines.iter().map(|l| (l.kind, l.text.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (LineKind::Context, "a"),
                (LineKind::Removed, "b"),
                (LineKind::Added, "B"),
                (LineKind::Context, "c"),
                (LineKind::Added, "d"),
            ]
        );
        assert!(diff(1, 1, "same", "same").hunks.is_empty());
    }
}
