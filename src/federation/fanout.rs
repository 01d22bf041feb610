//! Merging ordered pages from several instances into one page (pure).
//!
//! Every source (this instance, or a peer with everything behind it) returns
//! its rows in the global order, resuming after the same position (see
//! `graphql::pagination`); the merged page is the first N rows across them.
//!
//! A source is first asked for its share of the page, not the whole page:
//! with ten peers, asking each for all N rows would make the master read
//! ten pages to keep one. A source that may hold more of the page than it
//! gave (`shortfall`) is asked once more, from its last row, for at most
//! what the page can still take from it.

use std::cmp::Ordering;
use std::collections::VecDeque;

/// One source's page.
pub struct SourcePage<R> {
    /// Rows in the global order.
    pub rows: Vec<R>,
    pub has_next: bool,
}

/// Below this, a share saves too little to risk asking twice.
const MIN_SHARE: usize = 10;

/// How many rows each of `sources` is first asked for, for a page of
/// `first`: twice the even share, so sources whose rows interleave fill the
/// page at once, and all of it when one or two sources share it.
pub fn share(first: usize, sources: usize) -> usize {
    first.min((2 * first).div_ceil(sources.max(1)).max(MIN_SHARE))
}

/// The sources, each asked for `asked` rows, whose unseen rows may still
/// belong among the first `first`, each with the most rows it can still
/// add. A source's unseen rows all follow its last row: it is settled when
/// it has no more, or when `first` rows it gave or others gave come no
/// later than its last. One that gave fewer rows than asked while claiming
/// more caps its pages (a grant's `maxRowsPerQuery`): asking again would
/// pass the cap, so its page stands as it is.
pub fn shortfall<'a, R: 'a>(
    sources: impl IntoIterator<Item = &'a SourcePage<R>>,
    asked: usize,
    first: usize,
    cmp: impl Fn(&R, &R) -> Ordering,
) -> Vec<(usize, usize)> {
    let sources: Vec<&SourcePage<R>> = sources.into_iter().collect();
    let mut all: Vec<&R> = sources.iter().flat_map(|s| &s.rows).collect();
    all.sort_by(|a, b| cmp(a, b));
    all.truncate(first);
    sources
        .iter()
        .enumerate()
        .filter(|(_, s)| s.has_next && s.rows.len() >= asked)
        .filter_map(|(i, s)| {
            let last = s.rows.last()?;
            // `all` is sorted: the rows up to `last` are a prefix of it.
            let before = all.partition_point(|r| cmp(r, last) != Ordering::Greater);
            (before < first).then(|| (i, first - before))
        })
        .collect()
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

    #[test]
    fn shares_shrink_with_sources_but_not_below_the_minimum() {
        assert_eq!(share(50, 1), 50);
        assert_eq!(share(50, 2), 50, "two sources: each may hold the whole page");
        assert_eq!(share(50, 4), 25);
        assert_eq!(share(50, 11), 10);
        assert_eq!(share(100, 11), 19);
        assert_eq!(share(50, 40), MIN_SHARE);
        assert_eq!(share(5, 40), 5, "never more than the page");
        assert_eq!(share(0, 3), 0);
    }

    #[test]
    fn only_sources_that_may_hold_more_of_the_page_are_asked_again() {
        let cmp = |x: &i32, y: &i32| x.cmp(y);
        // Page of 4 from 1, 2, 3, 4: the first source's unseen rows follow
        // its 3 and may come before 4 (one of them may enter); the second's
        // follow its 5, past the page.
        let sources = [page(&[1, 3], true), page(&[2, 5], true), page(&[4], false)];
        assert_eq!(shortfall(&sources, 2, 4, cmp), vec![(0, 1)]);
        assert!(
            shortfall(&sources, 3, 4, cmp).is_empty(),
            "a source that gave fewer than asked caps its pages"
        );
        // Each source's last row at or past the page's last: nobody is asked.
        let settled = [page(&[1, 2, 4, 6], true), page(&[3, 5], true)];
        assert!(shortfall(&settled, 2, 4, cmp).is_empty());
        // Too few rows in all for the page: every source with more is asked,
        // for what the page still lacks up to its last row.
        let short = [page(&[1, 2], true), page(&[3], false), page(&[], true)];
        assert_eq!(shortfall(&short, 1, 5, cmp), vec![(0, 3)]);
        assert!(shortfall(&short, 1, 0, cmp).is_empty(), "an empty page needs nothing");
    }

    #[test]
    fn a_second_round_fills_the_page_exactly() {
        // Whatever the sources hold, the first round plus the asked rows
        // merge into the same page as asking every source for all of it.
        let held: [Vec<i32>; 3] = [(0..40).collect(), (100..140).collect(), vec![3, 5, 150]];
        let cmp = |x: &i32, y: &i32| x.cmp(y);
        for first in [1, 5, 20, 50, 90] {
            let k = share(first, held.len());
            let mut pages: Vec<SourcePage<i32>> =
                held.iter().map(|h| page(&h[..k.min(h.len())], h.len() > k)).collect();
            for (i, more) in shortfall(&pages, k, first, cmp) {
                let from = pages[i].rows.len();
                let end = (from + more).min(held[i].len());
                pages[i].rows.extend_from_slice(&held[i][from..end]);
                pages[i].has_next = end < held[i].len();
            }
            let whole: Vec<SourcePage<i32>> = held.iter().map(|h| page(h, false)).collect();
            assert_eq!(merge(pages, first, cmp).0, merge(whole, first, cmp).0, "first {first}");
        }
    }
}
