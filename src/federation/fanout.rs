//! Merging ordered pages from several instances into one page (pure).
//!
//! Every source (this instance, or a peer with everything behind it) returns
//! its rows in the global order, resuming after the same position (see
//! `graphql::pagination`); the merged page is the first N rows across them.

use std::cmp::Ordering;
use std::collections::VecDeque;

/// One source's page.
pub struct SourcePage<R> {
    /// Rows in the global order.
    pub rows: Vec<R>,
    pub has_next: bool,
}

/// Takes the first `first` rows across sources in the order `cmp` defines.
/// Returns them and whether more remain.
pub fn merge<R>(sources: Vec<SourcePage<R>>, first: usize, cmp: impl Fn(&R, &R) -> Ordering) -> (Vec<R>, bool) {
    let mut queues: Vec<(VecDeque<R>, bool)> = sources
        .into_iter()
        // A source that gave no rows is done, whatever it says: one that
        // claimed more without giving any would page its client forever.
        .map(|s| (VecDeque::from(s.rows), s.has_next))
        .filter(|(rows, _)| !rows.is_empty())
        .collect();
    let mut out = Vec::new();
    while out.len() < first {
        let mut best: Option<usize> = None;
        for (i, (rows, _)) in queues.iter().enumerate() {
            if let Some(row) = rows.front() {
                let better = match best {
                    None => true,
                    Some(b) => cmp(row, queues[b].0.front().expect("non-empty")) == Ordering::Less,
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let Some(i) = best else { break };
        out.push(queues[i].0.pop_front().expect("chosen source has a row"));
    }
    let more = queues.iter().any(|(rows, has_next)| !rows.is_empty() || *has_next);
    (out, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(rows: &[i32], has_next: bool) -> SourcePage<i32> {
        SourcePage {
            rows: rows.to_vec(),
            has_next,
        }
    }

    #[test]
    fn merges_in_order() {
        let pages = || vec![page(&[1, 4, 5], false), page(&[2, 3], false), page(&[], true)];
        let (rows, more) = merge(pages(), 4, |x, y| x.cmp(y));
        assert_eq!(rows, vec![1, 2, 3, 4]);
        assert!(more, "5 is left");
        let (rows, more) = merge(pages(), 5, |x, y| x.cmp(y));
        assert_eq!(rows, vec![1, 2, 3, 4, 5]);
        assert!(!more, "an empty source claiming more is done");
        let (rows, more) = merge(vec![page(&[7], true)], 1, |x, y| x.cmp(y));
        assert_eq!((rows, more), (vec![7], true));
    }
}
