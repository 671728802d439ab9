//! Pairwise matching quality: precision, recall and F1 of predicted pairs against the true
//! clusters from [`super::synth`].
//!
//! Two views are offered:
//! - [`evaluate`] scores the predicted pairs as listed: a pair is one unordered pair of ids,
//!   counted once however often and in whichever order it is listed (at its highest score).
//! - [`evaluate_transitive`] first closes the predicted pairs transitively (a–b and b–c make
//!   a–c too), which is what linking into one ledger person does, then scores every pair
//!   inside each predicted group.
//!
//! True pairs are all unordered pairs inside a true cluster, counted as n(n-1)/2 without being
//! materialised. Ids in the predictions that the truth does not know count as predicted and
//! wrong.
//!
//! Conventions for empty sets: with nothing predicted precision is 1 (no false links were
//! made); with no true pairs recall is 1; F1 is 0 when precision and recall are both 0.

use std::collections::HashMap;
use std::io::Read;

/// Pairwise quality of one set of predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Unordered pairs of ids in the same true cluster.
    pub true_pairs: u64,
    /// Distinct unordered predicted pairs at or above the threshold.
    pub predicted: u64,
    /// Predicted pairs that are true pairs.
    pub correct: u64,
}

impl Quality {
    /// Quality from the three counts, with the conventions in the module doc.
    pub fn from_counts(true_pairs: u64, predicted: u64, correct: u64) -> Quality {
        let precision = if predicted == 0 { 1.0 } else { correct as f64 / predicted as f64 };
        let recall = if true_pairs == 0 { 1.0 } else { correct as f64 / true_pairs as f64 };
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Quality { precision, recall, f1, true_pairs, predicted, correct }
    }
}

/// Errors reading truth or pairs from CSV. Messages name columns and line numbers, never
/// cell values (they may be emails).
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    #[error("missing column {0}")]
    MissingColumn(&'static str),
    #[error("line {line}: column {column} is not a number")]
    BadNumber { line: u64, column: &'static str },
}

/// Interned ids with their true cluster (None for ids only the predictions mention).
struct Ids {
    index: HashMap<String, u32>,
    cluster: Vec<Option<u64>>,
    true_pairs: u64,
}

impl Ids {
    fn from_truth(truth: impl Iterator<Item = (String, u64)>) -> Ids {
        let mut index = HashMap::new();
        let mut cluster = Vec::new();
        for (id, c) in truth {
            // A repeated id keeps its first cluster; truth files have unique ids.
            index.entry(id).or_insert_with(|| {
                cluster.push(Some(c));
                (cluster.len() - 1) as u32
            });
        }
        let mut sizes: HashMap<u64, u64> = HashMap::new();
        for c in cluster.iter().flatten() {
            *sizes.entry(*c).or_default() += 1;
        }
        let true_pairs = sizes.values().map(|n| n * (n - 1) / 2).sum();
        Ids { index, cluster, true_pairs }
    }

    fn intern(&mut self, id: String) -> u32 {
        let cluster = &mut self.cluster;
        *self.index.entry(id).or_insert_with(|| {
            cluster.push(None);
            (cluster.len() - 1) as u32
        })
    }

    fn same_cluster(&self, a: u32, b: u32) -> bool {
        match (self.cluster[a as usize], self.cluster[b as usize]) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }

    /// Distinct unordered pairs (self-pairs dropped) with their highest score.
    fn pairs(
        &mut self,
        predicted: impl Iterator<Item = (String, String, f64)>,
    ) -> HashMap<(u32, u32), f64> {
        let mut best: HashMap<(u32, u32), f64> = HashMap::new();
        for (a, b, score) in predicted {
            if score.is_nan() {
                continue;
            }
            let (a, b) = (self.intern(a), self.intern(b));
            if a == b {
                continue;
            }
            let key = (a.min(b), a.max(b));
            best.entry(key).and_modify(|s| *s = s.max(score)).or_insert(score);
        }
        best
    }
}

/// Pairwise quality of the predicted pairs scoring at least `min_score`, as listed (no
/// transitive closure).
pub fn evaluate(
    truth: impl Iterator<Item = (String, u64)>,
    predicted: impl Iterator<Item = (String, String, f64)>,
    min_score: f64,
) -> Quality {
    evaluate_thresholds(truth, predicted, &[min_score])
        .pop()
        .unwrap_or_else(|| Quality::from_counts(0, 0, 0))
}

/// [`evaluate`] at several thresholds in one pass over the predictions (for example the
/// auto-link threshold and the review threshold). One [`Quality`] per threshold, in order.
pub fn evaluate_thresholds(
    truth: impl Iterator<Item = (String, u64)>,
    predicted: impl Iterator<Item = (String, String, f64)>,
    thresholds: &[f64],
) -> Vec<Quality> {
    let mut ids = Ids::from_truth(truth);
    let pairs = ids.pairs(predicted);
    thresholds
        .iter()
        .map(|t| {
            let (mut predicted, mut correct) = (0u64, 0u64);
            for (&(a, b), &score) in &pairs {
                if score >= *t {
                    predicted += 1;
                    if ids.same_cluster(a, b) {
                        correct += 1;
                    }
                }
            }
            Quality::from_counts(ids.true_pairs, predicted, correct)
        })
        .collect()
}

/// Pairwise quality after closing the predicted pairs at or above `min_score` transitively:
/// every pair of ids in one predicted group counts as predicted.
pub fn evaluate_transitive(
    truth: impl Iterator<Item = (String, u64)>,
    predicted: impl Iterator<Item = (String, String, f64)>,
    min_score: f64,
) -> Quality {
    let mut ids = Ids::from_truth(truth);
    let pairs = ids.pairs(predicted);
    let mut parent: Vec<u32> = (0..ids.cluster.len() as u32).collect();
    for (&(a, b), &score) in &pairs {
        if score >= min_score {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                parent[ra.max(rb) as usize] = ra.min(rb);
            }
        }
    }
    let mut group_sizes: HashMap<u32, u64> = HashMap::new();
    let mut overlap: HashMap<(u32, u64), u64> = HashMap::new();
    for i in 0..parent.len() as u32 {
        let root = find(&mut parent, i);
        *group_sizes.entry(root).or_default() += 1;
        if let Some(c) = ids.cluster[i as usize] {
            *overlap.entry((root, c)).or_default() += 1;
        }
    }
    let predicted = group_sizes.values().map(|n| n * (n - 1) / 2).sum();
    let correct = overlap.values().map(|n| n * (n - 1) / 2).sum();
    Quality::from_counts(ids.true_pairs, predicted, correct)
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        // Path halving keeps the trees shallow without recursion.
        parent[x as usize] = parent[parent[x as usize] as usize];
        x = parent[x as usize];
    }
    x
}

/// `(id, true_person)` from a CSV with a header naming the columns `id` and `true_person`
/// (what `leadsync synth people` writes).
///
/// # Errors
/// Unreadable CSV, a missing column, or a `true_person` that is not an unsigned integer.
pub fn read_truth_csv(r: impl Read) -> Result<Vec<(String, u64)>, QualityError> {
    let mut reader = csv::Reader::from_reader(r);
    let headers = reader.headers()?.clone();
    let id = column(&headers, "id")?;
    let truth = column(&headers, "true_person")?;
    let mut out = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let row = row?;
        let cluster = row
            .get(truth)
            .and_then(|v| v.trim().parse().ok())
            .ok_or(QualityError::BadNumber { line: n as u64 + 2, column: "true_person" })?;
        out.push((row.get(id).unwrap_or("").to_owned(), cluster));
    }
    Ok(out)
}

/// `(id_a, id_b, score)` from a CSV with the header `id_a,id_b,score` (what `leadsync dedupe`
/// writes).
///
/// # Errors
/// Unreadable CSV, a missing column, or a score that is not a number.
pub fn read_pairs_csv(r: impl Read) -> Result<Vec<(String, String, f64)>, QualityError> {
    let mut reader = csv::Reader::from_reader(r);
    let headers = reader.headers()?.clone();
    let (a, b, s) =
        (column(&headers, "id_a")?, column(&headers, "id_b")?, column(&headers, "score")?);
    let mut out = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let row = row?;
        let score = row
            .get(s)
            .and_then(|v| v.trim().parse().ok())
            .ok_or(QualityError::BadNumber { line: n as u64 + 2, column: "score" })?;
        out.push((row.get(a).unwrap_or("").to_owned(), row.get(b).unwrap_or("").to_owned(), score));
    }
    Ok(out)
}

fn column(headers: &csv::StringRecord, name: &'static str) -> Result<usize, QualityError> {
    headers
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(name))
        .ok_or(QualityError::MissingColumn(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clusters: 1 = {a, b, c} (3 pairs), 2 = {d, e} (1 pair), 3 = {f}: 4 true pairs.
    fn truth() -> impl Iterator<Item = (String, u64)> {
        [("a", 1), ("b", 1), ("c", 1), ("d", 2), ("e", 2), ("f", 3)]
            .into_iter()
            .map(|(i, c)| (i.to_owned(), c))
    }

    fn pairs(p: &[(&str, &str, f64)]) -> impl Iterator<Item = (String, String, f64)> {
        p.iter()
            .map(|(a, b, s)| ((*a).to_owned(), (*b).to_owned(), *s))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn perfect_predictions_score_one() {
        let q = evaluate(
            truth(),
            pairs(&[("a", "b", 1.0), ("a", "c", 1.0), ("b", "c", 1.0), ("d", "e", 1.0)]),
            0.5,
        );
        assert_eq!(
            q,
            Quality {
                precision: 1.0,
                recall: 1.0,
                f1: 1.0,
                true_pairs: 4,
                predicted: 4,
                correct: 4
            }
        );
    }

    #[test]
    fn half_right_half_found() {
        // a-b right, d-e right, a-d wrong, c-f wrong: precision 2/4; recall 2/4.
        let q = evaluate(
            truth(),
            pairs(&[("a", "b", 0.9), ("d", "e", 0.9), ("a", "d", 0.9), ("c", "f", 0.9)]),
            0.5,
        );
        assert_eq!((q.true_pairs, q.predicted, q.correct), (4, 4, 2));
        assert!(close(q.precision, 0.5) && close(q.recall, 0.5) && close(q.f1, 0.5));
    }

    #[test]
    fn nothing_predicted() {
        let q = evaluate(truth(), pairs(&[]), 0.5);
        assert_eq!((q.true_pairs, q.predicted, q.correct), (4, 0, 0));
        assert!(close(q.precision, 1.0) && close(q.recall, 0.0) && close(q.f1, 0.0));
        let empty = evaluate(std::iter::empty(), pairs(&[]), 0.5);
        assert_eq!(empty, Quality::from_counts(0, 0, 0));
        assert!(close(empty.f1, 1.0));
    }

    #[test]
    fn repeated_and_reversed_pairs_count_once_and_self_pairs_not_at_all() {
        let q = evaluate(
            truth(),
            pairs(&[
                ("a", "b", 0.9),
                ("b", "a", 0.8),
                ("a", "b", 0.95),
                ("a", "a", 1.0),
                ("d", "e", 0.7),
            ]),
            0.5,
        );
        assert_eq!((q.predicted, q.correct), (2, 2));
        assert!(close(q.recall, 0.5) && close(q.precision, 1.0));
        assert!(close(q.f1, 2.0 * 0.5 / 1.5));
    }

    #[test]
    fn threshold_filters_and_uses_the_best_score_of_a_pair() {
        // b-a listed at 0.4 and 0.8: its best score 0.8 passes 0.7; d-e at 0.6 does not.
        let p = [("a", "b", 0.4), ("b", "a", 0.8), ("d", "e", 0.6), ("a", "f", 0.65)];
        let q = evaluate(truth(), pairs(&p), 0.7);
        assert_eq!((q.predicted, q.correct), (1, 1));
        let qs = evaluate_thresholds(truth(), pairs(&p), &[0.7, 0.5]);
        assert_eq!(qs[0], q);
        // At 0.5: a-b, d-e right; a-f wrong.
        assert_eq!((qs[1].predicted, qs[1].correct), (3, 2));
    }

    #[test]
    fn unknown_ids_count_as_wrong() {
        let q = evaluate(truth(), pairs(&[("a", "zz", 1.0), ("a", "b", 1.0)]), 0.5);
        assert_eq!((q.predicted, q.correct), (2, 1));
    }

    #[test]
    fn large_cluster_pairs_are_counted_not_listed() {
        let truth = (0..2000u32).map(|i| (i.to_string(), 7u64));
        let q = evaluate(truth, pairs(&[("0", "1", 1.0)]), 0.5);
        assert_eq!(q.true_pairs, 2000 * 1999 / 2);
        assert_eq!(q.correct, 1);
    }

    #[test]
    fn transitive_closure_adds_implied_pairs() {
        // a-b and b-c imply a-c: 3 predicted, all right. c-d joins d into the group:
        // group {a,b,c,d} has 6 pairs, 3 right.
        let q = evaluate_transitive(truth(), pairs(&[("a", "b", 1.0), ("c", "b", 1.0)]), 0.5);
        assert_eq!((q.predicted, q.correct), (3, 3));
        let q = evaluate_transitive(
            truth(),
            pairs(&[("a", "b", 1.0), ("c", "b", 1.0), ("c", "d", 1.0), ("e", "f", 0.1)]),
            0.5,
        );
        assert_eq!((q.true_pairs, q.predicted, q.correct), (4, 6, 3));
        // Listed: 3 pairs, 2 right.
        let q = evaluate(truth(), pairs(&[("a", "b", 1.0), ("c", "b", 1.0), ("c", "d", 1.0)]), 0.5);
        assert_eq!((q.predicted, q.correct), (3, 2));
    }

    #[test]
    fn csv_readers_find_columns_by_name() {
        let truth_csv = "id,email,true_person\nr1,x@y.example,5\nr2,,5\n";
        let t = read_truth_csv(truth_csv.as_bytes()).unwrap();
        assert_eq!(t, vec![("r1".to_owned(), 5), ("r2".to_owned(), 5)]);
        let pairs_csv = "id_a,id_b,score\nr1,r2,0.93\n";
        let p = read_pairs_csv(pairs_csv.as_bytes()).unwrap();
        assert_eq!(p, vec![("r1".to_owned(), "r2".to_owned(), 0.93)]);
        let q = evaluate(t.into_iter(), p.into_iter(), 0.9);
        assert_eq!((q.true_pairs, q.correct), (1, 1));
    }

    #[test]
    fn csv_errors_name_the_column_not_the_value() {
        let err = read_truth_csv("id,cluster\nr1,1\n".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "missing column true_person");
        let err =
            read_pairs_csv("id_a,id_b,score\nr1,r2,secret@x.example\n".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "line 2: column score is not a number");
    }
}
