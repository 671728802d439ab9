//! `leadsync synth people`: realistic people with known duplicates as CSV (one file, or two
//! systems with an overlap), and `leadsync synth score`: pairwise precision, recall and F1 of
//! predicted pairs (`leadsync dedupe` output) against the `true_person` column.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::exit;
use crate::identity::quality::{self, Quality};
use crate::identity::synth::{self, SynthOptions, Systems};

#[derive(Debug, Args)]
pub struct SynthArgs {
    #[command(subcommand)]
    pub what: SynthKind,
}

#[derive(Debug, Subcommand)]
pub enum SynthKind {
    /// Generate people with known duplicates and hard negatives as CSV; the true person is in
    /// the `true_person` column.
    People(PeopleArgs),
    /// Score predicted pairs (CSV id_a,id_b,score) against the truth files.
    Score(ScoreArgs),
}

#[derive(Debug, Args)]
pub struct PeopleArgs {
    /// Number of true people.
    #[arg(long, default_value_t = 10_000)]
    pub people: usize,
    /// Share of people (per system) with 1..=3 extra variant records.
    #[arg(long, default_value_t = 0.05, value_parser = parse_rate)]
    pub duplicate_rate: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Chance that any optional field is blank on a record.
    #[arg(long, default_value_t = 0.05, value_parser = parse_rate)]
    pub missing_rate: f64,
    /// Share of people made to look like someone else (namesakes, family, common names).
    #[arg(long, default_value_t = 0.08, value_parser = parse_rate)]
    pub hard_negative_rate: f64,
    /// Write here instead of stdout (system A's file with --split).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Write a second system's records to this file; people are split over both.
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// With --split: share of people present in both files.
    #[arg(long, default_value_t = 0.4, value_parser = parse_rate, requires = "split")]
    pub overlap: f64,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// CSV with `id` and `true_person` columns; repeat for two systems.
    #[arg(long, required = true)]
    pub truth: Vec<PathBuf>,
    /// Predicted pairs as CSV `id_a,id_b,score`; `-` reads stdin.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Count pairs scoring at least this; repeat for several thresholds (auto-link, review).
    #[arg(long = "min-score", default_values_t = [0.0])]
    pub min_score: Vec<f64>,
    /// Close the predicted pairs transitively first, as linking into one person does.
    #[arg(long)]
    pub transitive: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| "not a number".to_owned())?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err("must be between 0 and 1".to_owned()) }
}

pub fn run(args: SynthArgs) -> u8 {
    match args.what {
        SynthKind::People(a) => people(&a),
        SynthKind::Score(a) => score(&a),
    }
}

fn people(args: &PeopleArgs) -> u8 {
    let opts = SynthOptions {
        people: args.people,
        duplicate_rate: args.duplicate_rate,
        seed: args.seed,
        missing_rate: args.missing_rate,
        hard_negative_rate: args.hard_negative_rate,
        systems: match args.split {
            Some(_) => Systems::Two { overlap: args.overlap },
            None => Systems::One,
        },
        ..SynthOptions::default()
    };
    let out_a: Box<dyn Write> = match &args.output {
        Some(path) => match File::create(path) {
            Ok(f) => Box::new(BufWriter::new(f)),
            Err(e) => return io_failed(path, &e),
        },
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let records = synth::generate(&opts);
    let written = match &args.split {
        Some(path_b) => {
            let out_b = match File::create(path_b) {
                Ok(f) => BufWriter::new(f),
                Err(e) => return io_failed(path_b, &e),
            };
            synth::write_csv_split(records, out_a, out_b).map(|(a, b)| {
                eprintln!("leadsync: wrote {a} records to system A and {b} to system B");
            })
        }
        None => synth::write_csv(records, out_a).map(|n| {
            eprintln!("leadsync: wrote {n} records for {} people", opts.people);
        }),
    };
    match written {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("leadsync: writing csv failed: {e}");
            exit::IOERR
        }
    }
}

fn score(args: &ScoreArgs) -> u8 {
    let mut truth = Vec::new();
    for path in &args.truth {
        let read = File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| quality::read_truth_csv(BufReader::new(f)).map_err(|e| e.to_string()));
        match read {
            Ok(t) => truth.extend(t),
            Err(e) => {
                eprintln!("leadsync: reading {} failed: {e}", path.display());
                return exit::IOERR;
            }
        }
    }
    let pairs = if args.pairs == Path::new("-") {
        quality::read_pairs_csv(io::stdin().lock()).map_err(|e| e.to_string())
    } else {
        File::open(&args.pairs)
            .map_err(|e| e.to_string())
            .and_then(|f| quality::read_pairs_csv(BufReader::new(f)).map_err(|e| e.to_string()))
    };
    let pairs = match pairs {
        Ok(p) => p,
        Err(e) => {
            eprintln!("leadsync: reading {} failed: {e}", args.pairs.display());
            return exit::IOERR;
        }
    };
    let results: Vec<(f64, Quality)> = if args.transitive {
        args.min_score
            .iter()
            .map(|t| {
                let q =
                    quality::evaluate_transitive(truth.iter().cloned(), pairs.iter().cloned(), *t);
                (*t, q)
            })
            .collect()
    } else {
        let qs =
            quality::evaluate_thresholds(truth.into_iter(), pairs.into_iter(), &args.min_score);
        args.min_score.iter().copied().zip(qs).collect()
    };
    println!(
        "{:>9}  {:>9}  {:>9}  {:>9}  {:>10}  {:>10}  {:>10}  ({})",
        "min_score",
        "precision",
        "recall",
        "f1",
        "true_pairs",
        "predicted",
        "correct",
        if args.transitive { "transitive" } else { "pairs as listed" }
    );
    for (t, q) in results {
        println!(
            "{t:>9.3}  {:>9.4}  {:>9.4}  {:>9.4}  {:>10}  {:>10}  {:>10}",
            q.precision, q.recall, q.f1, q.true_pairs, q.predicted, q.correct
        );
    }
    exit::OK
}

fn io_failed(path: &Path, e: &io::Error) -> u8 {
    eprintln!("leadsync: cannot write {}: {e}", path.display());
    exit::IOERR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert_eq!(parse_rate("0.4"), Ok(0.4));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("abc").is_err());
    }

    #[test]
    fn people_split_into_two_files_then_scored() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        let args = PeopleArgs {
            people: 300,
            duplicate_rate: 0.1,
            seed: 5,
            missing_rate: 0.05,
            hard_negative_rate: 0.08,
            output: Some(a.clone()),
            split: Some(b.clone()),
            overlap: 0.5,
        };
        assert_eq!(people(&args), exit::OK);
        let truth_a = quality::read_truth_csv(File::open(&a).unwrap()).unwrap();
        let truth_b = quality::read_truth_csv(File::open(&b).unwrap()).unwrap();
        assert!(truth_a.iter().all(|(id, _)| id.starts_with('a')));
        assert!(truth_b.iter().all(|(id, _)| id.starts_with('b')));
        // People in both files link across them.
        let in_a: std::collections::HashSet<u64> = truth_a.iter().map(|(_, c)| *c).collect();
        assert!(truth_b.iter().filter(|(_, c)| in_a.contains(c)).count() > 100);

        let pairs = dir.path().join("pairs.csv");
        std::fs::write(&pairs, "id_a,id_b,score\na1,b1,0.9\n").unwrap();
        let score_args =
            ScoreArgs { truth: vec![a, b], pairs, min_score: vec![0.5, 0.95], transitive: false };
        assert_eq!(score(&score_args), exit::OK);
        let missing = ScoreArgs { truth: vec![dir.path().join("nope.csv")], ..score_args };
        assert_eq!(score(&missing), exit::IOERR);
    }
}
