//! Pure helpers over embedding vectors: their bytes in a `bytea` column,
//! similarity, the k best of many, and reciprocal rank fusion of rankings.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::Hash;

/// The constant of reciprocal rank fusion (Cormack et al. 2009): a result
/// at rank r in one list scores 1 / (RRF_K + r).
pub const RRF_K: f64 = 60.0;

/// The vector as little-endian f32s, 4 bytes each.
pub fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector `encode` made, or None when the length is not a whole number
/// of f32s (a truncated or foreign value).
pub fn decode(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let floats = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    Some(floats.collect())
}

/// The dot product: the cosine similarity of two unit vectors. Vectors of
/// different lengths are compared over the shorter.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums let the compiler use SIMD lanes; one running
    // sum would have to be added in order.
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

/// The `k` candidates most similar to `query` (by `dot`), best first, with
/// their scores. Memory is O(k) whatever the number of candidates. A
/// candidate of another length than the query (another model's vector) or
/// whose score is NaN is skipped; among equal scores the earlier wins.
pub fn top_k<'a, Id>(query: &[f32], candidates: impl IntoIterator<Item = (Id, &'a [f32])>, k: usize) -> Vec<(Id, f32)> {
    if k == 0 {
        return Vec::new();
    }
    // A min-heap of the best so far: its top is the one to beat.
    let mut best: BinaryHeap<Reverse<Scored<Id>>> = BinaryHeap::with_capacity(k + 1);
    for (seq, (id, vector)) in candidates.into_iter().enumerate() {
        if vector.len() != query.len() {
            continue;
        }
        let score = dot(query, vector);
        if score.is_nan() {
            continue;
        }
        let candidate = Scored { score, seq, id };
        if best.len() < k {
            best.push(Reverse(candidate));
        } else if let Some(mut worst) = best.peek_mut()
            && candidate > worst.0
        {
            *worst = Reverse(candidate);
        }
    }
    // Ascending by Reverse is descending by score: best first.
    best.into_sorted_vec()
        .into_iter()
        .map(|Reverse(s)| (s.id, s.score))
        .collect()
}

/// Reciprocal rank fusion: each id scores the sum over `lists` of
/// 1 / (RRF_K + its rank there, from 1), counting its first place in a list
/// only. The `k` best, best first; equal scores keep the order in which the
/// ids were first seen (list by list).
pub fn rrf<Id: Clone + Eq + Hash>(lists: &[Vec<Id>], k: usize) -> Vec<(Id, f64)> {
    // id -> (score, first seen)
    let mut scores: HashMap<&Id, (f64, usize)> = HashMap::new();
    for list in lists {
        let mut counted: HashSet<&Id> = HashSet::with_capacity(list.len());
        for (rank, id) in list.iter().enumerate() {
            if !counted.insert(id) {
                continue;
            }
            let seen = scores.len();
            scores.entry(id).or_insert((0.0, seen)).0 += 1.0 / (RRF_K + (rank + 1) as f64);
        }
    }
    let mut fused: Vec<(&Id, (f64, usize))> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    fused.truncate(k);
    fused.into_iter().map(|(id, (score, _))| (id.clone(), score)).collect()
}

/// A candidate in `top_k`'s heap: better is a higher score, then earlier.
struct Scored<Id> {
    score: f32,
    seq: usize,
    id: Id,
}

impl<Id> Ord for Scored<Id> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then(other.seq.cmp(&self.seq))
    }
}

impl<Id> PartialOrd for Scored<Id> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<Id> PartialEq for Scored<Id> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<Id> Eq for Scored<Id> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_is_little_endian_f32() {
        assert_eq!(encode(&[1.0, -2.5]), [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
        assert_eq!(decode(&[0, 0, 0x80, 0x3f]), Some(vec![1.0]));
        assert_eq!(decode(&[]), Some(vec![]));
    }

    #[test]
    fn decode_refuses_a_length_that_is_not_whole_floats() {
        for len in [1, 2, 3, 5, 1535] {
            assert_eq!(decode(&vec![0u8; len]), None, "length {len}");
        }
    }

    #[test]
    fn dot_sums_every_element_whatever_the_length() {
        for n in [0, 1, 7, 8, 9, 16, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b = vec![2.0f32; n];
            let expected = (0..n).map(|i| 2.0 * i as f32).sum::<f32>();
            assert_eq!(dot(&a, &b), expected, "length {n}");
        }
    }

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let q = [1.0, 0.0];
        let vs = [[0.5, 0.0], [0.9, 0.0], [-1.0, 0.0], [0.9, 0.1], [0.7, 0.0]];
        let got = top_k(&q, vs.iter().enumerate().map(|(i, v)| (i, &v[..])), 3);
        // Equal scores (1 and 3): the earlier first.
        assert_eq!(got, vec![(1, 0.9), (3, 0.9), (4, 0.7)]);
        assert!(top_k(&q, vs.iter().enumerate().map(|(i, v)| (i, &v[..])), 0).is_empty());
        assert_eq!(top_k(&q, vs.iter().enumerate().map(|(i, v)| (i, &v[..])), 9).len(), 5);
    }

    #[test]
    fn top_k_skips_other_lengths_and_nan() {
        let q = [1.0, 0.0];
        let short = [5.0f32];
        let nan = [f32::NAN, 0.0];
        let fine = [0.1f32, 0.0];
        let got = top_k(&q, [("short", &short[..]), ("nan", &nan[..]), ("fine", &fine[..])], 3);
        assert_eq!(got, vec![("fine", 0.1)]);
    }

    #[test]
    fn rrf_adds_reciprocal_ranks_across_lists() {
        let text = vec!["a", "b", "c"];
        let semantic = vec!["c", "a", "d"];
        let got = rrf(&[text, semantic], 10);
        let ids: Vec<&str> = got.iter().map(|(id, _)| *id).collect();
        // a: 1/61 + 1/62; c: 1/63 + 1/61; b: 1/62; d: 1/63.
        assert_eq!(ids, ["a", "c", "b", "d"]);
        assert!((got[0].1 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
        assert!((got[3].1 - 1.0 / 63.0).abs() < 1e-12);
    }

    #[test]
    fn rrf_counts_a_repeat_once_and_bounds_the_answer() {
        let got = rrf(&[vec![1, 1, 2]], 10);
        assert_eq!(got, vec![(1, 1.0 / 61.0), (2, 1.0 / 63.0)]);
        assert_eq!(rrf(&[vec![1, 2, 3], vec![3, 2, 1]], 1).len(), 1);
        assert!(rrf::<u8>(&[], 5).is_empty());
        // Equal scores keep the order first seen.
        let tie = rrf(&[vec!["x"], vec!["y"]], 2);
        assert_eq!(tie.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ["x", "y"]);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips_every_bit(bits in proptest::collection::vec(any::<u32>(), 0..800)) {
            let v: Vec<f32> = bits.iter().map(|b| f32::from_bits(*b)).collect();
            let back = decode(&encode(&v)).expect("whole floats");
            prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), bits);
        }

        #[test]
        fn top_k_agrees_with_sorting_everything(
            scores in proptest::collection::vec(-1.0f32..1.0, 0..200),
            k in 0usize..50,
        ) {
            let vs: Vec<[f32; 1]> = scores.iter().map(|s| [*s]).collect();
            let got = top_k(&[1.0], vs.iter().enumerate().map(|(i, v)| (i, &v[..])), k);
            let mut all: Vec<(usize, f32)> = scores.iter().map(|s| dot(&[1.0], &[*s])).enumerate().collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            prop_assert_eq!(got, all);
        }
    }
}
