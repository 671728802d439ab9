//! The funnel report end to end: the real engine against both simulators, a scripted set of
//! people driven through the lifecycle the way the vendors' users would (HubSpot sign-ups, a
//! Salesforce status change, a HubSpot lifecycle move, a lead conversion, and an operator's
//! recycle and disqualification), then `leadsync report funnel --since 30d --format json`
//! (the real binary) against counts computed in this file from the script alone.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use leadsync::app::App;
use leadsync::contract::lifecycle::{LifecycleStage, NamedMove};
use leadsync::ledger::{LedgerReader, NamedOutcome};
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown;
use leadsync::sim::harness::{Harness, wait_converged};
use serde_json::{Value, json};

use crate::helpers::{CRM_WITH_NURTURE, fast_env, sf_by_email, start_harness, until};

/// The demo systems, a Salesforce "working" status that means accepted by sales (SAL), and
/// an MQL rule met by a webinar sign-up with a job title. A converted lead's status reports
/// an opportunity (`sync.status_implies_stage`'s default).
fn config() -> String {
    format!(
        r#"{DEMO_TOML}
{CRM_WITH_NURTURE}

[contract]
[contract.mapping]
status_stages = {{ working = "sal" }}

[contract.qualification.mql]
all = ["title is set", "lead_source is Webinar-LC"]
"#
    )
}

/// The script: each person's email and the stages they are taken through, in order. Every
/// person starts as a HubSpot contact at `lead`; `mql` is the rule (a title and the webinar
/// source at sign-up); each later stage is one user action, see [`drive`].
const SCRIPT: &[(&str, &[&str])] = &[
    ("lead.one@funnel.test", &["lead"]),
    ("lead.two@funnel.test", &["lead"]),
    ("lead.three@funnel.test", &["lead"]),
    ("mql.one@funnel.test", &["lead", "mql"]),
    ("mql.two@funnel.test", &["lead", "mql"]),
    ("sal.one@funnel.test", &["lead", "mql", "sal"]),
    ("sal.two@funnel.test", &["lead", "mql", "sal"]),
    ("sql.one@funnel.test", &["lead", "mql", "sal", "sql"]),
    ("opp.one@funnel.test", &["lead", "mql", "opportunity"]),
    ("recycled.one@funnel.test", &["lead", "mql", "recycled"]),
    ("disqualified.one@funnel.test", &["lead", "mql", "disqualified"]),
];

/// One report row's counts, as this file computes them and as the report gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    entered: u64,
    converted: Option<u64>,
    conversion_bp: Option<u64>,
    left: u64,
    recycled: u64,
    disqualified: u64,
    has_median: bool,
}

/// Position down the funnel; `None` for recycled and disqualified.
fn rank(stage: &str) -> Option<usize> {
    ["subscriber", "lead", "mql", "sal", "sql", "opportunity", "customer"]
        .iter()
        .position(|s| *s == stage)
}

/// A move that counts as converting out of `from`: further down the funnel; out of recycled,
/// qualifying again (MQL or further); never out of disqualified.
fn converts(from: &str, to: &str) -> bool {
    match (from, rank(to)) {
        (_, None) | ("disqualified", _) => false,
        ("recycled", Some(r)) => r >= 2,
        (f, Some(r)) => rank(f).is_some_and(|f| r > f),
    }
}

/// The report's definitions applied to the script: each person entered each stage of their
/// path once, in order, all within the window.
fn expected() -> BTreeMap<String, Row> {
    let stages = [
        "subscriber",
        "lead",
        "mql",
        "sal",
        "sql",
        "opportunity",
        "customer",
        "recycled",
        "disqualified",
    ];
    stages
        .iter()
        .map(|&stage| {
            let mut row = Row {
                entered: 0,
                converted: Some(0),
                conversion_bp: None,
                left: 0,
                recycled: 0,
                disqualified: 0,
                has_median: false,
            };
            for (_, path) in SCRIPT {
                let Some(i) = path.iter().position(|s| *s == stage) else { continue };
                let later = &path[i + 1..];
                row.entered += 1;
                if later.iter().any(|to| converts(stage, to)) {
                    row.converted = row.converted.map(|c| c + 1);
                }
                row.left += u64::from(!later.is_empty());
                row.recycled += u64::from(later.contains(&"recycled"));
                row.disqualified += u64::from(later.contains(&"disqualified"));
            }
            if stage == "disqualified" {
                row.converted = None;
            } else if row.entered > 0 {
                row.conversion_bp = row.converted.map(|c| c * 10_000 / row.entered);
            }
            row.has_median = row.left > 0;
            (stage.to_string(), row)
        })
        .collect()
}

fn reported(json: &Value) -> BTreeMap<String, Row> {
    let n = |v: &Value| v.as_u64();
    json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let row = Row {
                entered: n(&r["entered"]).expect("entered"),
                converted: n(&r["converted"]),
                conversion_bp: n(&r["conversion_bp"]),
                left: n(&r["left"]).expect("left"),
                recycled: n(&r["recycled"]).expect("recycled"),
                disqualified: n(&r["disqualified"]).expect("disqualified"),
                has_median: !r["median_secs_in_stage"].is_null(),
            };
            (r["stage"].as_str().expect("stage").to_string(), row)
        })
        .collect()
}

/// A HubSpot sign-up at `lead`; with `qualifies`, a title and the webinar source (the MQL
/// rule), else a plain web lead.
fn sign_up(h: &Harness, email: &str, qualifies: bool) {
    let mut props: BTreeMap<String, String> = [
        ("email", email),
        ("firstname", "Fen"),
        ("lastname", "Nel"),
        ("company", "Funnel Ltd"),
        ("lifecyclestage", "lead"),
        ("leadsource", if qualifies { "Webinar-LC" } else { "Web" }),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if qualifies {
        props.insert("jobtitle".into(), "Head of Ops".into());
    }
    h.hubspot.insert(props).expect("contact");
}

fn fields(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

/// Take one person one step: the user action that reports `stage`.
async fn drive(app: &Arc<App>, h: &Harness, email: &str, stage: &str) {
    let lead = || sf_by_email(h)[email][0]["Id"].as_str().expect("id").to_string();
    match stage {
        // Sales works the lead in Salesforce.
        "sal" => h
            .salesforce
            .ui_update("Lead", &lead(), fields(json!({"Status": "Working - Contacted"})))
            .expect("status"),
        // Marketing's view moves on in HubSpot.
        "sql" => {
            let id = h
                .hubspot
                .all()
                .into_iter()
                .find(|(_, p)| p.get("email").cloned().flatten().as_deref() == Some(email))
                .map(|(id, _)| id)
                .expect("contact");
            let props = [("lifecyclestage".to_string(), "salesqualifiedlead".to_string())];
            h.hubspot.ui_update(&id, props.into()).expect("lifecycle");
        }
        // Sales converts the lead (Account, Contact; the lead's status says converted).
        "opportunity" => {
            h.salesforce.convert_lead(&lead()).expect("convert");
        }
        // The operator's `leadsync stage` command, through its ledger call.
        "recycled" | "disqualified" => {
            let (name, reason) = if stage == "recycled" {
                (NamedMove::Recycle, "no_response")
            } else {
                (NamedMove::Disqualify, "not_a_fit")
            };
            let (ledger, rules, email) = (app.ledger(), app.rules(), email.to_string());
            let out = tokio::task::spawn_blocking(move || {
                ledger.named_transition(&email, name, reason, None, &rules, Utc::now())
            })
            .await
            .expect("join")
            .expect("ledger");
            assert!(matches!(out, NamedOutcome::Applied { .. }), "{out:?}");
        }
        other => panic!("the script has no action for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnel_report_matches_the_script_computed_independently() {
    let harness = start_harness(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger_path = dir.path().join("ledger.db");
    let toml = config();
    let settings =
        harness.settings(Source::Inline(&toml), &ledger_path, &fast_env()).expect("settings");
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "initial sync converges");

    for (email, path) in SCRIPT {
        sign_up(&harness, email, path.contains(&"mql"));
    }
    let reader = LedgerReader::open(&ledger_path).expect("reader");
    let stage_of = |email: &str| -> Option<LifecycleStage> {
        let person = reader.trace(email).ok().flatten()?;
        app.ledger().lifecycle(&person.lead_id).expect("read").and_then(|s| s.stage)
    };
    let parse = |s: &str| LifecycleStage::ALL.into_iter().find(|st| st.as_str() == s);
    until("every sign-up at its first stage, MQLs in Salesforce", 60, || {
        let sf = sf_by_email(&harness);
        SCRIPT.iter().all(|(email, path)| {
            let first = if path.contains(&"mql") { "mql" } else { "lead" };
            stage_of(email) == parse(first)
                && (first == "lead" || sf.get(*email).is_some_and(|l| l.len() == 1))
        })
    })
    .await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);

    // One step at a time per person, each awaited in the ledger before the next.
    for (email, path) in SCRIPT {
        for stage in path.iter().skip_while(|s| **s != "mql").skip(1) {
            drive(&app, &harness, email, stage).await;
            until(&format!("{email} at {stage}"), 30, || stage_of(email) == parse(stage)).await;
        }
    }
    assert!(wait_converged(&app, Duration::from_secs(60)).await);

    // The operator's command, on the ledger the daemon is still writing.
    let config = dir.path().join("leadsync.toml");
    std::fs::write(&config, &toml).expect("config");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_leadsync"))
            .args(["report", "funnel", "--since", "30d", "--format", "json", "-c"])
            .arg(&config)
            .env_clear()
            .envs(harness.env(&ledger_path))
            .output()
            .expect("run leadsync report");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("json")
    };
    let json = run();
    assert_eq!(json["persons"], SCRIPT.len(), "{json:#}");
    let want = expected();
    // The script means something: conversions, a stage left by some, recycled, disqualified.
    assert!(
        want["mql"].converted > Some(0) && want["mql"].left > want["mql"].converted.unwrap_or(0)
    );
    assert!(want["lead"].recycled == 1 && want["lead"].disqualified == 1);
    assert_eq!(reported(&json), want, "report (left) vs the script's right answers (right)");
    // Still converged afterwards: the stages the vendors hold did not move back.
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    assert_eq!(run()["rows"], json["rows"], "reproducible");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}
