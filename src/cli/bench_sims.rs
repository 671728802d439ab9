//! The bench's simulators in a separate process (`leadsync bench --sims external`), so that
//! the bench process's peak RSS is the engine's alone and the simulators' memory (their
//! seeded records plus every record leadsync writes into them) is measured on its own.
//!
//! The bench re-executes its own binary (`std::env::current_exe()`) with the hidden
//! `--sims-child` flag and the same population arguments. The child seeds the same
//! population with the same seed (the same function the in-process mode uses), serves both
//! simulators on 127.0.0.1 port 0, and writes one JSON line on stdout: the environment that
//! points settings at it (base URLs and credentials) and what was placed where. It then answers
//! one JSON line per request line on stdin (`stats`, `fetch`) until stdin closes, and exits.
//! The protocol is private to this file: parent and child are the same binary.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bench::{BenchArgs, Placed, seed_any, status_kib};
use super::exit;
use crate::domain::{RemoteId, SystemName};
use crate::ledger::LeadSnapshot;
use crate::reconcile::Rules;
use crate::sim::harness::Harness;
use crate::sim::hubspot::HubspotSimOptions;
use crate::sim::salesforce::SalesforceSimOptions;
use crate::verify::{self, Disagreement};

/// Persons compared per `fetch` round trip: bounds the records the parent holds at once.
const VERIFY_CHUNK: usize = 5_000;

/// The child's first line: where it serves and what it seeded.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Ready {
    /// `LEADSYNC__...` overrides and secret variables (see [`Harness::env`]).
    pub env: HashMap<String, String>,
    pub placed: Placed,
    pub seed_secs: f64,
    /// The child's RSS right after seeding.
    pub rss_seeded_kib: u64,
}

/// API call counters of both simulators, and the child's memory.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(super) struct SimCounts {
    pub sf_reads: u64,
    pub sf_writes: u64,
    pub hs_reads: u64,
    pub hs_writes: u64,
    pub hs_searches: u64,
    /// The simulators' process: current and peak resident set (0 in-process).
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl SimCounts {
    pub(super) fn of(harness: &Harness) -> SimCounts {
        let sf = harness.salesforce.stats();
        let hs = harness.hubspot.stats();
        SimCounts {
            sf_reads: sf.api_reads,
            sf_writes: sf.api_writes,
            hs_reads: hs.api_reads,
            hs_writes: hs.api_writes,
            hs_searches: hs.search_calls,
            rss_kib: 0,
            hwm_kib: 0,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Stats,
    /// Records as the vendor holds them now, by (system, remote id).
    Fetch {
        records: Vec<(SystemName, RemoteId)>,
    },
}

/// The child's side: seed, serve, answer until stdin closes.
pub(super) async fn serve_child(args: &BenchArgs) -> u8 {
    let harness = match Harness::start(
        SalesforceSimOptions { daily_api_limit: u64::MAX, ..SalesforceSimOptions::default() },
        HubspotSimOptions::unlimited(),
    )
    .await
    {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("leadsync: cannot start simulators: {e}");
            return exit::IOERR;
        }
    };
    let started = std::time::Instant::now();
    let placed = match seed_any(&harness, args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("leadsync: seeding failed: {e}");
            return exit::SOFTWARE;
        }
    };
    let ready = Ready {
        // The ledger path is the parent's to choose; it overrides this one.
        env: harness.env(std::path::Path::new("unused.db")),
        placed,
        seed_secs: started.elapsed().as_secs_f64(),
        rss_seeded_kib: status_kib("VmRSS:").unwrap_or(0),
    };
    // The simulators serve on this runtime's workers; requests are answered on a blocking
    // thread (stdin is blocking), reading the simulators' stores through their locks.
    let answered = tokio::task::spawn_blocking(move || answer(&harness, &ready)).await;
    match answered {
        Ok(Ok(())) => exit::OK,
        Ok(Err(e)) => {
            eprintln!("leadsync: simulator child: {e}");
            exit::IOERR
        }
        Err(e) => {
            eprintln!("leadsync: simulator child: {e}");
            exit::SOFTWARE
        }
    }
}

fn answer(harness: &Harness, ready: &Ready) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serde_json::to_writer(&mut out, ready)?;
    out.write_all(b"\n")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let request: Request = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        match request {
            Request::Stats => {
                let counts = SimCounts {
                    rss_kib: status_kib("VmRSS:").unwrap_or(0),
                    hwm_kib: status_kib("VmHWM:").unwrap_or(0),
                    ..SimCounts::of(harness)
                };
                serde_json::to_writer(&mut out, &counts)?;
            }
            Request::Fetch { records } => {
                let found: Vec<Option<BTreeMap<String, Option<String>>>> =
                    records.iter().map(|(s, r)| harness.fetch(s, r)).collect();
                serde_json::to_writer(&mut out, &found)?;
            }
        }
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// The parent's handle on the child. Dropping it closes the child's stdin (it exits) and
/// reaps it.
pub(super) struct ExternalSims {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ExternalSims {
    /// Start the child with the bench's population arguments and wait until it has seeded
    /// and serves.
    pub(super) fn spawn(args: &BenchArgs) -> std::io::Result<(ExternalSims, Ready)> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("bench")
            .arg("--sims-child")
            .args(["--leads", &args.leads.to_string()])
            .args(["--overlap", &args.overlap.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .args(["--fuzzy", &args.fuzzy.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        let Some(stdout) = stdout else {
            drop(child.kill());
            return Err(std::io::Error::other("child without stdout"));
        };
        let mut sims = ExternalSims { child, stdin, stdout };
        let ready: Ready = sims.read_line()?;
        Ok((sims, ready))
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read_line<T: for<'de> Deserialize<'de>>(&mut self) -> std::io::Result<T> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the simulator child exited",
            ));
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    fn request<T: for<'de> Deserialize<'de>>(&mut self, request: &Request) -> std::io::Result<T> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(std::io::Error::other("the simulator child's stdin is closed"));
        };
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.flush()?;
        self.read_line()
    }

    pub(super) fn stats(&mut self) -> std::io::Result<SimCounts> {
        self.request(&Request::Stats)
    }

    /// [`verify::compare`] against the child's stores, `VERIFY_CHUNK` persons at a time.
    pub(super) fn compare(
        &mut self,
        snapshot: &[LeadSnapshot],
        rules: &Rules,
    ) -> std::io::Result<Vec<Disagreement>> {
        let mut out = Vec::new();
        for chunk in snapshot.chunks(VERIFY_CHUNK) {
            let records: Vec<(SystemName, RemoteId)> = chunk
                .iter()
                .flat_map(|l| l.links.iter().map(|(s, r)| (SystemName(s.clone()), r.clone())))
                .collect();
            let found: Vec<Option<BTreeMap<String, Option<String>>>> =
                self.request(&Request::Fetch { records: records.clone() })?;
            if found.len() != records.len() {
                return Err(std::io::Error::other("the simulator child answered short"));
            }
            let held: HashMap<(SystemName, RemoteId), BTreeMap<String, Option<String>>> =
                records.into_iter().zip(found).filter_map(|(k, v)| v.map(|v| (k, v))).collect();
            out.extend(verify::compare(chunk, rules, &|s, r| {
                held.get(&(s.clone(), r.clone())).cloned()
            }));
        }
        Ok(out)
    }
}

impl Drop for ExternalSims {
    fn drop(&mut self) {
        // EOF on stdin ends the child's request loop and the process.
        self.stdin.take();
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            // Give it a moment to exit on its own, then make sure.
            for _ in 0..50 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(self.child.kill());
            drop(self.child.wait());
        }
    }
}
