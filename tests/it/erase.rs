//! Consent and erasure end to end: opt-outs cross over and are never undone, a resubscribing
//! mapping is refused, and `leadsync erase` (the real binary, beside a running engine) removes
//! a person at both simulators and from every ledger table for good.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use leadsync::domain::Field;
use leadsync::settings::{DEMO_TOML, Settings, Source};
use leadsync::sim::harness::{Harness, wait_converged};
use leadsync::sim::population::{self, Presence};

use crate::helpers::{fast_env, hs_by_email, sf_by_email, start_engine, start_harness};

/// Distinctive values, so that a scan of the ledger cannot confuse them with anyone else's.
const FIRST: &str = "Zebulon";
const LAST: &str = "Quagmire-Erasmus";
const PHONE_DIGITS: &str = "4155550199";

/// Every text or blob value in every table of the ledger, lower-cased, as `table.column=value`.
fn ledger_values(path: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open ledger read-only");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).expect("select");
        let cols: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            for (i, col) in cols.iter().enumerate() {
                if let rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) =
                    row.get_ref(i).expect("value")
                {
                    out.push(format!(
                        "{table}.{col}={}",
                        String::from_utf8_lossy(b).to_lowercase()
                    ));
                }
            }
        }
    }
    out
}

/// The values of the person found anywhere in the ledger.
fn leaks(path: &Path, email: &str) -> Vec<String> {
    let needles =
        [email.to_lowercase(), FIRST.to_lowercase(), LAST.to_lowercase(), PHONE_DIGITS.to_string()];
    ledger_values(path)
        .into_iter()
        .filter(|v| {
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            needles[..3].iter().any(|n| v.contains(n.as_str())) || digits.contains(&needles[3])
        })
        .collect()
}

fn erase_cmd(
    config: &Path,
    env: &HashMap<String, String>,
    email: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["erase", email, "--config"])
        .arg(config)
        .args(extra)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("run leadsync erase");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hs_count(h: &Harness, email: &str) -> usize {
    hs_by_email(h).get(&email.to_lowercase()).map_or(0, Vec::len)
}

fn sf_count(h: &Harness, email: &str) -> usize {
    let contacts = h
        .salesforce
        .all("Contact")
        .iter()
        .filter(|c| {
            c.get("Email").and_then(|v| v.as_str()).is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
        .count();
    sf_by_email(h).get(&email.to_lowercase()).map_or(0, Vec::len) + contacts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_removes_the_person_everywhere_and_a_later_poll_does_not_bring_them_back() {
    let people = population::generate(60, 5);
    let h = start_harness(&people).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let (app, trigger, engine) = start_engine(&h, &dir).await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "first sync");

    // A person in both systems, given distinctive values by hand so the ledger scan below
    // cannot mistake anyone else's for theirs.
    let p = people.iter().find(|p| p.presence == Presence::Both).expect("someone in both");
    let email = p.email.clone();
    let hs_id = {
        let all = h.hubspot.all();
        all.iter()
            .find(|(_, c)| {
                c.get("email")
                    .and_then(|e| e.as_deref())
                    .is_some_and(|e| e.eq_ignore_ascii_case(&email))
            })
            .map(|(id, _)| id.clone())
            .expect("contact")
    };
    let props: BTreeMap<String, String> =
        [("firstname", FIRST), ("lastname", LAST), ("phone", "+1 415 555 0199")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    h.hubspot.ui_update(&hs_id, props).expect("ui update");
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "rename synced");
    let person = app
        .ledger()
        .snapshot()
        .expect("snapshot")
        .into_iter()
        .find(|l| l.fields.get(&Field::Email).is_some_and(|e| e.eq_ignore_ascii_case(&email)))
        .expect("person in the ledger");
    assert_eq!(person.fields.get(&Field::LastName).map(String::as_str), Some(LAST));
    assert!(!leaks(&ledger, &email).is_empty(), "the scan finds the values before the erasure");
    assert!(hs_count(&h, &email) >= 1 && sf_count(&h, &email) >= 1);
    let others_before = app.ledger().snapshot().expect("snapshot").len() - 1;

    let config = dir.path().join("leadsync.toml");
    std::fs::write(&config, DEMO_TOML).expect("config");
    let mut env = h.env(&ledger);
    env.extend(fast_env());

    // Without a terminal, --yes is required, and nothing is touched.
    let (code, _, err) = erase_cmd(&config, &env, &email, &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(hs_count(&h, &email) >= 1 && sf_count(&h, &email) >= 1);

    // The erasure, beside the running engine.
    let (code, out, err) = erase_cmd(&config, &env, &email, &["--yes", "--json"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["ledger"]["persons"], 1, "{report:#}");
    for sys in report["systems"].as_array().expect("systems") {
        assert!(!sys["deleted"].as_array().expect("deleted").is_empty(), "{report:#}");
        assert!(sys["failed"].as_array().expect("failed").is_empty(), "{report:#}");
    }
    assert_eq!(hs_count(&h, &email), 0, "gone from HubSpot");
    assert_eq!(sf_count(&h, &email), 0, "gone from Salesforce (in its recycle bin)");
    assert!(h.hubspot.get(&hs_id).is_none(), "GDPR delete: not even archived");

    // Recreated by hand at both vendors; the engine reads them and must not import them.
    let mut hs_props = BTreeMap::new();
    hs_props.insert("email".to_string(), email.to_uppercase());
    hs_props.insert("firstname".to_string(), FIRST.to_string());
    hs_props.insert("lastname".to_string(), LAST.to_string());
    hs_props.insert("lifecyclestage".to_string(), "marketingqualifiedlead".to_string());
    h.hubspot.insert(hs_props).expect("hubspot insert");
    let mut lead = serde_json::Map::new();
    for (k, v) in
        [("Email", email.as_str()), ("FirstName", FIRST), ("LastName", LAST), ("Company", "Acme")]
    {
        lead.insert(k.into(), serde_json::Value::String(v.into()));
    }
    lead.insert("Status".into(), "Open - Not Contacted".into());
    h.salesforce.insert("Lead", lead).expect("salesforce insert");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "after the recreation");

    let snapshot = app.ledger().snapshot().expect("snapshot");
    assert!(
        !snapshot
            .iter()
            .any(|l| l.fields.get(&Field::Email).is_some_and(|e| e.eq_ignore_ascii_case(&email))),
        "the person came back"
    );
    assert_eq!(snapshot.len(), others_before, "everyone else stays");
    assert_eq!(hs_count(&h, &email), 1, "no copy pushed to HubSpot");
    assert_eq!(sf_count(&h, &email), 1, "no copy pushed to Salesforce");
    assert_eq!(leaks(&ledger, &email), Vec::<String>::new(), "no value left in the ledger");

    // Erasing again deletes the hand-made records; a third time finds nothing and succeeds.
    let (code, out, err) = erase_cmd(&config, &env, &email, &["--yes"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!((hs_count(&h, &email), sf_count(&h, &email)), (0, 0));
    let (code, out, err) = erase_cmd(&config, &env, &email, &["--yes"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.starts_with("nothing found"), "{out}");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_is_never_undone_by_a_hand_made_opt_in_elsewhere() {
    let people = population::generate(40, 9);
    let h = start_harness(&people).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, trigger, engine) = start_engine(&h, &dir).await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "first sync");
    let p = people
        .iter()
        .find(|p| p.presence == Presence::Both && !p.hs_opt_out && !p.sf_opt_out && !p.sf_duplicate)
        .expect("someone subscribed in both");

    // The person unsubscribes in HubSpot; the opt-out reaches Salesforce.
    h.hubspot.ui_unsubscribe(&p.email);
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let lead = sf_by_email(&h)[&p.email.to_lowercase()][0].clone();
    assert_eq!(lead["HasOptedOutOfEmail"], serde_json::Value::Bool(true));

    // A sales user ticks the box off again by hand. leadsync does not carry that to HubSpot
    // (HubSpot forbids it, and consent only tightens): the contact stays unsubscribed, and the
    // person's opt-out is written back to the lead.
    let id = lead["Id"].as_str().expect("id").to_string();
    let mut m = serde_json::Map::new();
    m.insert("HasOptedOutOfEmail".into(), serde_json::Value::Bool(false));
    h.salesforce.ui_update("Lead", &id, m).expect("ui update");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let hs = hs_by_email(&h);
    assert_eq!(hs[&p.email.to_lowercase()][0]["hs_email_optout"].as_deref(), Some("true"));
    let person = app
        .ledger()
        .snapshot()
        .expect("snapshot")
        .into_iter()
        .find(|l| l.fields.get(&Field::Email).is_some_and(|e| e.eq_ignore_ascii_case(&p.email)))
        .expect("person");
    assert_eq!(person.fields.get(&Field::EmailOptOut).map(String::as_str), Some("true"));
    let lead = h.salesforce.get("Lead", &id).expect("lead");
    assert_eq!(lead["HasOptedOutOfEmail"], serde_json::Value::Bool(true), "opt-out written back");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}

fn load(toml: &str) -> Result<Settings, String> {
    let env: HashMap<String, String> = [("SF_SECRET", "s3cret"), ("HS_TOKEN", "pat-na1-x")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    Settings::load(Source::Inline(toml), &env).map_err(|e| e.to_string())
}

const BASE: &str = r#"
[ledger]
path = "/tmp/never-opened.db"

[systems.crm]
kind = "salesforce"
role = "crm"
login_url = "https://acme.my.salesforce.com"
client_id = "abc"
client_secret_env = "SF_SECRET"

[systems.marketing]
kind = "hubspot"
role = "marketing"
token_env = "HS_TOKEN"
"#;

#[test]
fn a_mapping_that_could_resubscribe_is_refused_at_load() {
    load(BASE).expect("the base config is valid");
    let sf = format!(
        "{BASE}\n[systems.crm.mapping.fields]\nemail = \"Email\"\nlast_name = \"LastName\"\n\
         company = \"Company\"\nlead_source = \"HasOptedOutOfEmail\"\n"
    );
    let err = load(&sf).expect_err("refused");
    assert!(err.contains("systems.crm.mapping.fields.lead_source"), "{err}");
    assert!(err.contains("only email_opt_out"), "{err}");
    let hs = format!(
        "{BASE}\n[systems.marketing.mapping.fields]\nemail = \"email\"\ntitle = \"hs_email_optout\"\n"
    );
    let err = load(&hs).expect_err("refused");
    assert!(err.contains("systems.marketing.mapping.fields.title"), "{err}");
}
