//! `leadsync dedupe FILE.csv [FILE2.csv]`: the matching engine on CSV exports.
//!
//! With one file it finds duplicates inside it; with two it pairs records across them and also
//! finds duplicates inside each. Candidate pairs go out as CSV `id_a,id_b,score`. Rows are
//! parsed as a stream and only compact profiles and ids are kept, so a million rows fit in a
//! few hundred MB. Errors name the file and line, never a cell's value.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::exit;
use crate::identity::matcher::{
    BlockStats, KEY_KINDS, Matcher, MatchingRaw, Pair, Parts, Profile, Verdict,
};

#[derive(Debug, Args)]
pub struct DedupeArgs {
    /// CSV export to search for duplicates (a header row names the columns; `id` is required).
    pub file: PathBuf,
    /// A second export: pairs across the two files, plus duplicates inside each.
    pub file2: Option<PathBuf>,
    /// Write the pairs here instead of to stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// A leadsync configuration file whose `[matching]` section to use (built-in rules
    /// otherwise; the rest of the file is not read).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(args: &DedupeArgs) -> u8 {
    let matcher = match &args.config {
        None => Matcher::default(),
        Some(path) => match load_matcher(path) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("leadsync: invalid configuration: {e:#}");
                return exit::CONFIG;
            }
        },
    };
    let show_progress = std::io::stderr().is_terminal();
    let result = match &args.output {
        Some(path) => std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))
            .and_then(|f| dedupe(args, &matcher, std::io::BufWriter::new(f), show_progress)),
        None => dedupe(args, &matcher, std::io::stdout().lock(), show_progress),
    };
    match result {
        Ok(summary) => {
            eprintln!("{summary}");
            exit::OK
        }
        Err(e) => {
            eprintln!("leadsync: dedupe failed: {e:#}");
            exit::FAILURE
        }
    }
}

/// The matcher from a config file's `[matching]` section (built-in rules when it has none).
fn load_matcher(path: &Path) -> anyhow::Result<Matcher> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    matcher_from_toml(&text)
}

fn matcher_from_toml(text: &str) -> anyhow::Result<Matcher> {
    let cfg = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .context("cannot parse configuration")?;
    let raw: MatchingRaw = match cfg.get::<MatchingRaw>("matching") {
        Ok(raw) => raw,
        Err(config::ConfigError::NotFound(_)) => MatchingRaw::default(),
        Err(e) => bail!("matching: {e}"),
    };
    Ok(Matcher::from_raw(&raw, "matching")?)
}

/// What one run did, printed as one line on stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rows: u64,
    pub pairs: u64,
    pub auto_link: u64,
    pub review: u64,
    pub oversized_blocks: u64,
    /// Whether oversized blocks were compared in windows rather than skipped.
    pub windowed: bool,
    pub comparisons: u64,
    pub elapsed_secs: f64,
    /// Reading the files and building profiles (normalisation, phone parsing).
    pub read_secs: f64,
    pub peak_rss_mib: Option<u64>,
    /// Blocking details (block sizes and comparisons per key kind).
    pub blocking: BlockStats,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dedupe: {} rows, {} pairs ({} auto-link, {} review), {} comparisons, \
             {} oversized blocks {}, {:.1} s",
            self.rows,
            self.pairs,
            self.auto_link,
            self.review,
            self.comparisons,
            self.oversized_blocks,
            if self.windowed { "windowed" } else { "skipped" },
            self.elapsed_secs
        )?;
        if let Some(rss) = self.peak_rss_mib {
            write!(f, ", peak RSS {rss} MiB")?;
        }
        let b = &self.blocking;
        write!(
            f,
            "\ndedupe: reading and profiling {:.1} s, blocking and scoring {:.1} s; \
             {} pairs met in blocks, largest block {} rows, {} comparisons in oversized \
             blocks' windows; per key kind (comparisons/largest block/oversized):",
            self.read_secs,
            self.elapsed_secs - self.read_secs,
            b.pairs_in_blocks,
            b.largest_block,
            b.window_comparisons
        )?;
        for (kind, k) in KEY_KINDS.chars().zip(b.by_kind) {
            write!(f, " {kind}: {}/{}/{}", k.comparisons, k.largest_block, k.oversized_blocks)?;
        }
        Ok(())
    }
}

/// Which column holds what, from the header row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Columns {
    id: usize,
    email: Option<usize>,
    first_name: Option<usize>,
    last_name: Option<usize>,
    company: Option<usize>,
    phone: Option<usize>,
    street: Option<usize>,
    city: Option<usize>,
    postcode: Option<usize>,
}

/// Recognise header names case-insensitively, ignoring spaces, `_`, `-` and `.`.
fn columns(headers: &csv::StringRecord) -> Result<Columns, String> {
    let mut id = None;
    let mut c = Columns::default();
    for (i, h) in headers.iter().enumerate() {
        let key: String = h
            .trim_start_matches('\u{feff}')
            .chars()
            .filter(|ch| !matches!(ch, ' ' | '_' | '-' | '.'))
            .flat_map(char::to_lowercase)
            .collect();
        let slot = match key.as_str() {
            "id" | "recordid" => &mut id,
            "email" | "emailaddress" | "mail" => &mut c.email,
            "firstname" | "first" | "givenname" | "forename" => &mut c.first_name,
            "lastname" | "last" | "surname" | "familyname" => &mut c.last_name,
            "company" | "companyname" | "account" | "accountname" | "organization"
            | "organisation" => &mut c.company,
            "phone" | "phonenumber" | "mobile" | "mobilephone" | "telephone" | "tel" => {
                &mut c.phone
            }
            "street" | "streetaddress" | "address" | "address1" | "addressline1" => &mut c.street,
            "city" | "town" => &mut c.city,
            "postcode" | "zip" | "zipcode" | "postalcode" => &mut c.postcode,
            _ => continue,
        };
        // The first column of a kind wins: exports often repeat e.g. a second phone.
        slot.get_or_insert(i);
    }
    c.id = id.ok_or_else(|| {
        "no id column: the header row must name one column `id` (or `record id`)".to_string()
    })?;
    Ok(c)
}

/// One file's ids and profiles, row for row.
struct Table {
    ids: Vec<Box<str>>,
    profiles: Vec<Profile>,
}

fn read_table(path: &Path, matcher: &Matcher, bar: &ProgressBar) -> anyhow::Result<Table> {
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    bar.set_length(size);
    bar.set_position(0);
    bar.set_message(format!("reading {name}"));
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(file);
    let headers = reader.headers().with_context(|| format!("{name}: cannot read header row"))?;
    let cols = columns(headers).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let mut table = Table { ids: Vec::new(), profiles: Vec::new() };
    // Rows are read in chunks, and each chunk's profiles are built on a few threads: phone
    // parsing dominates the run and is independent per row.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(4);
    let mut chunk: Vec<csv::StringRecord> = Vec::with_capacity(CHUNK);
    loop {
        chunk.clear();
        while chunk.len() < CHUNK {
            let mut record = csv::StringRecord::new();
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    // csv's messages name field counts and byte offsets, not cell values.
                    bail!("{name}: line {line}: bad CSV row: {e}");
                }
            }
            let line = record.position().map_or(0, csv::Position::line);
            match record.get(cols.id).map(str::trim).filter(|v| !v.is_empty()) {
                Some(id) => table.ids.push(id.into()),
                None => bail!("{name}: line {line}: empty id"),
            }
            chunk.push(record);
        }
        if chunk.is_empty() {
            break;
        }
        let per = chunk.len().div_ceil(threads);
        let built: Vec<Vec<Profile>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .chunks(per)
                .map(|rows| {
                    let cols = &cols;
                    scope.spawn(move || {
                        rows.iter().map(|r| profile_of_row(matcher, cols, r)).collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        table.profiles.extend(built.into_iter().flatten());
        if let Some(pos) = chunk.last().and_then(csv::StringRecord::position) {
            bar.set_position(pos.byte());
        }
    }
    bar.set_position(size);
    table.ids.shrink_to_fit();
    table.profiles.shrink_to_fit();
    Ok(table)
}

/// Rows per parallel profiling step.
const CHUNK: usize = 16_384;

fn profile_of_row(matcher: &Matcher, cols: &Columns, record: &csv::StringRecord) -> Profile {
    let get = |i: Option<usize>| i.and_then(|i| record.get(i)).filter(|v| !v.trim().is_empty());
    matcher.profile(&Parts {
        email: get(cols.email),
        first_name: get(cols.first_name),
        last_name: get(cols.last_name),
        company: get(cols.company),
        phone: get(cols.phone),
        street: get(cols.street),
        city: get(cols.city),
        postcode: get(cols.postcode),
    })
}

/// Read the files named in `args`, match, and write `id_a,id_b,score` rows to `out`.
///
/// # Errors
/// Unreadable files, bad CSV rows (naming the line), a missing id column, or write errors.
pub fn dedupe(
    args: &DedupeArgs,
    matcher: &Matcher,
    out: impl Write,
    show_progress: bool,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let bar = if show_progress {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {percent}% ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let a = read_table(&args.file, matcher, &bar)?;
    let b = match &args.file2 {
        Some(p) => Some(read_table(p, matcher, &bar)?),
        None => None,
    };
    bar.set_message("matching");
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["id_a", "id_b", "score"]).context("cannot write output")?;
    let mut summary = Summary {
        rows: 0,
        pairs: 0,
        auto_link: 0,
        review: 0,
        oversized_blocks: 0,
        windowed: matcher.oversized_window() > 0,
        comparisons: 0,
        elapsed_secs: 0.0,
        read_secs: started.elapsed().as_secs_f64(),
        peak_rss_mib: None,
        blocking: BlockStats::default(),
    };
    let mut write =
        |ids_a: &[Box<str>], ids_b: &[Box<str>], pairs: &[Pair]| -> anyhow::Result<()> {
            for p in pairs {
                match matcher.verdict(f64::from(p.score)) {
                    Verdict::AutoLink => summary.auto_link += 1,
                    Verdict::Review => summary.review += 1,
                    Verdict::NoMatch => continue,
                }
                summary.pairs += 1;
                let score = format!("{:.3}", p.score);
                w.write_record([&*ids_a[p.a as usize], &*ids_b[p.b as usize], score.as_str()])
                    .context("cannot write output")?;
            }
            Ok(())
        };
    let stats = match &b {
        None => {
            let found = matcher.candidate_pairs_with_progress(&a.profiles, &mut progress);
            write(&a.ids, &a.ids, &found.pairs)?;
            found.stats
        }
        Some(b) => {
            let found = matcher.candidate_pairs_between(&a.profiles, &b.profiles, &mut progress);
            write(&a.ids, &b.ids, &found.across)?;
            write(&a.ids, &a.ids, &found.within_a)?;
            write(&b.ids, &b.ids, &found.within_b)?;
            found.stats
        }
    };
    w.flush().context("cannot write output")?;
    bar.finish_and_clear();
    summary.rows = stats.rows;
    summary.oversized_blocks = stats.oversized_blocks;
    summary.comparisons = stats.comparisons;
    summary.blocking = stats;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.peak_rss_mib = peak_rss_kib().map(|k| k / 1024);
    Ok(summary)
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn args(file: PathBuf, file2: Option<PathBuf>) -> DedupeArgs {
        DedupeArgs { file, file2, output: None, config: None }
    }

    fn run_to_string(a: &DedupeArgs, m: &Matcher) -> anyhow::Result<(String, Summary)> {
        let mut out = Vec::new();
        let s = dedupe(a, m, &mut out, false)?;
        Ok((String::from_utf8(out).unwrap(), s))
    }

    #[test]
    fn one_file_finds_its_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "a.csv",
            "Record ID,First Name,Last Name,E-mail,Account,Mobile,Address,Town,ZIP\n\
             1,Ann,Lee,ann@acme.com,Acme,,,,\n\
             2,Bob,Stone,,Globex LLC,,,,\n\
             3,Robert,Stone,,Globex,,,,\n\
             4,ann,lee,ANN@ACME.COM,,,,,\n\
             5,Carl,Young,,Initech,+1 415 555 2671,,,\n\
             6,Carla,Young,,Hooli,415-555-2671,,,\n\
             7,Liam,Nguyen,,,,12 North Oak Avenue,New York,10001\n\
             8,Liam,Nguyen,,,,12 N Oak Ave,New York,10001-1234\n",
        );
        let (out, s) = run_to_string(&args(f, None), &Matcher::default()).unwrap();
        assert_eq!(out, "id_a,id_b,score\n1,4,1.000\n2,3,0.980\n7,8,1.000\n");
        assert_eq!((s.rows, s.pairs, s.auto_link, s.review), (8, 3, 3, 0));
        let line = s.to_string();
        assert!(line.starts_with("dedupe: 8 rows, 3 pairs (3 auto-link, 0 review)"), "{line}");
    }

    #[test]
    fn two_files_pair_across_and_within() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.csv",
            "id,email,first_name,last_name\nA1,ann@acme.com,Ann,Lee\nA2,zed@x.io,Zed,Zulu\nA3,zed@x.io,,\n",
        );
        let b = write(
            dir.path(),
            "b.csv",
            "\u{feff}ID,Email Address,Phone,Given Name,Surname\nB1,Ann@Acme.com,,,\nB2,,415 555 2671,Kim,Ode\nB3,,+14155552671,Kim,Ode\n",
        );
        let (out, s) = run_to_string(&args(a, Some(b)), &Matcher::default()).unwrap();
        assert_eq!(out, "id_a,id_b,score\nA1,B1,1.000\nA2,A3,1.000\nB2,B3,1.000\n");
        assert_eq!(s.rows, 6);
    }

    #[test]
    fn missing_id_column_and_bad_rows_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "noid.csv", "email,first_name\nann@acme.com,Ann\n");
        let e = run_to_string(&args(f, None), &Matcher::default()).unwrap_err();
        assert!(format!("{e:#}").contains("noid.csv: no id column"), "{e:#}");

        let f = write(dir.path(), "ragged.csv", "id,email\n1,secret@acme.com\n2,a,b\n");
        let e = format!("{:#}", run_to_string(&args(f, None), &Matcher::default()).unwrap_err());
        assert!(e.contains("ragged.csv: line 3: bad CSV row"), "{e}");
        assert!(!e.contains("secret"), "no cell values in errors: {e}");

        let f = write(dir.path(), "blankid.csv", "id,email\n1,a@b.com\n ,secret@b.com\n");
        let e = format!("{:#}", run_to_string(&args(f, None), &Matcher::default()).unwrap_err());
        assert!(e.contains("blankid.csv: line 3: empty id") && !e.contains("secret"), "{e}");

        let e = run_to_string(&args(dir.path().join("nope.csv"), None), &Matcher::default());
        assert!(format!("{:#}", e.unwrap_err()).contains("cannot open"));
    }

    #[test]
    fn config_matching_section_is_used() {
        let m = matcher_from_toml("[ledger]\npath = \"x\"\n").unwrap();
        assert_eq!(m.auto_link_threshold(), 0.92);
        let m =
            matcher_from_toml("[matching]\nauto_link_threshold = 0.99\nreview_threshold = 0.5\n")
                .unwrap();
        assert_eq!((m.auto_link_threshold(), m.review_threshold()), (0.99, 0.5));
        let e = matcher_from_toml("[matching]\nreview_threshold = 0.99\n").unwrap_err();
        assert!(format!("{e:#}").contains("matching.review_threshold"), "{e:#}");
        let e = matcher_from_toml("[matching]\nbogus = 1\n").unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
    }

    #[test]
    fn header_names_are_recognised() {
        let h = csv::StringRecord::from(vec![
            "Id",
            "e-mail",
            "FirstName",
            "family_name",
            "Organisation",
            "phone_number",
            "Street Address",
            "City",
            "Postal Code",
            "phone",
        ]);
        let c = columns(&h).unwrap();
        assert_eq!(
            c,
            Columns {
                id: 0,
                email: Some(1),
                first_name: Some(2),
                last_name: Some(3),
                company: Some(4),
                phone: Some(5),
                street: Some(6),
                city: Some(7),
                postcode: Some(8),
            }
        );
    }
}
