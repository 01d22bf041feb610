//! Merging ordered pages from several instances into one page (pure).
//!
//! Each source (this instance, or a peer with everything behind it) returns
//! rows in the global order, each with the source's own cursor for resuming
//! after it. The merged cursor records, per source, the cursor of the last
//! row taken from it, and which sources are exhausted, so the next page
//! resumes every instance where it stopped.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The longest `after` a scoped list accepts: a cursor is copied into every
/// edge, so its size bounds the answer's.
pub const MAX_CURSOR_BYTES: usize = 32 * 1024;
/// The longest cursor one source (a peer) may give for a row.
pub const MAX_SOURCE_CURSOR_BYTES: usize = 4 * 1024;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MergedCursor {
    /// The ordering the cursor belongs to.
    pub o: String,
    /// Source instance id → that source's cursor after the last row taken: a
    /// string, or (for a peer that merged instances behind it) its merged
    /// cursor inline, so cursors grow with the number of instances, not the
    /// number of hops.
    pub s: BTreeMap<String, serde_json::Value>,
    /// Sources with nothing left.
    pub d: BTreeSet<String>,
}

impl MergedCursor {
    pub fn start(ordering: &str) -> Self {
        Self {
            o: ordering.to_string(),
            ..Self::default()
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "m.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("cursor serialises"))
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.strip_prefix("m.")?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Where to resume `source`, as the cursor string the source issued.
    pub fn position(&self, source: &str) -> Option<String> {
        match self.s.get(source)? {
            serde_json::Value::String(s) => Some(s.clone()),
            nested => serde_json::from_value::<Self>(nested.clone()).ok().map(|c| c.encode()),
        }
    }

    fn record(&mut self, source: &str, cursor: String) {
        let packed = match Self::parse(&cursor) {
            Some(nested) => serde_json::to_value(nested).expect("cursor serialises"),
            None => serde_json::Value::String(cursor),
        };
        self.s.insert(source.to_string(), packed);
    }

    /// Keeps only the sources `keep` names (those this request asks): a
    /// cursor never carries others along.
    pub fn keep_sources(&mut self, keep: impl Fn(&str) -> bool) {
        self.s.retain(|source, _| keep(source));
        self.d.retain(|source| keep(source));
    }

    pub fn decode(text: &str, ordering: &str) -> Result<Self, String> {
        if text.len() > MAX_CURSOR_BYTES {
            return Err(format!("after: a cursor is at most {MAX_CURSOR_BYTES} bytes"));
        }
        if !text.starts_with("m.") {
            return Err("after: not a cursor of a scoped (federated) list".into());
        }
        let c = Self::parse(text).ok_or("after: malformed cursor")?;
        if c.o != ordering {
            return Err(format!("after: cursor was issued for ordering {}, not {ordering}", c.o));
        }
        Ok(c)
    }
}

/// One source's page.
pub struct SourcePage<R> {
    pub source: String,
    /// Rows in order, each with the source's cursor for resuming after it.
    pub rows: Vec<(R, String)>,
    pub has_next: bool,
}

/// Takes the first `first` rows across sources in the order `cmp` defines.
/// Returns each taken row with the merged cursor after it, and whether more remain.
pub fn merge<R>(
    sources: Vec<SourcePage<R>>,
    first: usize,
    start: &MergedCursor,
    cmp: impl Fn(&R, &R) -> Ordering,
) -> (Vec<(R, MergedCursor)>, bool) {
    let mut state = start.clone();
    let mut queues: Vec<Queue<R>> = sources
        .into_iter()
        .map(|s| Queue {
            source: s.source,
            // A source that gave no rows is done, whatever it says: one that
            // claimed more without giving any would page its client forever.
            has_next: s.has_next && !s.rows.is_empty(),
            rows: s.rows.into(),
        })
        .collect();
    // A source that returned nothing and has nothing more is done now.
    for q in &queues {
        if q.exhausted() {
            state.d.insert(q.source.clone());
        }
    }
    let mut out = Vec::new();
    while out.len() < first {
        let mut best: Option<usize> = None;
        for (i, q) in queues.iter().enumerate() {
            if let Some((row, _)) = q.rows.front() {
                let better = match best {
                    None => true,
                    Some(b) => cmp(row, &queues[b].rows.front().expect("non-empty").0) == Ordering::Less,
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let Some(i) = best else { break };
        let q = &mut queues[i];
        let (row, cursor) = q.rows.pop_front().expect("chosen source has a row");
        state.record(&q.source, cursor);
        if q.exhausted() {
            state.d.insert(q.source.clone());
        }
        out.push((row, state.clone()));
    }
    let more = queues.iter().any(|q| !q.exhausted());
    (out, more)
}

struct Queue<R> {
    source: String,
    rows: std::collections::VecDeque<(R, String)>,
    has_next: bool,
}

impl<R> Queue<R> {
    fn exhausted(&self) -> bool {
        self.rows.is_empty() && !self.has_next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(source: &str, rows: &[i32], has_next: bool) -> SourcePage<i32> {
        SourcePage {
            source: source.into(),
            rows: rows.iter().map(|r| (*r, format!("{source}{r}"))).collect(),
            has_next,
        }
    }

    #[test]
    fn merges_in_order_and_records_positions() {
        let (rows, more) = merge(
            vec![
                page("a", &[1, 4, 5], true),
                page("b", &[2, 3], false),
                page("c", &[], false),
            ],
            4,
            &MergedCursor::start("X"),
            |x, y| x.cmp(y),
        );
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert!(more);
        let last = &rows.last().unwrap().1;
        assert_eq!(last.position("a").unwrap(), "a4");
        assert_eq!(last.position("b").unwrap(), "b3");
        // A source's own merged cursor is kept inline and given back intact.
        let nested = last.encode();
        let (outer, _) = merge(vec![page("x", &[9], false)], 1, &MergedCursor::start("X"), |x, y| {
            x.cmp(y)
        });
        let mut outer = outer[0].1.clone();
        outer.record("peer", nested.clone());
        assert!(outer.s["peer"].is_object());
        assert_eq!(outer.position("peer").unwrap(), nested);
        assert!(last.d.contains("b") && last.d.contains("c") && !last.d.contains("a"));
        let round = MergedCursor::decode(&last.encode(), "X").unwrap();
        assert_eq!(&round, last);
        assert!(MergedCursor::decode(&last.encode(), "Y").is_err());
    }
}
