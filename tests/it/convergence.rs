//! The convergence test (issue 4): a seeded, model-based run of the real engine against both
//! simulators while a driver edits both sides at the same time, then checks that it settled.
//!
//! Per seed, a `StdRng` builds a small world (6 to 20 humans: some only in Salesforce, some
//! only in HubSpot, some in both, now and then one twice in Salesforce), seeds both simulators
//! (latency 0, HubSpot without rate limits), and starts the real [`App`] in-process on a temp
//! ledger: webhooks on for about half the seeds (safety-net sweep every second), polling only
//! (every second) for the rest. A driver then applies a random sequence of [`Op`]s with small
//! random pauses, concurrently with the engine, through the simulators' HTTP API (HubSpot
//! `PATCH`, `DELETE`, `merge`) or their UI handle methods (a human in the vendor's UI).
//!
//! The driver keeps a model of the humans. Each human's email local part starts with a unique
//! token (`t7x.olivia.smith7@acme.example`, kept through email changes), so records at each
//! vendor are grouped by human without asking the engine. After the last op the engine
//! quiesces (injected faults are finite and run out; [`wait_converged`]), and the test asserts:
//! 1. **fields**: every field of every linked record equals the ledger's resolved value under
//!    the configured rules ([`leadsync::verify::compare`]), no link points at a record that
//!    is deleted, merged away or converted, and the model's last edit of a plain field (made
//!    on a linked human, not racing an earlier edit of that field) is what every live record
//!    of that human holds, so an engine that quietly reverts edits fails too;
//! 2. **no duplicates**: per human and vendor, at most one live record that leadsync created,
//!    and none where the human already has a live record the driver made;
//!    a record the driver deleted is not brought back;
//! 3. **no ping-pong**: no write API call at either simulator during two full poll (or sweep)
//!    passes after quiescence;
//! 4. **identity**: every live vendor record is linked to exactly one ledger person, no person
//!    links two humans, a human is one person, and an opted-out human is opted out in the
//!    ledger and on every live record of theirs at both vendors.
//!
//! Which ops run: [`Op::enabled`]. `all` (the default) is: `edit`, `stage`, `status`,
//! `email` (on a human whose records are all linked to one person), `email-early` (an email
//! change before the engine linked the human's records, which needs fuzzy matching),
//! `optout`, `new` (a human made by hand in one system or in both), `fault`, `delete`
//! (HubSpot archive through the API, Salesforce `ui_delete`, also of a converted lead),
//! `duplicate` (a second HubSpot contact of one human under another email), `merge` (HubSpot
//! `POST /crm/v3/objects/contacts/merge` of one human's two contacts), `sf-merge` (a UI merge
//! of two Salesforce leads of one human, `SalesforceSim::merge_records`, `MasterRecordId`)
//! and `convert` (`SalesforceSim::convert_lead`). Since session 11 CI runs all of them
//! (`default` is `all`). `seven` is the set CI ran until then, which had passed 500 seeds at
//! a time since session 6: `edit`, `stage`, `status`, `email`, `optout`, `new`, `fault`. A
//! list (`seven,delete`) picks ops to chase one op's failures.
//!
//! History. Until session 9 CI ran only the first seven of those (which had passed 500 seeds
//! at a time since session 6); the others failed a few seeds in every few hundred. Session 8
//! (2 cores shared with two other builds, load 6-18), all ops: five runs of 200 seeds failed
//! 0, 0, 0, 0 and 1 (seed 113); every op but `delete` in a clean-clone CI run: 1 of 200
//! (seed 161, passes alone). Session 9: every op but `delete`, 1-200 and 201-400 twice each
//! (load 3-17), 0 failed (before the model fix below, seed 251 failed: a model fault, a
//! converted human's contact now counts among their Salesforce records); the seven and `delete`
//! 1-400, 0 failed; on the merged engine (quiet machine), all ops 1-200 (64.8 s), 201-400
//! (68.4 s) and 401-1000 (187.5 s): 0 failed; but 1001-2000, run beside a clean-clone CI
//! build (load 4-6), failed 3 (397.7 s): seed 1153 (webhooks: a FirstName edit lost on a
//! Salesforce lead), 1672 (polling: a Salesforce contact kept an older email, differing from
//! the ledger), 1862 (polling: a HubSpot contact made by leadsync beside one made by hand).
//! A clean-clone CI run with all ops in the default set then failed seed 49 (1 of 300), so
//! that commit did not land. Session 10 traced those and every failure of its own all-ops
//! runs (two runs of 1000 seeds at once, load 4-6, traces on). Engine fixes, each with a
//! unit test that fails without it: a converted lead tied to its person by a fuzzy rule
//! planned pushes as if the person had no records (1672: creates at both vendors, the
//! contact's update lost); two persons holding one address and alike stay apart (2391: a
//! second Salesforce lead created); a rescore fold gave the person a second HubSpot
//! record's address (746: 409); a contact sent only the opt-out counted as read (4967: its
//! copy of the lead's old address reverted a newer email); and, checked by replays only,
//! quiescence ignored a push in flight (760, 857, 1617: one write in the quiet period). Model fixes: a duplicate's copy of
//! a name older than the last edit (49, 1770), a generator that could make two humans no
//! fuzzy rule can tell apart (2899), converted duplicates (574), review-split humans'
//! duplicates (1862) and review chains (3595), a create racing a duplicate's delete (113
//! under load), and a read that started before an edit (4492). Each pair of runs on the
//! engine and model of its time (the generator change reshuffled seeds): 1-2000, 7 failed;
//! then 1-2000, 1 (746); 2001-4000, 1 (3595); 4001-6000, 2 (4492, 4967); 6001-8000, 1
//! (7486). Session 11 closed the last three: 7486, the seed 161 family (HubSpot dated a
//! merge only by the survivor's `lastmodifieddate`, which leadsync's own opt-out push to the
//! survivor had moved past a Salesforce email edit made after the merge, so the survivor's
//! address won; the connector now dates a merge from the history of `hs_merged_object_ids`,
//! which the simulator keeps); 2345 (the primary contact deleted and the next one's email
//! edited in one poll pass: the edit, read while that contact was a second record, was its
//! own address, and the person's older one was then written over it; the address typed on
//! a second record is now dated in its link, and becomes the person's when that record takes
//! a deleted primary's place); and 1710, a model fault (two persons of one human, one from
//! a Salesforce duplicate carrying a stale address and tied to the other by a duplicate
//! review, each created at HubSpot, then folded by a Salesforce merge: two contacts leadsync
//! made, which is the documented link-and-report default; the check now accepts records
//! made for persons a review tied, from the engine's trail). Then, all ops,
//! traces on, two runs at once on 2 cores (load about 5): seeds 1001-3000 and 6001-7000, 0
//! failed (about 360 s per 1000); CI's seeds 1-200 four times beside a 1000-seed run, 0
//! failed (75 to 77 s each). So CI runs all ops since. A last run, 9001-10000, failed one
//! seed, 9037, a model fault: an email typed on a human's only HubSpot contact (a
//! hand-made duplicate) 65 ms after leadsync had sent the create of another, which became
//! the person's primary; the typed address stayed the duplicate's own, as designed, but the
//! driver had judged primacy before the create landed ([`second_behind_a_create`]).
//! Fixed in session 9:
//! - seed 113: a hand-made duplicate under another address, deleted before leadsync read its
//!   human at all, matched nobody when its delete was read, so the person made later was
//!   created there (a delete read after the person exists links by the fuzzy rules and
//!   tombstones). Such a delete now keeps the record's identity (`deleted_identities`), and a
//!   person made later that the fuzzy rules tie to it at the auto-link threshold takes its
//!   tombstone, so the order of the reads does not matter (`ledger::race_tests`,
//!   `reconcile::tests`). Replayed 10 times with all ops: 10 passed.
//! - seed 161 (duplicate, merge, email-early; failed once, in a loaded CI run): a human's
//!   Salesforce email edit made after two HubSpot merges of their contacts was lost; both
//!   records ended with a duplicate's address. Never reproduced (session 9: 43 replays beside
//!   load 7-17, and every run above) and not traced. Two candidates are closed in
//!   `reconcile`, each with a unit test: a merge survivor's address taken over a newer email
//!   (session 8), and (session 9) a merge *into the primary* handing the person the primary's
//!   own older address: HubSpot dates the merge only by the survivor's `lastmodifieddate`, and
//!   the seed edits the survivor 280 ms after the Salesforce email edit, so a merge read late
//!   is dated after that edit. Neither explains "a duplicate's address", so its cause may
//!   still be open: if it fails again, the failure prints the traces to find it.
//!
//! What a Salesforce UI merge leaves is the human's word (seed 225): the merge keeps the
//! master and fills its blanks from the loser, and the person merging sees and keeps those
//! values, as in the real merge wizard. So every plain field the merge changed on the master
//! is the model's latest edit of that field by that human, made at the merge on the master,
//! and demanded like any other ([`Driver::merge_fills`]). Salesforce dates records, not
//! fields: a merge that fills a gap from a loser leadsync had not updated yet (a hand-made
//! lead kept as master, the loser still holding a value older than an edit made in HubSpot)
//! carries the loser's older value as new, dated at the merge, and it wins under `most
//! recent`; the check demands that value, not the earlier edit.
//!
//! What the checks do not demand, because the vendors or the model make it unknowable:
//! - an edit made on a record that is then deleted or merged away, and an email edit before
//!   a merge of that human (the survivor keeps its own email), is not the human's last word;
//! - an opt-out that lived only on a record deleted before the ledger had it is gone;
//! - a name or company a duplicate copied from a record that still held a value older than
//!   the human's last edit of that field elsewhere (seed 49): made after the edit, the copy is
//!   newer, and the human's records end with it or with the edit depending on whether the
//!   engine linked the duplicate ([`Driver::copied_values`]);
//! - a duplicate (made from the human's current name and company) whose name, company or
//!   email was edited before leadsync linked it, or whose human's other records were edited
//!   so meanwhile, may stay a person of its own ("blurred"): the two no longer look alike.
//!   So may a human's own records when, before they were linked, one got a new email and one
//!   a new first or last name (no address in common, and no rule ties them). Such a human's records are checked per person for duplicates and opt-outs;
//! - an edit made after leadsync's last read of a record and before its write of that field
//!   there landed (the engine's trail: the write answered after the edit was sent, and no
//!   read of the record that showed the edit stored before the write's `sent_at`) may be
//!   overwritten by that write: the batch write endpoints take no precondition
//!   (Salesforce's `If-Unmodified-Since` works on one-record PATCHes only, a call per record;
//!   HubSpot's batch update has none), so an engine writing in batches cannot order the two (seeds 120, 201, 231: the fill-in of a newly linked duplicate);
//! - of several records of one human in one system only the primary (the person's oldest
//!   link) must hold the person's fields, the others the opt-out (ARCHITECTURE.md);
//! - a duplicate the driver made next to a record leadsync had made already is not a
//!   duplicate leadsync made, and neither is one made after the read that cleared leadsync's
//!   create for that human had started (the create's audit names that read's start,
//!   `cleared_by_read`): no engine sees a record made after its last read before a create;
//!   both records then link to the person, as several records of one human do; and such a
//!   duplicate deleted again before the create landed was not undone by it (seed 113);
//! - one human may be two persons when their ledger emails are two mailboxes at one
//!   domain and an open duplicate review ties them: the matcher sends such a pair to review
//!   by design (two mailboxes at one employer are usually two people, and `mail.example`,
//!   where the driver's duplicates live, is a domain a human's email may move to). Such a
//!   human's opt-outs and duplicates are checked per person, as a blurred human's (with
//!   `review_holds_creates` off, the default, each person is created where the other has a
//!   record: seed 1862): consent crosses the
//!   records of one person, and the engine cannot know the review's two persons are one
//!   (seed 325: a HubSpot merge survivor's own `mail.example` address became the person's,
//!   and a later duplicate at `mail.example` went to review, not opted out).
//!
//! Without webhooks HubSpot archives are learnt from the archived-list sweep, which ends every
//! poll pass here (`archived_sweep_every = 1`; hourly by default).
//!
//! Knobs (environment):
//! - `LEADSYNC_CONVERGENCE_SEEDS`: how many seeds (default 200: about 2 minutes on 2 busy
//!   cores in a debug build, the CI budget). `10000` is the long run the issue asks a flag
//!   for (about an hour on 2 cores, by the rate of the 1000-seed runs);
//! - `LEADSYNC_CONVERGENCE_FIRST_SEED`: the first of them (default 1);
//! - `LEADSYNC_CONVERGENCE_SEED`: replay this one seed only (prints its op log and, when it
//!   fails, the engine's trace of every person a failure names);
//! - `LEADSYNC_CONVERGENCE_OPS`: `default` (= `all`), `all`, `seven`, or a comma list of op
//!   names and sets (`seven,delete`);
//! - `LEADSYNC_CONVERGENCE_TRACE`: print the engine's traces of a failing seed in a many-seed
//!   run too (as a replay does), for failures that only show under load;
//! - `LEADSYNC_CONVERGENCE_JOBS`: seeds run at once (default 16; a seed takes 5 to 10 s but
//!   mostly waits on one-second poll intervals: 200 seeds of all ops took 65 to 68 s on 2
//!   quiet cores, 85 to 130 s on cores shared with other work).
//!
//! The op sequence of a seed is deterministic; the interleaving with the engine is not (it is
//! a real concurrent run), so a replay reproduces the scenario, usually the failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use leadsync::app::App;
use leadsync::domain::Field;
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::sim::harness::{Harness, wait_converged};
use leadsync::sim::hubspot::{Fault as HsFault, HubspotSimOptions};
use leadsync::sim::population::{self, Person, Presence};
use leadsync::sim::salesforce::{Fault as SfFault, SalesforceSimOptions};

/// One kind of thing the driver does to the vendors while the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// A name, company, title, phone or lead source edit on either side (sometimes a blank).
    Edit,
    /// A HubSpot lifecycle stage change, forwards or backwards (the UI allows both).
    Stage,
    /// A lead status change on either side.
    Status,
    /// A new email on a record of a human whose records are all linked to one ledger person
    /// (the token stays).
    EmailChange,
    /// A new email on a record before the engine has linked the human's records: linking
    /// them then needs more than the exact email (fuzzy matching).
    EmailEarly,
    /// An opt-out on either side (never undone by the driver).
    OptOut,
    /// A new human, created in one system or in both by hand.
    NewHuman,
    /// A transient fault at one simulator: 5xx, expired sessions; on some seeds 429 and
    /// client timeouts (each costs seconds).
    Fault,
    /// HubSpot archive through the API, or Salesforce delete in the UI.
    Delete,
    /// A second HubSpot contact for a human, under another email.
    HsDuplicate,
    /// HubSpot merge of two contacts of one human (making the second one first if needed).
    HsMerge,
    /// Salesforce merge of two leads of one human in the UI (`MasterRecordId`; making the
    /// second lead first if needed).
    SfMerge,
    /// Salesforce lead conversion (the UI's Convert button).
    ConvertLead,
}

impl Op {
    const ALL: [Op; 13] = [
        Op::Edit,
        Op::Stage,
        Op::Status,
        Op::EmailChange,
        Op::EmailEarly,
        Op::OptOut,
        Op::NewHuman,
        Op::Fault,
        Op::Delete,
        Op::HsDuplicate,
        Op::HsMerge,
        Op::SfMerge,
        Op::ConvertLead,
    ];

    /// What CI runs: every op, since session 11 (all ops under load: seeds 1001-3000 and
    /// 6001-7000, and CI's seeds 1-200 four times, none failed; the header).
    const DEFAULT: [Op; 13] = Op::ALL;

    /// What CI ran until session 11: the ops that had passed 500 seeds at a time since
    /// session 6 while the others still failed a seed or two in every thousand.
    const SEVEN: [Op; 7] =
        [Op::Edit, Op::Stage, Op::Status, Op::EmailChange, Op::OptOut, Op::NewHuman, Op::Fault];

    fn name(self) -> &'static str {
        match self {
            Op::Edit => "edit",
            Op::Stage => "stage",
            Op::Status => "status",
            Op::EmailChange => "email",
            Op::EmailEarly => "email-early",
            Op::OptOut => "optout",
            Op::NewHuman => "new",
            Op::Fault => "fault",
            Op::Delete => "delete",
            Op::HsDuplicate => "duplicate",
            Op::HsMerge => "merge",
            Op::SfMerge => "sf-merge",
            Op::ConvertLead => "convert",
        }
    }

    /// How often the driver picks it, relative to the others.
    fn weight(self) -> u32 {
        match self {
            Op::Edit => 6,
            Op::Stage | Op::Status | Op::EmailChange | Op::Fault => 3,
            Op::OptOut | Op::NewHuman | Op::Delete | Op::HsMerge | Op::SfMerge => 2,
            Op::ConvertLead => 2,
            Op::EmailEarly => 2,
            Op::HsDuplicate => 1,
        }
    }

    /// The ops this run uses: `LEADSYNC_CONVERGENCE_OPS` or [`Op::DEFAULT`].
    pub fn enabled() -> Vec<Op> {
        let Ok(spec) = std::env::var("LEADSYNC_CONVERGENCE_OPS") else {
            return Op::DEFAULT.to_vec();
        };
        let mut ops = BTreeSet::new();
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "default" => ops.extend(Op::DEFAULT),
                "seven" => ops.extend(Op::SEVEN),
                "all" => ops.extend(Op::ALL),
                w => {
                    let op = Op::ALL.iter().find(|o| o.name() == w);
                    ops.insert(
                        *op.unwrap_or_else(|| {
                            panic!("unknown op {w:?} in LEADSYNC_CONVERGENCE_OPS")
                        }),
                    );
                }
            }
        }
        ops.into_iter().collect()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_edits_converge() {
    crate::helpers::init_logs();
    let ops = Op::enabled();
    let (seeds, replay): (Vec<u64>, bool) = match env_u64("LEADSYNC_CONVERGENCE_SEED") {
        Some(s) => (vec![s], true),
        None => {
            let first = env_u64("LEADSYNC_CONVERGENCE_FIRST_SEED").unwrap_or(1);
            let n = env_u64("LEADSYNC_CONVERGENCE_SEEDS").unwrap_or(200);
            ((first..first + n).collect(), false)
        }
    };
    let jobs = env_u64("LEADSYNC_CONVERGENCE_JOBS").unwrap_or(16).max(1) as usize;
    let started = std::time::Instant::now();
    let seeds = Arc::new(seeds);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs.min(seeds.len()) {
        let (seeds, next, ops) = (Arc::clone(&seeds), Arc::clone(&next), ops.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                out.push(Box::pin(run_seed(seed, &ops)).await);
            }
            out
        });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = workers.join_next().await {
        outcomes.extend(r.expect("a seed worker panicked"));
    }
    outcomes.sort_by_key(|o| o.seed);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.failures.is_empty()).collect();
    let ops_env = ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(",");
    for o in &failed {
        eprintln!(
            "\n=== convergence seed {} FAILED ({}; {} humans; {} ops; {:.1} s)\n\
             replay: LEADSYNC_CONVERGENCE_SEED={} LEADSYNC_CONVERGENCE_OPS={ops_env} \
             cargo test --test it convergence -- --nocapture",
            o.seed,
            o.mode,
            o.humans,
            o.ops_run,
            o.elapsed.as_secs_f64(),
            o.seed
        );
        for f in o.failures.iter().take(25) {
            eprintln!("  FAIL {f}");
        }
        if o.failures.len() > 25 {
            eprintln!("  ... and {} more", o.failures.len() - 25);
        }
        eprintln!("  op log:");
        for line in &o.log {
            eprintln!("    {line}");
        }
    }
    if replay && failed.is_empty() {
        for o in &outcomes {
            eprintln!("seed {} passed ({}); op log:", o.seed, o.mode);
            for line in &o.log {
                eprintln!("    {line}");
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let busy: f64 = outcomes.iter().map(|o| o.elapsed.as_secs_f64()).sum();
    eprintln!(
        "convergence: {} seeds, {} failed, ops [{ops_env}], {wall:.1} s wall \
         ({:.2} s per seed wall, {:.2} s per seed each, {jobs} at once)",
        outcomes.len(),
        failed.len(),
        wall / outcomes.len().max(1) as f64,
        busy / outcomes.len().max(1) as f64,
    );
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed: {:?} (each printed above with its replay command and op log)",
        failed.len(),
        outcomes.len(),
        failed.iter().map(|o| o.seed).collect::<Vec<_>>()
    );
}

/// What one seed did and found.
struct Outcome {
    seed: u64,
    mode: String,
    humans: usize,
    ops_run: usize,
    failures: Vec<String>,
    log: Vec<String>,
    elapsed: Duration,
}

/// One human of the model.
struct Human {
    /// The first part of every email of theirs, e.g. `t7x`.
    token: String,
    first: String,
    last: String,
    company: String,
    /// The driver opted them out somewhere (or they started opted out).
    opted_out: bool,
    /// A record of theirs that no other record matched exactly (another email) had a name,
    /// company or email edited before leadsync linked it: it may no longer look like them,
    /// and a careful matcher keeps it apart (see the identity check).
    blurred: bool,
    /// Identity edits made before the human's records were all linked: `email`, `name` (a
    /// first or last name).
    early_edits: BTreeSet<&'static str>,
}

/// Something the driver deleted: whose, where, and what that human had live there right after.
struct Deleted {
    human: usize,
    system: &'static str,
    /// The deleted record's id.
    id: String,
    live_after: BTreeSet<String>,
}

/// A field write the driver made that went through.
struct Edit {
    human: usize,
    /// The record written (`sf:ID` or `hs:ID`).
    record: String,
    sf_field: &'static str,
    hs_prop: &'static str,
    value: String,
    at: Instant,
    /// Wall clock just before the write was sent and just after it returned.
    wall: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    /// The human's records were all linked to one person when it was made.
    settled: bool,
    /// A vendor undid it: the record was deleted or merged away, or a merge kept another
    /// email, after the edit.
    superseded: bool,
}

/// A record the driver made as a second one of a human (duplicate, merge), and which records
/// leadsync had made for that human in that system just before.
struct Dup {
    id: String,
    leadsync_before: BTreeSet<String>,
    /// When the vendor had it (taken after the insert returned).
    made_at: chrono::DateTime<chrono::Utc>,
}

/// A Salesforce record's fields as the simulator's UI handle returns them.
type Record = Map<String, Value>;

/// The token in an email (`t7x` in `t7x.olivia@acme.example`).
fn token_of(email: &str) -> Option<String> {
    let local = email.trim().to_lowercase();
    let first = local.split(['.', '@']).next()?;
    let digits = first.strip_prefix('t')?.strip_suffix('x')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| first.to_string())
}

fn ascii(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase()
}

/// A Salesforce record as the test sees it: Leads and Contacts, not deleted.
#[derive(Debug)]
struct SfRec {
    id: String,
    object: &'static str,
    token: Option<String>,
    converted: bool,
    opt_out: bool,
}

fn sf_live(h: &Harness) -> Vec<SfRec> {
    let mut out = Vec::new();
    for object in ["Lead", "Contact"] {
        for r in h.salesforce.all(object) {
            out.push(SfRec {
                id: r.get("Id").and_then(Value::as_str).unwrap_or_default().to_string(),
                object,
                token: r.get("Email").and_then(Value::as_str).and_then(token_of),
                converted: r.get("IsConverted").and_then(Value::as_bool).unwrap_or(false),
                opt_out: r.get("HasOptedOutOfEmail").and_then(Value::as_bool).unwrap_or(false),
            });
        }
    }
    out
}

/// HubSpot contacts, not archived: (id, token, opted out).
fn hs_live(h: &Harness) -> Vec<(String, Option<String>, bool)> {
    h.hubspot
        .all()
        .into_iter()
        .map(|(id, p)| {
            let token = p.get("email").cloned().flatten().as_deref().and_then(token_of);
            let opt = p.get("hs_email_optout").cloned().flatten().as_deref() == Some("true");
            (id, token, opt)
        })
        .collect()
}

const FIRST: &[&str] = &["Ada", "Grace", "Linus", "Mei", "Omar", "Søren", "Zoë", "Kwame"];
const LAST: &[&str] = &["Lovelace", "Hopper", "Okafor", "Müller", "Tanaka", "O'Brien", "Nowak"];
const COMPANIES: &[&str] = &["Acme Corporation", "Globex Inc.", "Initech LLC", "Hooli", "Umbrella"];
const TITLES: &[&str] = &["CTO", "VP Marketing", "Head of Growth", "RevOps Lead", "CFO"];
const SOURCES: &[&str] = &["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"];
const DOMAINS: &[&str] = &["acme.example", "mail.example", "globex.example", "hooli.example"];
const HS_STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
];
const HS_STATUSES: &[&str] =
    &["NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT"];
const SF_STATUSES: &[&str] =
    &["Open - Not Contacted", "Working - Contacted", "Closed - Not Converted"];

/// The driver: the model, the random source, and the vendors it acts on.
struct Driver<'a> {
    h: &'a Harness,
    app: &'a App,
    rng: StdRng,
    http: reqwest::Client,
    humans: Vec<Human>,
    /// Records the driver made (seeded, created, converted into): not leadsync's.
    known_sf: BTreeSet<String>,
    known_hs: BTreeSet<String>,
    deleted: Vec<Deleted>,
    edits: Vec<Edit>,
    dups: Vec<Dup>,
    /// Whether 429s and client timeouts may be injected (each costs seconds).
    slow_faults: bool,
    seq: u32,
    start: Instant,
    log: Vec<String>,
}

impl Driver<'_> {
    fn note(&mut self, line: String) {
        let ms = self.start.elapsed().as_millis();
        self.log.push(format!("+{ms:>5}ms {line}"));
    }

    fn pick<'s>(&mut self, xs: &[&'s str]) -> &'s str {
        xs[self.rng.random_range(0..xs.len())]
    }

    /// Live, unconverted Salesforce leads of a human.
    fn sf_leads(&self, human: usize) -> Vec<String> {
        let t = &self.humans[human].token;
        sf_live(self.h)
            .into_iter()
            .filter(|r| r.object == "Lead" && !r.converted && r.token.as_ref() == Some(t))
            .map(|r| r.id)
            .collect()
    }

    /// Live HubSpot contacts of a human.
    fn hs_contacts(&self, human: usize) -> Vec<String> {
        let t = &self.humans[human].token;
        hs_live(self.h).into_iter().filter(|c| c.1.as_ref() == Some(t)).map(|c| c.0).collect()
    }

    /// Whether every live record of the human at both vendors is linked, all to one ledger
    /// person: then an email change is a change on a linked record.
    fn settled(&self, human: usize) -> bool {
        let snapshot = self.app.ledger().snapshot().expect("snapshot");
        let mut persons = BTreeSet::new();
        let records = self.sf_leads(human).into_iter().map(|id| ("crm", id));
        for (system, id) in
            records.chain(self.hs_contacts(human).into_iter().map(|id| ("marketing", id)))
        {
            let Some(p) =
                snapshot.iter().find(|p| p.links.iter().any(|(s, r)| s == system && r.id == id))
            else {
                return false;
            };
            persons.insert(p.id.clone());
        }
        persons.len() == 1
    }

    fn one_of(&mut self, ids: Vec<String>) -> Option<String> {
        (!ids.is_empty()).then(|| ids[self.rng.random_range(0..ids.len())].clone())
    }

    /// Call the HubSpot API as another integration would; retries 429 and 5xx (which may be
    /// the faults injected for the engine) a few times.
    async fn hs_api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> String {
        let url = format!("{}{path}", self.h.hubspot.base_url());
        let mut last = String::new();
        for _ in 0..6 {
            let mut req =
                self.http.request(method.clone(), &url).bearer_auth(self.h.hubspot_token());
            if let Some(b) = &body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return format!("api {}", r.status().as_u16()),
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    last = format!("api {} (gave up)", r.status().as_u16());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(r) => {
                    let code = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    return format!("api {code}: {}", text.chars().take(160).collect::<String>());
                }
                Err(e) => return format!("api error: {e}"),
            }
        }
        last
    }

    /// Write HubSpot properties through the UI or the API, at random.
    async fn hs_write(&mut self, id: &str, props: BTreeMap<String, String>) -> String {
        if self.rng.random_bool(0.5) {
            match self.h.hubspot.ui_update(id, props) {
                Ok(()) => "ui ok".into(),
                Err(e) => format!("ui refused: {e}"),
            }
        } else {
            let path = format!("/crm/v3/objects/contacts/{id}");
            self.hs_api(reqwest::Method::PATCH, &path, Some(json!({ "properties": props }))).await
        }
    }

    fn sf_write(&self, id: &str, fields: Map<String, Value>) -> String {
        match self.h.salesforce.ui_update("Lead", id, fields) {
            Ok(()) => "ui ok".into(),
            Err(e) => format!("ui refused: {e}"),
        }
    }

    async fn apply(&mut self, op: Op) {
        let human = self.rng.random_range(0..self.humans.len());
        let tok = self.humans[human].token.clone();
        let on_sf = self.rng.random_bool(0.5);
        match op {
            Op::Edit => {
                let (sf, hs, values): (&str, &str, &[&str]) = match self.rng.random_range(0..6) {
                    0 => ("FirstName", "firstname", FIRST),
                    1 => ("LastName", "lastname", LAST),
                    2 => ("Company", "company", COMPANIES),
                    3 => ("Title", "jobtitle", TITLES),
                    4 => ("Phone", "phone", &["+1 (415) 555-0100", "+44 20 7946 0000", "555-0199"]),
                    _ => ("LeadSource", "leadsource", SOURCES),
                };
                let blank = matches!(sf, "Title" | "Phone") && self.rng.random_bool(0.15);
                let value = if blank { String::new() } else { self.pick(values).to_string() };
                self.field_write(human, on_sf, sf, hs, value, "edit").await;
            }
            Op::Stage => {
                let Some(id) = self.one_of(self.hs_contacts(human)) else {
                    return self.note(format!("stage {tok}: no hubspot contact, skipped"));
                };
                let stage = self.pick(HS_STAGES);
                let r = self.hs_write(&id, [("lifecyclestage".into(), stage.into())].into()).await;
                self.note(format!("stage {tok} hs:{id} lifecyclestage={stage}: {r}"));
            }
            Op::Status => {
                let value = if on_sf { self.pick(SF_STATUSES) } else { self.pick(HS_STATUSES) };
                self.field_write(human, on_sf, "Status", "hs_lead_status", value.into(), "status")
                    .await;
            }
            Op::EmailChange | Op::EmailEarly => {
                if op == Op::EmailChange && !self.settled(human) {
                    return self.note(format!("email {tok}: records not linked yet, skipped"));
                }
                self.seq += 1;
                let first = ascii(&self.humans[human].first);
                let domain = self.pick(DOMAINS);
                let email = format!("{tok}.v{}.{first}@{domain}", self.seq);
                self.field_write(human, on_sf, "Email", "email", email, op.name()).await;
            }
            Op::OptOut => {
                if on_sf {
                    let Some(id) = self.one_of(self.sf_leads(human)) else {
                        return self.note(format!("optout {tok}: no salesforce lead, skipped"));
                    };
                    let r = self.sf_write(
                        &id,
                        Map::from_iter([("HasOptedOutOfEmail".into(), true.into())]),
                    );
                    self.humans[human].opted_out |= r == "ui ok";
                    self.note(format!("optout {tok} sf:{id}: {r}"));
                } else {
                    let Some(id) = self.one_of(self.hs_contacts(human)) else {
                        return self.note(format!("optout {tok}: no hubspot contact, skipped"));
                    };
                    let email = self.h.hubspot.get(&id).and_then(|p| p.get("email").cloned());
                    let Some(Some(email)) = email else {
                        return self.note(format!("optout {tok} hs:{id}: no email, skipped"));
                    };
                    self.h.hubspot.ui_unsubscribe(&email);
                    self.humans[human].opted_out = true;
                    self.note(format!("optout {tok} hs:{id}: unsubscribed in the ui"));
                }
            }
            Op::NewHuman => self.new_human().await,
            Op::Fault => self.fault(on_sf),
            Op::Delete => {
                if on_sf {
                    let leads = sf_live(self.h)
                        .into_iter()
                        .filter(|r| r.object == "Lead" && r.token.as_ref() == Some(&tok))
                        .map(|r| r.id)
                        .collect();
                    let Some(id) = self.one_of(leads) else {
                        return self.note(format!("delete {tok}: no salesforce lead, skipped"));
                    };
                    let was_out = self.opted_out_records(human).contains(&format!("sf:{id}"));
                    let r = self.h.salesforce.ui_delete("Lead", &id);
                    self.note(format!("delete {tok} sf:{id}: {r:?}"));
                    self.forget_opt_out(human, was_out);
                    self.supersede(human, &format!("sf:{id}"), false);
                    let live_after = self.sf_leads(human).into_iter().collect();
                    self.deleted.push(Deleted { human, system: "crm", id, live_after });
                } else {
                    let Some(id) = self.one_of(self.hs_contacts(human)) else {
                        return self.note(format!("delete {tok}: no hubspot contact, skipped"));
                    };
                    let path = format!("/crm/v3/objects/contacts/{id}");
                    let was_out = self.opted_out_records(human).contains(&format!("hs:{id}"));
                    let r = self.hs_api(reqwest::Method::DELETE, &path, None).await;
                    self.forget_opt_out(human, was_out);
                    self.note(format!("delete {tok} hs:{id} (archive): {r}"));
                    self.supersede(human, &format!("hs:{id}"), false);
                    let live_after = self.hs_contacts(human).into_iter().collect();
                    self.deleted.push(Deleted { human, system: "marketing", id, live_after });
                }
            }
            Op::HsDuplicate => self.hs_duplicate(human),
            Op::HsMerge => {
                if self.hs_contacts(human).len() < 2 {
                    self.hs_duplicate(human);
                    let pause = self.rng.random_range(0..300);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                let mut ids = self.hs_contacts(human);
                if ids.len() < 2 {
                    return self.note(format!("merge {tok}: fewer than two contacts, skipped"));
                }
                let primary = ids.swap_remove(self.rng.random_range(0..ids.len()));
                let other = ids.swap_remove(self.rng.random_range(0..ids.len()));
                let body = json!({ "primaryObjectId": primary, "objectIdToMerge": other });
                let path = "/crm/v3/objects/contacts/merge";
                let r = self.hs_api(reqwest::Method::POST, path, Some(body)).await;
                self.note(format!("merge {tok} hs:{other} into hs:{primary}: {r}"));
                // The merged-away contact's values go with it, and the survivor keeps its own
                // email: edits before the merge may be undone by HubSpot itself.
                self.supersede(human, &format!("hs:{other}"), true);
            }
            Op::SfMerge => {
                if self.sf_leads(human).len() < 2 {
                    self.sf_duplicate(human);
                    let pause = self.rng.random_range(0..300);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                let mut ids = self.sf_leads(human);
                if ids.len() < 2 {
                    return self.note(format!("sf-merge {tok}: fewer than two leads, skipped"));
                }
                let master = ids.swap_remove(self.rng.random_range(0..ids.len()));
                let other = ids.swap_remove(self.rng.random_range(0..ids.len()));
                let master_before = self.h.salesforce.get("Lead", &master).unwrap_or_default();
                let other_before = self.h.salesforce.get("Lead", &other).unwrap_or_default();
                let at = Instant::now();
                let wall_before = chrono::Utc::now();
                let r = self.h.salesforce.merge_records("Lead", &master, &[other.as_str()]);
                let wall = (wall_before, chrono::Utc::now());
                self.note(format!("sf-merge {tok} sf:{other} into sf:{master}: {r:?}"));
                self.supersede(human, &format!("sf:{other}"), true);
                if r.is_ok() {
                    let after = self.h.salesforce.get("Lead", &master).unwrap_or_default();
                    let seen = (&master_before, &other_before, &after);
                    self.merge_fills(human, &master, seen, at, wall);
                }
            }
            Op::ConvertLead => {
                let Some(id) = self.one_of(self.sf_leads(human)) else {
                    return self.note(format!("convert {tok}: no salesforce lead, skipped"));
                };
                match self.h.salesforce.convert_lead(&id) {
                    Ok(contact) => {
                        self.known_sf.insert(contact.clone());
                        // A converted duplicate lives on as its contact, made when the lead
                        // was (seed 574: a hand-made lead, made after the read that cleared
                        // leadsync's create, converted; the contact is that same duplicate).
                        let dup = self.dups.iter().find(|x| x.id == id);
                        if let Some(x) = dup {
                            let (leadsync_before, made_at) = (x.leadsync_before.clone(), x.made_at);
                            self.dups.push(Dup { id: contact.clone(), leadsync_before, made_at });
                        }
                        self.note(format!("convert {tok} sf:{id} -> Contact {contact}"));
                    }
                    Err(e) => self.note(format!("convert {tok} sf:{id}: refused: {e}")),
                }
            }
        }
    }

    /// Set one field of one of the human's records on one side (`""` blanks it).
    async fn field_write(
        &mut self,
        human: usize,
        on_sf: bool,
        sf_field: &'static str,
        hs_prop: &'static str,
        value: String,
        what: &str,
    ) {
        let tok = self.humans[human].token.clone();
        let settled = self.settled(human);
        let at = Instant::now();
        let wall_before = chrono::Utc::now();
        let r = if on_sf {
            let Some(id) = self.one_of(self.sf_leads(human)) else {
                return self.note(format!("{what} {tok}: no salesforce lead, skipped"));
            };
            let v = if value.is_empty() { Value::Null } else { Value::String(value.clone()) };
            let r = self.sf_write(&id, Map::from_iter([(sf_field.to_string(), v)]));
            self.note(format!("{what} {tok} sf:{id} {sf_field}={value:?}: {r}"));
            (r, format!("sf:{id}"))
        } else {
            let Some(id) = self.one_of(self.hs_contacts(human)) else {
                return self.note(format!("{what} {tok}: no hubspot contact, skipped"));
            };
            let r = self.hs_write(&id, [(hs_prop.to_string(), value.clone())].into()).await;
            self.note(format!("{what} {tok} hs:{id} {hs_prop}={value:?}: {r}"));
            (r, format!("hs:{id}"))
        };
        let (r, record) = r;
        let wall = (wall_before, chrono::Utc::now());
        let identity = ["FirstName", "LastName", "Company", "Email"].contains(&sf_field);
        // An edit on the duplicate itself, or on another record of its human while the
        // duplicate is not linked yet: either way the two no longer look alike.
        let has_dup = self.dups.iter().any(|x| {
            record.ends_with(&format!(":{}", x.id))
                || self.hs_contacts(human).contains(&x.id)
                || self.sf_leads(human).contains(&x.id)
        });
        if identity && !settled && has_dup && (r == "ui ok" || r.starts_with("api 2")) {
            self.humans[human].blurred = true;
        }
        // Without a duplicate too: an email changed on one record before the human's records
        // were linked leaves them no address in common, and a first or last name changed
        // before then as well leaves no rule that ties them (the Salesforce-like rules need
        // both names): two persons, each checked on its own.
        let early = match sf_field {
            "Email" => Some("email"),
            "FirstName" | "LastName" => Some("name"),
            _ => None,
        };
        if let Some(early) = early
            && !settled
            && (r == "ui ok" || r.starts_with("api 2"))
        {
            let h = &mut self.humans[human];
            h.early_edits.insert(early);
            h.blurred |= h.early_edits.len() == 2;
        }
        if r == "ui ok" || r.starts_with("api 2") {
            // An email typed on a second HubSpot contact of the human is that contact's own
            // address: the person's email follows the primary contact (HubSpot refuses one
            // address on two contacts; `src/reconcile/mod.rs`), so it is not the human's.
            let superseded = sf_field == "Email"
                && record.starts_with("hs:")
                && !self.is_primary_record(human, &record);
            self.edits.push(Edit {
                human,
                record,
                sf_field,
                hs_prop,
                value,
                at,
                wall,
                settled,
                superseded,
            });
        }
    }

    /// Whether a HubSpot record (`hs:ID`) is its human's primary contact: the only live one,
    /// or the first link of the person linking it.
    fn is_primary_record(&self, human: usize, record: &str) -> bool {
        let ids = self.hs_contacts(human);
        let id = record.strip_prefix("hs:").unwrap_or(record);
        let snapshot = self.app.ledger().snapshot().expect("snapshot");
        primary_only(&snapshot, "marketing", ids.iter().map(String::as_str).collect()).contains(&id)
    }

    /// The human's live records that are opted out (`sf:ID`, `hs:ID`).
    fn opted_out_records(&self, human: usize) -> BTreeSet<String> {
        let t = Some(&self.humans[human].token);
        let sf = sf_live(self.h).into_iter().filter(|r| r.token.as_ref() == t && r.opt_out);
        let hs = hs_live(self.h).into_iter().filter(|c| c.1.as_ref() == t && c.2);
        sf.map(|r| format!("sf:{}", r.id)).chain(hs.map(|c| format!("hs:{}", c.0))).collect()
    }

    /// An opted-out record was deleted. If it was the only one and the ledger did not have the
    /// opt-out yet, nobody can know it any more (a deleted record's fields are gone): the
    /// human is no longer required to be opted out.
    fn forget_opt_out(&mut self, human: usize, deleted_was_out: bool) {
        if !deleted_was_out || !self.opted_out_records(human).is_empty() {
            return;
        }
        let t = self.humans[human].token.clone();
        let snapshot = self.app.ledger().snapshot().expect("snapshot");
        let ledger_has_it = snapshot.iter().any(|p| {
            p.fields.get(&Field::EmailOptOut).map(String::as_str) == Some("true")
                && p.fields.get(&Field::Email).and_then(|e| token_of(e)).as_ref() == Some(&t)
        });
        if !ledger_has_it {
            self.humans[human].opted_out = false;
            self.note(format!("{t}: its only opt-out was deleted before leadsync had it"));
        }
    }

    /// A vendor dropped a record (`sf:ID`, `hs:ID`) of the human, or merged it away: edits made
    /// on it before are not the human's last word; after a merge neither is an earlier email
    /// (the survivor keeps its own).
    fn supersede(&mut self, human: usize, record: &str, merged: bool) {
        for e in self.edits.iter_mut().filter(|e| e.human == human) {
            if e.record == record || (merged && e.sf_field == "Email") {
                e.superseded = true;
            }
        }
    }

    /// A Salesforce merge filled the master's blanks from the loser: those values are the
    /// human's word at the merge (the lead's decision: the person merging sees and keeps
    /// them, as in the real merge wizard), even when the loser held a value older than an edit
    /// leadsync had not pushed there yet (seed 225). Salesforce dates records, not fields, so
    /// read after the merge they are the newest the engine can know. Each plain field the
    /// merge changed on the master is recorded as that human's latest edit of it, made at the
    /// merge on the master. Only a change the merge itself made counts: blank before, the
    /// loser's value after (a write racing between the reads would show otherwise).
    /// Demanded even when the master was not linked yet (a hand-made lead): the engine reads
    /// it whole, dated at the merge, whenever it first reads it, so no earlier read can hide
    /// the fill (`settled` guards edits whose record may join a person under older values).
    fn merge_fills(
        &mut self,
        human: usize,
        master: &str,
        (before, loser, after): (&Record, &Record, &Record),
        at: Instant,
        wall: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    ) {
        const PLAIN: [(&str, &str); 7] = [
            ("FirstName", "firstname"),
            ("LastName", "lastname"),
            ("Company", "company"),
            ("Title", "jobtitle"),
            ("Phone", "phone"),
            ("LeadSource", "leadsource"),
            ("Email", "email"),
        ];
        let text = |m: &Map<String, Value>, k: &str| {
            m.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string)
        };
        for (sf_field, hs_prop) in PLAIN {
            let Some(value) = text(after, sf_field) else { continue };
            if text(before, sf_field).is_some() || text(loser, sf_field).as_ref() != Some(&value) {
                continue;
            }
            let tok = self.humans[human].token.clone();
            self.note(format!(
                "sf-merge {tok} sf:{master} {sf_field}={value:?}: filled by the merge"
            ));
            self.edits.push(Edit {
                human,
                record: format!("sf:{master}"),
                sf_field,
                hs_prop,
                value,
                at,
                wall,
                settled: true,
                superseded: false,
            });
        }
    }

    /// The human as their records show them now (names and company may have been edited):
    /// a duplicate made from this is recognisably the same human, as a real one would be.
    fn current_identity(&self, human: usize) -> (String, String, String) {
        let h = &self.humans[human];
        let mut out = (h.first.clone(), h.last.clone(), h.company.clone());
        if let Some(id) = self.hs_contacts(human).first()
            && let Some(p) = self.h.hubspot.get(id)
        {
            let get = |k: &str| p.get(k).cloned().flatten().filter(|v| !v.is_empty());
            out = (
                get("firstname").unwrap_or(out.0),
                get("lastname").unwrap_or(out.1),
                get("company").unwrap_or(out.2),
            );
        } else if let Some(id) = self.sf_leads(human).first()
            && let Some(r) = self.h.salesforce.get("Lead", id)
        {
            let get = |k: &str| {
                r.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string)
            };
            out = (
                get("FirstName").unwrap_or(out.0),
                get("LastName").unwrap_or(out.1),
                get("Company").unwrap_or(out.2),
            );
        }
        out
    }

    /// A duplicate copies names and company from one of the human's records, which may still
    /// hold a value older than the human's last edit of that field elsewhere (the engine had
    /// not pushed it there yet). Made after that edit, the copy is the newer value: once the
    /// engine links the duplicate, `most recent` rightly takes it (seed 49: a Salesforce
    /// FirstName edit, then a HubSpot duplicate still carrying the old first name); while it
    /// stays a person of its own, the edit stands. Which of the two the human's records end
    /// with depends on whether the engine linked the duplicate, so such a copy is recorded as
    /// the last edit of that field, made on the duplicate and not demanded (`settled: false`),
    /// and the human is blurred.
    fn copied_values(&mut self, human: usize, record: &str, [first, last, company]: [String; 3]) {
        let at = Instant::now();
        let now = chrono::Utc::now();
        let copied = [
            ("FirstName", "firstname", first),
            ("LastName", "lastname", last),
            ("Company", "company", company),
        ];
        for (sf_field, hs_prop, value) in copied {
            let last_edit =
                self.edits.iter().rev().find(|e| e.human == human && e.sf_field == sf_field);
            if last_edit.is_none_or(|e| e.value == value) {
                continue;
            }
            let tok = self.humans[human].token.clone();
            self.note(format!(
                "{tok} {record} {sf_field}={value:?}: copied, older than the last edit"
            ));
            // And the duplicate no longer looks like the person, who took the edit: it may
            // stay a person of its own (seed 1770: a first name edited on one HubSpot
            // contact, a duplicate copying the other's older one), as in `hs_duplicate`.
            self.humans[human].blurred = true;
            self.edits.push(Edit {
                human,
                record: record.to_string(),
                sf_field,
                hs_prop,
                value,
                at,
                wall: (now, now),
                settled: false,
                superseded: false,
            });
        }
    }

    /// Records at a vendor that leadsync made for this human (live, not the driver's).
    fn leadsync_records(&self, human: usize, sf: bool) -> BTreeSet<String> {
        if sf {
            let mine = self.sf_leads(human);
            mine.into_iter().filter(|id| !self.known_sf.contains(id)).collect()
        } else {
            let mine = self.hs_contacts(human);
            mine.into_iter().filter(|id| !self.known_hs.contains(id)).collect()
        }
    }

    /// A second Salesforce lead of the human, as an import of the same person under the same
    /// email would make.
    fn sf_duplicate(&mut self, human: usize) {
        let (first, last, company) = self.current_identity(human);
        let copied = [first.clone(), last.clone(), company.clone()];
        let tok = self.humans[human].token.clone();
        let email = self
            .sf_leads(human)
            .first()
            .and_then(|id| self.h.salesforce.get("Lead", id))
            .and_then(|r| r.get("Email").and_then(Value::as_str).map(str::to_string))
            .or_else(|| {
                let id = self.hs_contacts(human).into_iter().next()?;
                self.h.hubspot.get(&id)?.get("email").cloned().flatten()
            });
        let Some(email) = email else {
            return self.note(format!("sf-duplicate {tok}: no email to copy, skipped"));
        };
        let before = self.leadsync_records(human, true);
        let lead = Map::from_iter([
            ("FirstName".to_string(), Value::String(first)),
            ("LastName".to_string(), Value::String(last)),
            ("Company".to_string(), Value::String(company)),
            ("Email".to_string(), Value::String(email)),
        ]);
        match self.h.salesforce.insert("Lead", lead) {
            Ok(id) => {
                self.known_sf.insert(id.clone());
                let made_at = chrono::Utc::now();
                self.dups.push(Dup { id: id.clone(), leadsync_before: before, made_at });
                self.note(format!("sf-duplicate {tok}: second salesforce lead sf:{id}"));
                self.copied_values(human, &format!("sf:{id}"), copied);
            }
            Err(e) => self.note(format!("sf-duplicate {tok}: refused: {e}")),
        }
    }

    async fn new_human(&mut self) {
        let i = self.humans.len();
        let seed: u64 = self.rng.random();
        let mut p = population::generate(1, seed).pop().expect("one person");
        let others: Vec<[Option<String>; 4]> = (0..i)
            .map(|h| {
                let (f, l, c) = self.current_identity(h);
                [Some(f), Some(l), Some(c), None]
            })
            .collect();
        let mut k = 0u64;
        while !distinct(&p, others.iter().cloned()) {
            k += 1;
            let other = seed.wrapping_add(k.wrapping_mul(0x9e37_79b9));
            p = population::generate(1, other).pop().expect("one person");
        }
        p.email = format!("t{i}x.{}", p.email);
        let (sf, hs) = match self.rng.random_range(0..3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let stage = self.pick(HS_STAGES);
        p.hs_stage = stage;
        let mut ids = Vec::new();
        if sf {
            match self.h.salesforce.insert("Lead", p.salesforce_lead(false)) {
                Ok(id) => {
                    self.known_sf.insert(id.clone());
                    ids.push(format!("sf:{id}"));
                }
                Err(e) => ids.push(format!("sf refused: {e}")),
            }
        }
        if sf && hs {
            // Made by hand in both, a moment apart: leadsync must link, not create.
            let pause = self.rng.random_range(0..150);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if hs {
            match self.h.hubspot.insert(p.hubspot_contact()) {
                Ok(id) => {
                    self.known_hs.insert(id.clone());
                    ids.push(format!("hs:{id}"));
                }
                Err(e) => ids.push(format!("hs refused: {e}")),
            }
        }
        self.note(format!("new t{i}x stage={stage} status={:?}: {}", p.sf_status, ids.join(" ")));
        self.humans.push(Human {
            token: format!("t{i}x"),
            first: p.first,
            last: p.last,
            company: p.company,
            opted_out: false,
            blurred: false,
            early_edits: BTreeSet::new(),
        });
    }

    fn hs_duplicate(&mut self, human: usize) {
        self.seq += 1;
        let (first, last, company) = self.current_identity(human);
        let copied = [first.clone(), last.clone(), company.clone()];
        // The duplicate copies the human's first HubSpot contact. When their Salesforce lead
        // holds another name or company (an edit not synced yet), the person may settle on the
        // lead's, and then the duplicate no longer looks like them, as if the lead had been
        // edited after it was made (seed 28: the lead's first name "Ada", the contact's and so
        // the duplicate's still "Amelia"; no rule ties "Amelia" to "Ada").
        let lead_differs = !self.hs_contacts(human).is_empty()
            && self.sf_leads(human).iter().any(|id| {
                self.h.salesforce.get("Lead", id).is_some_and(|r| {
                    let differs = |k: &str, copied: &str| {
                        r.get(k)
                            .and_then(Value::as_str)
                            .is_some_and(|v| !v.is_empty() && v != copied)
                    };
                    differs("FirstName", &first)
                        || differs("LastName", &last)
                        || differs("Company", &company)
                })
            });
        if lead_differs {
            self.humans[human].blurred = true;
        }
        let h = &self.humans[human];
        let email = format!("{}.alt{}.{}@mail.example", h.token, self.seq, ascii(&h.first));
        let props: BTreeMap<String, String> = [
            ("email".to_string(), email),
            ("firstname".to_string(), first),
            ("lastname".to_string(), last),
            ("company".to_string(), company),
        ]
        .into();
        let tok = h.token.clone();
        let before = self.leadsync_records(human, false);
        match self.h.hubspot.insert(props) {
            Ok(id) => {
                self.known_hs.insert(id.clone());
                let made_at = chrono::Utc::now();
                self.dups.push(Dup { id: id.clone(), leadsync_before: before, made_at });
                self.note(format!("duplicate {tok}: second hubspot contact hs:{id}"));
                self.copied_values(human, &format!("hs:{id}"), copied);
            }
            Err(e) => self.note(format!("duplicate {tok}: refused: {e}")),
        }
    }

    fn fault(&mut self, on_sf: bool) {
        let roll = self.rng.random_range(0..10);
        let count = self.rng.random_range(1..=3);
        if on_sf {
            let fault = match roll {
                0..6 => {
                    SfFault::ServerError { status: if roll % 2 == 0 { 500 } else { 503 }, count }
                }
                6..8 => SfFault::ExpireSessions,
                _ if self.slow_faults => {
                    SfFault::Delay { delay: Duration::from_millis(1500), count: 1 }
                }
                _ => SfFault::ServerError { status: 500, count: 1 },
            };
            self.note(format!("fault salesforce {fault:?}"));
            self.h.salesforce.inject(fault);
        } else {
            let fault = match roll {
                0..8 => HsFault::ServerError { status: [500, 502, 503, 504][roll % 4], count },
                _ if self.slow_faults => HsFault::RateLimited { count: 1 },
                _ => HsFault::ServerError { status: 502, count: 1 },
            };
            self.note(format!("fault hubspot {fault:?}"));
            self.h.hubspot.inject(fault);
        }
    }
}

/// The people of a seed, each email starting with the person's token, no two of them alike
/// to the fuzzy rules ([`distinct`]).
fn world(rng: &mut StdRng) -> Vec<Person> {
    let n = rng.random_range(6..=20);
    let seed: u64 = rng.random();
    let mut people = population::generate(n, seed);
    for i in 0..people.len() {
        let mut k = 0u64;
        while !distinct(&people[i], people[..i].iter().map(identity_of)) {
            k += 1;
            let other = seed.wrapping_add(k.wrapping_mul(0x9e37_79b9)).wrapping_add(i as u64);
            people[i] = population::generate(1, other).pop().expect("one person");
        }
    }
    for (i, p) in people.iter_mut().enumerate() {
        p.email = format!("t{i}x.{}", p.email);
    }
    people
}

/// Names, company and phone of a generated person, as [`distinct`] compares them.
fn identity_of(p: &Person) -> [Option<String>; 4] {
    [Some(p.first.clone()), Some(p.last.clone()), Some(p.company.clone()), Some(p.phone.clone())]
}

/// Whether `p` is a human the fuzzy rules can tell from each of `others` (scored without
/// emails: no rule above the review threshold fires). Two generated humans named "Luca" and
/// "Lucas Müller" at one company are one human to any fuzzy rule, which is what the matcher
/// is for: only a cap on two mailboxes at one domain kept such a pair in review, and an
/// email moved to another domain lifted it and folded them (seed 2899). A world with such a
/// pair asks the engine to tell apart what it is built to join, so the driver makes none.
/// (Edits may still drift one human's name into another's; that is not prevented.)
fn distinct(p: &Person, others: impl Iterator<Item = [Option<String>; 4]>) -> bool {
    let matcher = &MATCHER.matcher;
    let profile = |[f, l, c, ph]: &[Option<String>; 4]| {
        matcher.profile_of_values([None, f.as_deref(), l.as_deref(), c.as_deref(), ph.as_deref()])
    };
    let mine = profile(&identity_of(p));
    others.into_iter().all(|o| {
        matcher.score(&mine, &profile(&o)).is_none_or(|s| {
            matcher.verdict(s.value) == leadsync::identity::matcher::Verdict::NoMatch
        })
    })
}

/// The fuzzy rules of the configuration the test runs ([`DEMO_TOML`] matches with the
/// defaults).
static MATCHER: std::sync::LazyLock<leadsync::reconcile::Rules> =
    std::sync::LazyLock::new(leadsync::reconcile::Rules::salesforce_hubspot_defaults);

async fn run_seed(seed: u64, ops: &[Op]) -> Outcome {
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let people = world(&mut rng);
    let webhooks = rng.random_bool(0.5);
    let slow_faults = ops.contains(&Op::Fault) && rng.random_range(0..8) == 0;
    let op_count = rng.random_range(5..=25);
    let mode = format!(
        "{}{}",
        if webhooks { "webhooks" } else { "polling" },
        if slow_faults { ", with 429s and timeouts" } else { "" }
    );
    let mut failures = Vec::new();

    let h = Harness::start(SalesforceSimOptions::default(), HubspotSimOptions::unlimited())
        .await
        .expect("simulators start");
    h.seed(&people).expect("seeding");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = crate::helpers::fast_env();
    env.insert("LEADSYNC__SYNC__ERROR_BACKOFF_SECS".into(), "1".into());
    for sys in ["CRM", "MARKETING"] {
        env.insert(format!("LEADSYNC__SYSTEMS__{sys}__REQUEST_TIMEOUT_SECS"), "1".into());
    }
    // HubSpot's search never returns archived contacts; without webhooks an archive is learnt
    // from the sweep of the archived list, which ends every pass here (hourly by default).
    env.insert("LEADSYNC__SYSTEMS__MARKETING__ARCHIVED_SWEEP_EVERY".into(), "1".into());
    if webhooks {
        env.extend(h.webhook_env(1));
    }
    let settings = h
        .settings(Source::Inline(DEMO_TOML), &dir.path().join("ledger.db"), &env)
        .expect("settings");
    let app = Arc::new(App::build(&settings).expect("app builds"));
    if webhooks {
        let addr = app.bind_webhooks().await.expect("bind").expect("webhooks configured");
        h.point_webhooks_at(addr);
    }
    let (trigger, shutdown) = leadsync::shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(shutdown).await });

    let mut d = Driver {
        h: &h,
        app: &app,
        rng: StdRng::seed_from_u64(seed ^ 0x5eed_0f0b_e700),
        http: reqwest::Client::new(),
        humans: people
            .iter()
            .enumerate()
            .map(|(i, p)| Human {
                token: format!("t{i}x"),
                first: p.first.clone(),
                last: p.last.clone(),
                company: p.company.clone(),
                opted_out: (p.hs_opt_out && p.presence != Presence::CrmOnly)
                    || (p.sf_opt_out && p.presence != Presence::MarketingOnly),
                blurred: false,
                early_edits: BTreeSet::new(),
            })
            .collect(),
        known_sf: sf_live(&h).into_iter().map(|r| r.id).collect(),
        known_hs: hs_live(&h).into_iter().map(|c| c.0).collect(),
        deleted: Vec::new(),
        edits: Vec::new(),
        dups: Vec::new(),
        slow_faults,
        seq: 0,
        start: Instant::now(),
        log: Vec::new(),
    };
    d.note(format!("seed {seed}: {} humans, {mode}, {op_count} ops", people.len()));
    for (i, p) in people.iter().enumerate() {
        d.log.push(format!(
            "         t{i}x {:?} stage={} status={:?} hs_optout={} sf_optout={} sf_dup={}",
            p.presence, p.hs_stage, p.sf_status, p.hs_opt_out, p.sf_opt_out, p.sf_duplicate
        ));
    }

    // The ops, concurrently with the engine's first sync and whatever follows it.
    let total: u32 = ops.iter().map(|o| o.weight()).sum();
    let warmup = d.rng.random_range(0..400);
    tokio::time::sleep(Duration::from_millis(warmup)).await;
    for _ in 0..op_count {
        let mut roll = d.rng.random_range(0..total);
        let op = *ops
            .iter()
            .find(|o| {
                if roll < o.weight() {
                    return true;
                }
                roll -= o.weight();
                false
            })
            .expect("weights cover the roll");
        // Each op draws from its own generator, so that what one op finds (a record the
        // engine has or has not created yet) does not shift the ops after it: a seed always
        // replays the same op sequence.
        let op_rng = StdRng::seed_from_u64(d.rng.random());
        let main = std::mem::replace(&mut d.rng, op_rng);
        d.apply(op).await;
        d.rng = main;
        let pause = d.rng.random_range(0..80);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    d.note("ops done; waiting for the engine to quiesce".into());

    // Quiesce: injected faults are finite, so the engine works through them.
    if !wait_converged(&app, Duration::from_secs(40)).await {
        failures.push("quiescence: the engine did not settle within 40 s".into());
    }
    d.note("quiet; measuring writes over two full passes".into());

    // 3. No ping-pong: two full read passes over both systems, and not one write meanwhile.
    let writes = || (h.salesforce.stats().api_writes, h.hubspot.stats().api_writes);
    let quiet_since = chrono::Utc::now();
    let before = writes();
    let progress = app.progress();
    for _ in 0..2 {
        let t = Instant::now();
        let deadline = t + Duration::from_secs(10);
        while !progress.polled_through_since(t) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let after = writes();
    if after != before {
        failures.push(format!(
            "ping-pong: writes in the quiet period: salesforce {}, hubspot {}",
            after.0 - before.0,
            after.1 - before.1
        ));
    }
    d.note("checking".into());

    check(&d, &app, &mut failures);
    if !failures.is_empty() {
        // What the engine itself says, to tell a dead letter from a silent miss.
        let reviews = app.ledger().open_reviews().expect("reviews");
        for r in &reviews {
            d.note(format!(
                "engine review {} {} {} vs {:?} score {:?} rule {:?}",
                r.id, r.kind, r.lead_id, r.other_lead_id, r.score, r.rule
            ));
        }
        // On a replay, the engine's own timeline of each person a failure names.
        if std::env::var_os("LEADSYNC_CONVERGENCE_SEED").is_some()
            || std::env::var_os("LEADSYNC_CONVERGENCE_TRACE").is_some()
        {
            let named: BTreeSet<String> = failures
                .iter()
                .flat_map(|f| f.split(' ').skip_while(|w| *w != "lead").nth(1).map(str::to_string))
                .collect();
            let reader = leadsync::ledger::LedgerReader::open(&dir.path().join("ledger.db"));
            // ... and of persons pushed to over and over (a write loop names nobody).
            let mut named = named;
            // ... and the persons of each human a failure names by token (a lost edit).
            let tokens: BTreeSet<String> =
                failures.iter().flat_map(|f| f.split([' ', ':']).filter_map(token_of)).collect();
            for p in app.ledger().snapshot().expect("snapshot") {
                let tok = p.fields.get(&Field::Email).and_then(|e| token_of(e));
                if tok.is_some_and(|t| tokens.contains(&t)) {
                    named.insert(p.id.clone());
                }
            }
            if let Ok(r) = reader.as_ref() {
                for p in app.ledger().snapshot().expect("snapshot") {
                    let Ok(Some(t)) = r.trace(&p.id) else { continue };
                    let pushed: Vec<_> = t.events.iter().filter(|e| e.kind == "pushed").collect();
                    // ... and of persons written to in the quiet period (a late write).
                    let late = pushed.iter().any(|e| {
                        chrono::DateTime::parse_from_rfc3339(&e.at)
                            .is_ok_and(|at| at >= quiet_since)
                    });
                    if pushed.len() > 10 || late {
                        named.insert(p.id.clone());
                    }
                }
            }
            for id in named {
                let Some(Ok(Some(t))) = reader.as_ref().ok().map(|r| r.trace(&id)) else {
                    continue;
                };
                for e in t.events.iter().rev().take(40).rev() {
                    d.note(format!(
                        "engine trace {id}: {} {} {:?} {}",
                        e.at, e.kind, e.system, e.detail
                    ));
                }
            }
        }
        let g = app.ledger().gauges().expect("gauges");
        for (system, s) in &g.systems {
            d.note(format!(
                "engine {system}: inbox {} outbox {} notices {} dead {}",
                s.inbox_pending, s.outbox_pending, s.notices_pending, s.dead
            ));
        }
    }

    trigger.trigger();
    match tokio::time::timeout(Duration::from_secs(15), engine).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => failures.push(format!("engine stopped with an error: {e:#}")),
        Ok(Err(e)) => failures.push(format!("engine task failed: {e}")),
        Err(_) => failures.push("engine did not stop within 15 s".into()),
    }
    h.salesforce.stop();
    h.hubspot.stop();
    Outcome {
        seed,
        mode,
        humans: d.humans.len(),
        ops_run: op_count,
        failures,
        log: d.log,
        elapsed: started.elapsed(),
    }
}

/// Assertions 1, 2 and 4 (3 is measured over time by the caller).
fn check(d: &Driver<'_>, app: &App, failures: &mut Vec<String>) {
    let h = d.h;
    let snapshot = app.ledger().snapshot().expect("snapshot");
    let rules = app.rules();
    let sf = sf_live(h);
    let hs = hs_live(h);

    // 1. Every field of every linked record equals the ledger's resolved value.
    for dis in leadsync::verify::compare(&snapshot, &rules, &|s, r| h.fetch(s, r)) {
        failures.push(format!("fields: {dis}"));
    }
    // ... and links point at records that still stand for the person.
    let sf_leads: BTreeMap<&str, &SfRec> =
        sf.iter().filter(|r| r.object == "Lead").map(|r| (r.id.as_str(), r)).collect();
    let hs_ids: BTreeSet<&str> = hs.iter().map(|c| c.0.as_str()).collect();
    for p in &snapshot {
        for (system, remote) in &p.links {
            let problem = match (system.as_str(), remote.object_type.as_str()) {
                ("crm", "Lead") => match sf_leads.get(remote.id.as_str()) {
                    None => Some("deleted"),
                    Some(r) if r.converted => Some("a converted lead"),
                    Some(_) => None,
                },
                ("crm", "Contact") => {
                    (!sf.iter().any(|r| r.object == "Contact" && r.id == remote.id))
                        .then_some("deleted")
                }
                ("marketing", _) => {
                    (!hs_ids.contains(remote.id.as_str())).then_some("archived or merged away")
                }
                _ => Some("of an unknown kind"),
            };
            if let Some(problem) = problem {
                failures.push(format!(
                    "fields: lead {} keeps an open link to {system} {remote}, which is {problem}",
                    p.id
                ));
            }
        }
    }

    // ... and the driver's edits survived: the last edit of a plain field, made while the
    // human's records were all linked and with no other edit of that field in the two seconds
    // before it (a write racing the engine's push of an older value is a known lost update),
    // is what every live record of that human holds. Blanks are excluded: a blank does not
    // blank the person. Stages and statuses go through their own rules.
    let mut last: BTreeMap<(usize, &str), (&Edit, bool)> = BTreeMap::new();
    for e in &d.edits {
        let key = (e.human, e.sf_field);
        let isolated = last
            .get(&key)
            .is_none_or(|(prev, _)| e.at.duration_since(prev.at) >= Duration::from_secs(2));
        last.insert(key, (e, isolated));
    }
    for ((human, _), (e, isolated)) in last {
        let plain = ["FirstName", "LastName", "Company", "Title", "Phone", "LeadSource", "Email"];
        if !(isolated
            && e.settled
            && !e.superseded
            && !e.value.is_empty()
            && plain.contains(&e.sf_field))
        {
            continue;
        }
        // An edit made between leadsync's last read of the record and the landing of its
        // write of that field there may be overwritten by that write: the batch write endpoints
        // take no precondition (seeds 120, 201, 231).
        if raced_by_push(app, e) {
            continue;
        }
        // An email typed on the human's only HubSpot contact while leadsync's create of
        // another was on its way: the created contact, linked by its address, is the
        // person's primary, and the typed address stayed the hand-made one's own (seed 9037:
        // a duplicate's email edited 65 ms after the create was sent). At the edit the driver
        // could not tell (`superseded` looks at the contacts there were).
        if e.sf_field == "Email" && second_behind_a_create(app, &snapshot, e) {
            continue;
        }
        let tok = &d.humans[human].token;
        let same = |have: Option<&str>| match (e.sf_field, have) {
            ("Email", Some(h)) => h.trim().eq_ignore_ascii_case(&e.value),
            ("Phone", Some(h)) => {
                let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
                let (a, b) = (digits(h), digits(&e.value));
                !a.is_empty() && (a.ends_with(&b) || b.ends_with(&a))
            }
            (_, h) => h == Some(e.value.as_str()),
        };
        // A converted lead lives on as a contact, which is one of the human's records there
        // (and the primary when it carries the oldest link): a lead made by hand after the
        // conversion is a second record, not the one the person's fields go to (seed 251).
        let sf_mine: Vec<&str> = sf
            .iter()
            .filter(|r| !r.converted && r.token.as_ref() == Some(tok))
            .map(|r| r.id.as_str())
            .collect();
        let hs_mine: Vec<&str> =
            hs.iter().filter(|c| c.1.as_ref() == Some(tok)).map(|c| c.0.as_str()).collect();
        // Of several records of one human in one system, the primary (its first link) gets
        // the person's fields, the others opt-outs only (ARCHITECTURE.md).
        // A human who is two persons (allowed above: a blurred duplicate, two mailboxes at
        // one domain tied by a review) holds the edit on the edited record's person; the
        // other person keeps fields of its own. Records no person links stay in.
        let owner = e.record.split_once(':').and_then(|(side, id)| {
            let system = if side == "sf" { "crm" } else { "marketing" };
            snapshot.iter().find(|p| p.links.iter().any(|(s, r)| s == system && r.id == id))
        });
        let of_owner = |system: &str, id: &str| {
            let linked_to = |p: &leadsync::ledger::LeadSnapshot| {
                p.links.iter().any(|(s, r)| s == system && r.id == id)
            };
            owner.is_none_or(|o| linked_to(o) || !snapshot.iter().any(linked_to))
        };
        let sf_mine: Vec<&str> = sf_mine.into_iter().filter(|id| of_owner("crm", id)).collect();
        let hs_mine: Vec<&str> =
            hs_mine.into_iter().filter(|id| of_owner("marketing", id)).collect();
        let sf_mine = primary_only(&snapshot, "crm", sf_mine);
        let hs_mine = primary_only(&snapshot, "marketing", hs_mine);
        for r in sf_mine {
            let object = sf.iter().find(|x| x.id == r).map_or("Lead", |x| x.object);
            // A contact has no company of its own: its account, named at the conversion.
            if object == "Contact" && e.sf_field == "Company" {
                continue;
            }
            let record = h.salesforce.get(object, r).unwrap_or_default();
            let have = record.get(e.sf_field).and_then(Value::as_str);
            if !same(have) {
                failures.push(format!(
                    "lost edit: {tok} {}={:?} was the last edit, but salesforce {object} {r} \
                     holds {have:?}",
                    e.sf_field, e.value
                ));
            }
        }
        for id in hs_mine {
            let props = h.hubspot.get(id).unwrap_or_default();
            let have = props.get(e.hs_prop).cloned().flatten();
            if !same(have.as_deref()) {
                failures.push(format!(
                    "lost edit: {tok} {}={:?} was the last edit, but hubspot contact {id} holds \
                     {have:?}",
                    e.hs_prop, e.value
                ));
            }
        }
    }

    // Two persons of one human whose emails are two mailboxes at one (non-free-mail) domain
    // score in the matcher's review band by design (two mailboxes at one employer are often
    // two people): the engine must ask, with an open duplicate review, not link silently.
    let reviews = app.ledger().open_reviews().expect("reviews");
    let asked = |a: &str, b: &str| {
        let domain = |id: &str| {
            let p = snapshot.iter().find(|p| p.id == id)?;
            let e = p.fields.get(&Field::Email)?.trim().to_lowercase();
            e.rsplit_once('@').map(|(_, d)| d.to_string())
        };
        domain(a).is_some_and(|x| Some(x) == domain(b))
            && reviews.iter().any(|r| {
                r.kind == "duplicate"
                    && ((r.lead_id == a && r.other_lead_id.as_deref() == Some(b))
                        || (r.lead_id == b && r.other_lead_id.as_deref() == Some(a)))
            })
    };
    // Persons all tied together by such reviews, directly or through one another (seed
    // 3595: a human's email moved to `mail.example`, where two duplicates of theirs live; the
    // reviews ran duplicate to person and duplicate to duplicate, a chain, not a star).
    let tied = |persons: &BTreeSet<&str>| {
        let Some(first) = persons.iter().next() else { return false };
        let mut reached: BTreeSet<&str> = BTreeSet::from([*first]);
        let mut frontier = vec![*first];
        while let Some(a) = frontier.pop() {
            for b in persons {
                if !reached.contains(b) && asked(a, b) {
                    reached.insert(b);
                    frontier.push(b);
                }
            }
        }
        persons.len() > 1 && reached.len() == persons.len()
    };
    // 2. No person created twice at a vendor.
    for (i, human) in d.humans.iter().enumerate() {
        let tok = Some(&human.token);
        // Salesforce: leads not converted, and contacts (a converted lead lives on as one).
        let sf_mine: Vec<&SfRec> =
            sf.iter().filter(|r| r.token.as_ref() == tok && !r.converted).collect();
        let hs_mine: Vec<&str> =
            hs.iter().filter(|c| c.1.as_ref() == tok).map(|c| c.0.as_str()).collect();
        for (system, ids) in [
            ("crm", sf_mine.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()),
            ("marketing", hs_mine.clone()),
        ] {
            let known = if system == "crm" { &d.known_sf } else { &d.known_hs };
            let created: Vec<&str> =
                ids.iter().copied().filter(|id| !known.contains(*id)).collect();
            // A blurred human's duplicate may be a person of its own (see the identity check):
            // then each person's records are checked on their own.
            // So may a human who is two persons tied by an open duplicate review (two
            // mailboxes at one domain, see `asked`): with `review_holds_creates` off, as by
            // default, each person is created where the other has a record (seed 1862).
            let person_of = |id: &str| {
                snapshot
                    .iter()
                    .find(|p| p.links.iter().any(|(s, r)| s == system && r.id == id))
                    .map_or("?", |p| p.id.as_str())
            };
            let persons: BTreeSet<&str> = ids.iter().map(|id| person_of(id)).collect();
            let split = !persons.contains("?") && tied(&persons);
            let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for id in &ids {
                let person = person_of(id);
                let key = if human.blurred || split { person } else { "" };
                groups.entry(key.to_string()).or_default().push(id);
            }
            for ids in groups.values() {
                let created: Vec<&str> =
                    ids.iter().copied().filter(|id| !known.contains(*id)).collect();
                // A duplicate the driver made on purpose next to a record leadsync had
                // already made is not a record leadsync duplicated; nor is one made after the
                // read that cleared leadsync's create had started (that read could not see
                // it, and no engine can create without some last read before the create).
                let after_ours = |id: &str| {
                    d.dups.iter().any(|x| {
                        x.id == id
                            && created.iter().any(|c| {
                                x.leadsync_before.contains(*c)
                                    || create_cleared_at(app, system, c)
                                        .is_some_and(|r| x.made_at > r)
                            })
                    })
                };
                let theirs =
                    ids.len() - created.len() - ids.iter().filter(|id| after_ours(id)).count();
                // Records leadsync made for persons that a duplicate review tied (the
                // matcher's review band), folded into one since (a vendor merge, say): the
                // documented default is to link and report, not to merge at the vendor (seed
                // 1710: a Salesforce duplicate with a stale address, each person created at
                // HubSpot, then the two leads merged).
                let reviewed_apart =
                    created.len() > 1 && made_for_reviewed_persons(app, system, &created);
                if (created.len() > 1 && !reviewed_apart) || (!created.is_empty() && theirs > 0) {
                    // Named as `lead ID`, so that a replay prints that person's trace.
                    let lead = snapshot
                        .iter()
                        .find(|p| p.links.iter().any(|(_, r)| ids.contains(&r.id.as_str())))
                        .map_or("?", |p| p.id.as_str());
                    failures.push(format!(
                        "duplicates: lead {lead} - {} has {} live record(s) at {system} made by \
                         hand and {} made by leadsync: {ids:?}",
                        human.token,
                        theirs,
                        created.len()
                    ));
                }
            }
            for del in d.deleted.iter().filter(|x| x.human == i && x.system == system) {
                // A duplicate the driver made after the read that cleared leadsync's create
                // had started, and deleted while the create was on its way, was not there for
                // the engine to see (seed 113 under load: the create went out 30 ms after the
                // delete, which the engine read 50 ms later): the create is not its undoing.
                let unseen = |c: &str| {
                    d.dups.iter().any(|x| {
                        x.id == del.id
                            && create_cleared_at(app, system, c).is_some_and(|r| x.made_at > r)
                    })
                };
                let back: Vec<&str> = created
                    .iter()
                    .copied()
                    .filter(|id| !del.live_after.contains(*id) && !unseen(id))
                    .collect();
                if !back.is_empty() {
                    failures.push(format!(
                        "duplicates: a delete was undone: {} got {back:?} at {system} after \
                         the driver deleted a record",
                        human.token
                    ));
                }
            }
        }
    }

    // 4. Identity: every live record linked exactly once, one human per person and one
    // person per human, opt-outs kept.
    let mut linked: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for p in &snapshot {
        for (system, remote) in &p.links {
            linked.entry((system.clone(), remote.id.clone())).or_default().push(p.id.as_str());
        }
    }
    let live_records = sf
        .iter()
        .filter(|r| r.object == "Lead" && !r.converted)
        .map(|r| ("crm", r.id.as_str(), r.token.clone()))
        .chain(hs.iter().map(|c| ("marketing", c.0.as_str(), c.1.clone())));
    let mut person_tokens: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut human_persons: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (system, id, token) in live_records {
        let persons =
            linked.get(&(system.to_string(), id.to_string())).cloned().unwrap_or_default();
        if persons.len() != 1 {
            failures.push(format!(
                "identity: live {system} record {id} ({}) is linked to {} ledger persons",
                token.as_deref().unwrap_or("no token"),
                persons.len()
            ));
        }
        if let Some(t) = token {
            for p in persons {
                person_tokens.entry(p).or_default().insert(t.clone());
                human_persons.entry(t.clone()).or_default().insert(p);
            }
        }
    }
    for (p, tokens) in &person_tokens {
        if tokens.len() > 1 {
            failures.push(format!("identity: lead {p} links records of humans {tokens:?}"));
        }
    }
    // Humans who are several persons tied by open reviews: consent crosses a person's records,
    // not a review (the engine cannot know the two are one), so their opt-outs are checked per
    // person, as a blurred human's.
    let mut split_by_review: BTreeSet<&str> = BTreeSet::new();
    for (t, persons) in &human_persons {
        let blurred = d.humans.iter().any(|x| &x.token == t && x.blurred);
        let in_review = tied(persons);
        if persons.len() > 1 && in_review {
            split_by_review.insert(t.as_str());
        }
        if persons.len() > 1 && !blurred && !in_review {
            failures.push(format!(
                "identity: human {t} is {} ledger persons: {persons:?}",
                persons.len()
            ));
        }
    }
    let apart = |x: &Human| x.blurred || split_by_review.contains(x.token.as_str());
    for human in d.humans.iter().filter(|x| x.opted_out && !apart(x)) {
        let tok = Some(&human.token);
        for r in sf.iter().filter(|r| r.token.as_ref() == tok && !r.converted && !r.opt_out) {
            failures.push(format!(
                "opt-out: {} opted out, but salesforce {} {} is not",
                human.token, r.object, r.id
            ));
        }
        for c in hs.iter().filter(|c| c.1.as_ref() == tok && !c.2) {
            failures.push(format!(
                "opt-out: {} opted out, but hubspot contact {} is not",
                human.token, c.0
            ));
        }
        for p in human_persons.get(&human.token).into_iter().flatten() {
            let ledger = snapshot.iter().find(|l| l.id == *p);
            if ledger.and_then(|l| l.fields.get(&Field::EmailOptOut)).map(String::as_str)
                != Some("true")
            {
                failures.push(format!(
                    "opt-out: {} opted out, but ledger person {p} is not",
                    human.token
                ));
            }
        }
    }
    // A blurred human's persons may be apart (see above): an opt-out holds per person. Every
    // person with an opted-out live record is opted out in the ledger and on all its records.
    for human in d.humans.iter().filter(|x| x.opted_out && apart(x)) {
        let tok = Some(&human.token);
        let records = sf
            .iter()
            .filter(|r| r.token.as_ref() == tok && !r.converted)
            .map(|r| ("crm", r.id.as_str(), r.opt_out))
            .chain(
                hs.iter().filter(|c| c.1.as_ref() == tok).map(|c| ("marketing", c.0.as_str(), c.2)),
            );
        let mut persons: BTreeMap<&str, Vec<(&str, &str, bool)>> = BTreeMap::new();
        for (system, id, out) in records {
            if let Some(p) =
                snapshot.iter().find(|p| p.links.iter().any(|(s, r)| s == system && r.id == id))
            {
                persons.entry(p.id.as_str()).or_default().push((system, id, out));
            }
        }
        for (p, recs) in persons.iter().filter(|(_, recs)| recs.iter().any(|r| r.2)) {
            for (system, id, _) in recs.iter().filter(|r| !r.2) {
                failures.push(format!(
                    "opt-out: {} opted out on a record of person {p}, but {system} {id} is not",
                    human.token
                ));
            }
            let ledger = snapshot.iter().find(|l| l.id == *p);
            if ledger.and_then(|l| l.fields.get(&Field::EmailOptOut)).map(String::as_str)
                != Some("true")
            {
                failures.push(format!(
                    "opt-out: {} opted out on a record of person {p}, which is not",
                    human.token
                ));
            }
        }
    }
}

/// When the read that cleared leadsync's create of `system:id` started, from the engine's
/// audit of that create (`cleared_by_read`).
/// Whether leadsync made each of these records (`system`, ids) for a different person, and a
/// duplicate review tied every two of those persons: persons the matcher put in its review
/// band, each created where the other had a record (`review_holds_creates` off, the default),
/// and folded into one person since. The trail of the person the records are linked to holds
/// the creates and reviews of the persons folded into it.
fn made_for_reviewed_persons(app: &App, system: &str, ids: &[&str]) -> bool {
    let Ok(reader) = leadsync::ledger::LedgerReader::open(app.ledger().path()) else {
        return false;
    };
    let Some(first) = ids.first() else { return false };
    let Ok(Some(trace)) = reader.trace(&format!("{system}:{first}")) else { return false };
    let made_for = |id: &str| create_event(&trace, id)?.lead.clone();
    let Some(persons) = ids.iter().map(|id| made_for(id)).collect::<Option<Vec<String>>>() else {
        return false;
    };
    let reviewed = |a: &str, b: &str| {
        trace.events.iter().any(|e| {
            e.kind == "review_duplicate"
                && e.lead.as_deref() == Some(a)
                && e.detail.get("other").and_then(|o| o.as_str()) == Some(b)
        })
    };
    let distinct: BTreeSet<&str> = persons.iter().map(String::as_str).collect();
    distinct.len() == persons.len()
        && persons
            .iter()
            .enumerate()
            .all(|(i, a)| persons[i + 1..].iter().all(|b| reviewed(a, b) || reviewed(b, a)))
}

/// Whether `e` (an edit of a HubSpot record) was made on a record that is now a second
/// contact of its person, behind a primary contact leadsync created whose create was sent
/// before the edit returned: a create in flight at the edit, which the driver's check of
/// primacy at the edit could not see.
fn second_behind_a_create(
    app: &App,
    snapshot: &[leadsync::ledger::LeadSnapshot],
    e: &Edit,
) -> bool {
    let Some(id) = e.record.strip_prefix("hs:") else { return false };
    let Some(person) =
        snapshot.iter().find(|p| p.links.iter().any(|(s, r)| s == "marketing" && r.id == id))
    else {
        return false;
    };
    let Some((_, primary)) = person.links.iter().find(|(s, _)| s == "marketing") else {
        return false;
    };
    if primary.id == id {
        return false;
    }
    create_sent_at(app, "marketing", &primary.id).is_some_and(|sent| sent < e.wall.1)
}

/// The `pushed` event of the create that made record `id`, in a trace.
fn create_event<'a>(
    trace: &'a leadsync::ledger::Trace,
    id: &str,
) -> Option<&'a leadsync::ledger::TraceEvent> {
    let suffix = format!("/{id}");
    trace.events.iter().find(|e| {
        e.kind == "pushed"
            && e.detail.get("created").and_then(|c| c.as_bool()) == Some(true)
            && e.detail.get("remote").and_then(|r| r.as_str()).is_some_and(|r| r.ends_with(&suffix))
    })
}

/// A time its create's audit holds (`sent_at`, `cleared_by_read`) for this record.
fn create_time(
    app: &App,
    system: &str,
    id: &str,
    key: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let reader = leadsync::ledger::LedgerReader::open(app.ledger().path()).ok()?;
    let trace = reader.trace(&format!("{system}:{id}")).ok()??;
    let at = create_event(&trace, id)?.detail.get(key)?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// When leadsync sent the create that made this record.
fn create_sent_at(app: &App, system: &str, id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    create_time(app, system, id, "sent_at")
}

/// When the read that cleared the create that made this record started.
fn create_cleared_at(app: &App, system: &str, id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    create_time(app, system, id, "cleared_by_read")
}

/// Whether the engine's trail shows a write of `e`'s field to `e`'s record that landed after
/// the edit was sent (answered no earlier) and was planned without a read of the record made
/// after the edit returned (none showing the edit stored before the write's `sent_at`; one
/// stored later but showing the old value had started before the edit): the engine could
/// not have known the edit, and the write may have gone over it.
fn raced_by_push(app: &App, e: &Edit) -> bool {
    let field = match e.sf_field {
        "FirstName" => "first_name",
        "LastName" => "last_name",
        "Company" => "company",
        "Title" => "title",
        "Phone" => "phone",
        "LeadSource" => "lead_source",
        "Email" => "email",
        _ => return false,
    };
    let Some((side, id)) = e.record.split_once(':') else { return false };
    let system = if side == "sf" { "crm" } else { "marketing" };
    let Ok(reader) = leadsync::ledger::LedgerReader::open(app.ledger().path()) else {
        return false;
    };
    let Ok(Some(trace)) = reader.trace(&format!("{system}:{id}")) else { return false };
    let parse = |v: &str| {
        chrono::DateTime::parse_from_rfc3339(v).ok().map(|t| t.with_timezone(&chrono::Utc))
    };
    let suffix = format!("/{id}");
    let of_record = |ev: &leadsync::ledger::TraceEvent| {
        ev.detail.get("remote").and_then(Value::as_str).is_some_and(|r| r.ends_with(&suffix))
    };
    // Reads of the record that saw the edit: stored after it returned and holding its value.
    // A read stored later that still holds the old value started before the edit (seed 4492
    // under load: the read that preceded the write was stored 20 ms after the edit returned
    // but showed the old address), so the engine had not seen it.
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let saw_edit = |ev: &leadsync::ledger::TraceEvent| {
        let held = ev.detail.get("fields").and_then(|f| f.get(field)).and_then(Value::as_str);
        held.is_some_and(|h| match field {
            "email" => h.trim().eq_ignore_ascii_case(e.value.trim()),
            "phone" => {
                let (a, b) = (digits(h), digits(&e.value));
                !a.is_empty() && (a.ends_with(&b) || b.ends_with(&a))
            }
            _ => h == e.value,
        })
    };
    let reads_after: Vec<chrono::DateTime<chrono::Utc>> = trace
        .events
        .iter()
        .filter(|ev| ev.kind == "change" && of_record(ev) && saw_edit(ev))
        .filter_map(|ev| parse(&ev.at))
        .filter(|t| *t > e.wall.1)
        .collect();
    trace.events.iter().any(|ev| {
        let Some(sent) = ev.detail.get("sent_at").and_then(Value::as_str).and_then(parse) else {
            return false;
        };
        ev.kind == "pushed"
            && of_record(ev)
            && ev
                .detail
                .get("fields")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(field)))
            && parse(&ev.at).is_some_and(|a| a >= e.wall.0)
            && !reads_after.iter().any(|r| *r < sent)
    })
}

/// Of one human's records in one system, the one their ledger person treats as primary (its
/// oldest open link there); all of them when there is one, or when none is linked.
fn primary_only<'a>(
    snapshot: &[leadsync::ledger::LeadSnapshot],
    system: &str,
    ids: Vec<&'a str>,
) -> Vec<&'a str> {
    if ids.len() < 2 {
        return ids;
    }
    for p in snapshot {
        if !p.links.iter().any(|(s, r)| s == system && ids.contains(&r.id.as_str())) {
            continue;
        }
        if let Some((_, first)) = p.links.iter().find(|(s, _)| s == system)
            && let Some(id) = ids.iter().find(|id| **id == first.id)
        {
            return vec![*id];
        }
    }
    ids
}

#[test]
fn tokens_are_read_from_the_email_local_part() {
    assert_eq!(token_of("t7x.olivia.smith7@acme.example").as_deref(), Some("t7x"));
    assert_eq!(token_of(" T12X.V3.Olivia@Mail.Example ").as_deref(), Some("t12x"));
    assert_eq!(token_of("t3x@acme.example").as_deref(), Some("t3x"));
    assert_eq!(token_of("tx.olivia@acme.example"), None);
    assert_eq!(token_of("olivia.t7x@acme.example"), None);
}
