//! Closed loop end to end: a seeded scenario of people, campaigns, touches at known times and
//! opportunities (won, open, lost, out of the window, without a person) in both simulators;
//! the engine runs with `[closed_loop]` on; `leadsync report attribution` (the real binary)
//! must give the numbers this test works out on its own from the scenario it built.
//!
//! The test's truth is the human: a person is an index into the generated population, whatever
//! records they have where. So the expected numbers hold only if the ledger linked a Salesforce
//! lead, its duplicate, the contact it was converted to and the HubSpot contact to one person.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Days, Utc};
use leadsync::app::App;
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown;
use leadsync::sim::harness::{Harness, wait_converged};
use leadsync::sim::population::{self, Person, Presence};
use serde_json::Value;

use crate::helpers::{fast_env, sf_by_email, start_harness};

const SF_CAMPAIGNS: [&str; 4] = ["Expo 2026", "Webinar: pipelines", "Newsletter", "Field event"];
const HS_EVENTS: [&str; 3] = ["Ebook download", "Pricing page form", "Demo request"];

/// A touch as the scenario made it; `key` orders every event of the scenario in time.
#[derive(Debug, Clone)]
struct Touch {
    person: usize,
    system: &'static str,
    campaign: String,
    responded: bool,
    key: i64,
}

#[derive(Debug, Clone)]
struct Opp {
    system: &'static str,
    /// The person on the primary contact role (or the only associated contact); `None`: none.
    person: Option<usize>,
    cents: i64,
    currency: Option<&'static str>,
    /// Counts as won revenue in the window.
    won_in_window: bool,
    /// Counts as pipeline (open; created during the test, so in the window).
    open: bool,
    key: i64,
}

#[derive(Default)]
struct Scenario {
    touches: Vec<Touch>,
    opps: Vec<Opp>,
    /// Salesforce campaign name -> id (touches name campaigns by id in the ledger).
    sf_campaign_ids: BTreeMap<String, String>,
    /// Event keys: Salesforce events in the order they happened, at `now_key + n` (the
    /// simulated clock moves a few ms between them); HubSpot conversions at their given time.
    now_key: i64,
    seq: i64,
}

impl Scenario {
    fn tick(&mut self, h: &Harness) -> i64 {
        // The Salesforce simulator's clock has millisecond resolution: 5 ms apart, two events
        // never share a timestamp, so the order of creation is the order in time.
        h.salesforce.advance_clock(Duration::from_millis(5));
        self.seq += 1;
        self.now_key + self.seq
    }
}

fn hs_ids(h: &Harness) -> HashMap<String, String> {
    h.hubspot
        .all()
        .into_iter()
        .filter_map(|(id, p)| p.get("email").cloned().flatten().map(|e| (e.to_lowercase(), id)))
        .collect()
}

/// Build the scenario in both simulators (before the engine starts, as an org that already
/// has history would look).
fn seed(h: &Harness, people: &[Person]) -> Scenario {
    let now = Utc::now();
    let mut sc = Scenario { now_key: now.timestamp_millis(), ..Default::default() };
    for name in SF_CAMPAIGNS {
        sc.sf_campaign_ids
            .insert(name.into(), h.salesforce.create_campaign(name).expect("campaign"));
    }
    let sf = sf_by_email(h);
    let hs = hs_ids(h);
    let sf_leads = |p: &Person| -> Vec<String> {
        sf.get(&p.email.to_lowercase())
            .map(|v| v.iter().map(|l| l["Id"].as_str().expect("id").to_string()).collect())
            .unwrap_or_default()
    };
    let hs_id = |p: &Person| hs.get(&p.email.to_lowercase()).cloned();
    let mut hs_conversions: BTreeMap<usize, usize> = BTreeMap::new();

    // Touches before any opportunity. Person 9 has none: their opportunity has no touch.
    for (i, p) in people.iter().enumerate().filter(|(i, _)| *i != 9) {
        if let Some(contact) = hs_id(p) {
            let n = (i / 3) % 3;
            for k in 0..n {
                // First 20+ days back, the second 3-7 days back: in time order, all in the past.
                let days = if k == 0 { 20 + i as i64 } else { 3 + (i % 5) as i64 };
                let at = now - Days::days(days) - Days::hours(1);
                let event = HS_EVENTS[(i + k) % 3];
                h.hubspot
                    .submit_form(&contact, event, None, Some(at.timestamp_millis()))
                    .expect("form");
                sc.touches.push(Touch {
                    person: i,
                    system: "marketing",
                    campaign: event.into(),
                    responded: true,
                    key: at.timestamp_millis(),
                });
            }
            hs_conversions.insert(i, n);
        }
        let leads = sf_leads(p);
        if let Some(lead) = leads.first() {
            for k in 0..(i + 1) % 4 {
                let name = SF_CAMPAIGNS[(i + k) % 4];
                let responded = (i + k) % 3 != 1;
                let status = if responded { "Responded" } else { "Sent" };
                let key = sc.tick(h);
                h.salesforce
                    .add_campaign_member(&sc.sf_campaign_ids[name], lead, status)
                    .expect("member");
                sc.touches.push(Touch {
                    person: i,
                    system: "crm",
                    campaign: sc.sf_campaign_ids[name].clone(),
                    responded,
                    key,
                });
            }
        }
        // A duplicate lead of the same human: its touches are theirs too.
        if let Some(dup) = leads.get(1) {
            let key = sc.tick(h);
            let id = sc.sf_campaign_ids["Field event"].clone();
            h.salesforce.add_campaign_member(&id, dup, "Responded").expect("dup member");
            sc.touches.push(Touch { person: i, system: "crm", campaign: id, responded: true, key });
        }
    }

    // Opportunities for every third person, in every state.
    let today = now.date_naive();
    let mut contacts: BTreeMap<usize, String> = BTreeMap::new();
    let mut convert = |i: usize, h: &Harness| -> String {
        contacts
            .entry(i)
            .or_insert_with(|| {
                let lead = sf_leads(&people[i]).into_iter().next().expect("a lead");
                h.salesforce.convert_lead(&lead).expect("convert")
            })
            .clone()
    };
    let sf_people: Vec<usize> =
        (0..people.len()).filter(|i| people[*i].presence != Presence::MarketingOnly).collect();
    let mut late: Vec<(usize, &'static str)> = Vec::new();
    // Plus one person in both systems with touches on both sides and an open opportunity:
    // first touch in HubSpot, last touch in Salesforce, one ledger person.
    let both = (0..people.len()).find(|i| {
        let responded_sf = (0..(i + 1) % 4).any(|k| (i + k) % 3 != 1);
        i % 3 != 0
            && *i != 9
            && people[*i].presence == Presence::Both
            && (i / 3) % 3 > 0
            && responded_sf
    });
    let owners: Vec<usize> = (0..people.len()).step_by(3).chain(both).collect();
    for i in owners {
        let p = &people[i];
        // 0: won in the window, 1: open, 2: won long ago, 3: lost.
        let state = if Some(i) == both { 1 } else { i % 4 };
        let cents = (1000 + 37 * i as i64) * 100 + i as i64;
        let (won_in_window, open) = (state == 0, state == 1);
        if p.presence == Presence::MarketingOnly {
            let contact = hs_id(p).expect("marketing contact");
            let (stage, close) = match state {
                0 => ("closedwon", today - Days::days(2)),
                1 => ("contractsent", today + Days::days(30)),
                2 => ("closedwon", today - Days::days(60)),
                _ => ("closedlost", today - Days::days(1)),
            };
            let currency = (i % 2 == 0).then_some("EUR");
            let mut props: BTreeMap<String, String> = [
                ("dealname", format!("Deal {i}")),
                ("amount", format!("{}.{:02}", cents / 100, cents % 100)),
                ("dealstage", stage.to_string()),
                ("closedate", close.format("%Y-%m-%d").to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if let Some(c) = currency {
                props.insert("deal_currency_code".into(), c.into());
            }
            let key = sc.tick(h);
            let deal = h.hubspot.create_deal(props).expect("deal");
            h.hubspot.associate_deal(&deal, &contact, true).expect("associate");
            sc.opps.push(Opp {
                system: "marketing",
                person: Some(i),
                cents,
                currency,
                won_in_window,
                open,
                key,
            });
            if hs_conversions.get(&i).copied().unwrap_or(0) < 2 {
                late.push((i, "marketing"));
            }
        } else {
            let contact = convert(i, h);
            let (stage, close) = match state {
                0 => ("Closed Won", today - Days::days(2)),
                1 => ("Prospecting", today + Days::days(30)),
                2 => ("Closed Won", today - Days::days(60)),
                _ => ("Closed Lost", today - Days::days(1)),
            };
            let key = sc.tick(h);
            let opp = h
                .salesforce
                .create_opportunity(
                    &format!("Opportunity {i}"),
                    Some(cents as f64 / 100.0),
                    stage,
                    &close.format("%Y-%m-%d").to_string(),
                    None,
                )
                .expect("opportunity");
            h.salesforce
                .add_contact_role(&opp, &contact, true, Some("Decision Maker"))
                .expect("role");
            // Someone else with touches as a second, non-primary contact: the primary decides.
            if let Some(other) = sf_people.iter().copied().find(|o| *o != i && (o + 1) % 4 == 3) {
                let c = convert(other, h);
                h.salesforce.add_contact_role(&opp, &c, false, Some("Influencer")).expect("role 2");
            }
            sc.opps.push(Opp {
                system: "crm",
                person: Some(i),
                cents,
                currency: None,
                won_in_window,
                open,
                key,
            });
            late.push((i, "crm"));
        }
    }
    // An open opportunity nobody is on, and a won one.
    for (n, stage) in [(1, "Negotiation/Review"), (2, "Closed Won")] {
        let key = sc.tick(h);
        h.salesforce
            .create_opportunity(
                &format!("Orphan {n}"),
                Some(500.25 * f64::from(n)),
                stage,
                &(today - Days::days(1)).format("%Y-%m-%d").to_string(),
                None,
            )
            .expect("orphan");
        sc.opps.push(Opp {
            system: "crm",
            person: None,
            cents: 50_025 * i64::from(n),
            currency: None,
            won_in_window: n == 2,
            open: n == 1,
            key,
        });
    }

    // Touches after the opportunities were created: never credited with them.
    for (i, system) in late {
        if system == "marketing" {
            let at = now + Days::days(2);
            let contact = hs_id(&people[i]).expect("contact");
            h.hubspot
                .submit_form(&contact, "Webinar replay", None, Some(at.timestamp_millis()))
                .expect("late form");
            sc.touches.push(Touch {
                person: i,
                system: "marketing",
                campaign: "Webinar replay".into(),
                responded: true,
                key: at.timestamp_millis(),
            });
        } else {
            // A campaign the person is not in yet (one membership per person and campaign).
            let joined = (i + 1) % 4;
            let name = SF_CAMPAIGNS[(i + joined) % 4];
            let key = sc.tick(h);
            let id = sc.sf_campaign_ids[name].clone();
            h.salesforce.add_campaign_member(&id, &contacts[&i], "Responded").expect("late");
            sc.touches.push(Touch { person: i, system: "crm", campaign: id, responded: true, key });
        }
    }
    sc
}

/// (model, source, system, campaign, currency) -> (won count, won cents, open count, open cents)
type Expected = BTreeMap<(String, String, String, String, String), (u64, i64, u64, i64)>;

/// The right answers, from the scenario alone.
fn expected(sc: &Scenario, only: Option<&str>) -> Expected {
    let mut out = Expected::new();
    let counted = |o: &&Opp| (o.won_in_window || o.open) && only.is_none_or(|s| s == o.system);
    for o in sc.opps.iter().filter(counted) {
        let mut before: Vec<&Touch> = sc
            .touches
            .iter()
            .filter(|t| Some(t.person) == o.person && t.responded && t.key < o.key)
            .collect();
        before.sort_by_key(|t| t.key);
        for (model, touch) in [("first_touch", before.first()), ("last_touch", before.last())] {
            let (source, system, campaign) = match (touch, o.person) {
                (Some(t), _) => ("campaign", t.system.to_string(), t.campaign.clone()),
                (None, Some(_)) => ("no_touch", String::new(), String::new()),
                (None, None) => ("no_person", String::new(), String::new()),
            };
            let key = (
                model.to_string(),
                source.to_string(),
                system,
                campaign,
                o.currency.unwrap_or("").to_string(),
            );
            let e = out.entry(key).or_default();
            if o.won_in_window {
                e.0 += 1;
                e.1 += o.cents;
            } else {
                e.2 += 1;
                e.3 += o.cents;
            }
        }
    }
    out
}

fn reported(json: &Value) -> Expected {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let n = |v: &Value| v.as_i64().expect("integer");
    json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                (
                    s(&r["model"]),
                    s(&r["source"]),
                    s(&r["system"]),
                    s(&r["campaign_id"]),
                    s(&r["currency"]),
                ),
                (
                    n(&r["won_count"]) as u64,
                    n(&r["won_cents"]),
                    n(&r["pipeline_count"]) as u64,
                    n(&r["pipeline_cents"]),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_report_matches_the_scenario_computed_independently() {
    let people = population::generate(30, 21);
    let harness = start_harness(&people).await;
    let sc = seed(&harness, &people);
    let want = expected(&sc, None);
    let presence: Vec<_> = people.iter().map(|p| p.presence).collect();
    // The scenario has what it needs to mean something.
    let sources: Vec<&str> = want.keys().map(|k| k.1.as_str()).collect();
    for s in ["campaign", "no_touch", "no_person"] {
        assert!(sources.contains(&s), "scenario lacks a {s} row: {want:?}");
    }
    assert!(
        want.keys().any(|k| k.2 == "marketing") && want.keys().any(|k| k.2 == "crm"),
        "{want:?} {presence:?}"
    );
    assert!(want.keys().any(|k| k.4 == "EUR"), "a second currency");
    let cross = sc.opps.iter().filter(|o| o.open).any(|o| {
        let before = |sys: &str| {
            sc.touches.iter().any(|t| {
                Some(t.person) == o.person && t.system == sys && t.responded && t.key < o.key
            })
        };
        before("crm") && before("marketing")
    });
    assert!(cross, "an opportunity whose person has touches in both systems: {presence:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let ledger_path = dir.path().join("ledger.db");
    let mut env = fast_env();
    env.insert("LEADSYNC__CLOSED_LOOP__ENABLED".into(), "true".into());
    env.insert("LEADSYNC__CLOSED_LOOP__POLL_INTERVAL_SECS".into(), "1".into());
    let settings =
        harness.settings(Source::Inline(DEMO_TOML), &ledger_path, &env).expect("settings");
    assert!(settings.closed_loop.enabled);
    let app = Arc::new(App::build(&settings).expect("app"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(90)).await, "lead sync converged");

    // Wait until every closed-loop object of the scenario is in the ledger.
    let touches = sc.touches.len() as i64;
    let opps = sc.opps.len() as i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = app.ledger().closed_loop_status().expect("status");
        let got: (i64, i64) =
            status.iter().fold((0, 0), |acc, s| (acc.0 + s.opportunities, acc.1 + s.touches));
        if got == (opps, touches) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed loop stored {got:?} of {:?}",
            (opps, touches)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operator's command, on the ledger the daemon is still writing.
    let config = dir.path().join("leadsync.toml");
    std::fs::write(&config, DEMO_TOML).expect("config");
    let run_with = |format: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_leadsync"))
            .args(["report", "attribution", "--since", "30d", "--format", format, "-c"])
            .arg(&config)
            .args(extra)
            .env_clear()
            .envs(harness.env(&ledger_path))
            .output()
            .expect("run leadsync report");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let run = |format: &str| run_with(format, &[]);
    let json: Value = serde_json::from_str(&run("json")).expect("json");
    let got = reported(&json);
    assert_eq!(got, want, "report (left) vs the scenario's right answers (right)");

    // Rows come sorted: per model, won amount then pipeline amount, descending.
    let rows = json["rows"].as_array().expect("rows");
    for w in rows.windows(2) {
        let key = |r: &Value| {
            (
                r["model"].as_str().map(str::to_string),
                -r["won_cents"].as_i64().expect("n"),
                -r["pipeline_cents"].as_i64().expect("n"),
            )
        };
        assert!(key(&w[0]) <= key(&w[1]), "sorted: {} then {}", w[0], w[1]);
    }
    // Campaign names come along.
    assert!(rows.iter().any(|r| r["campaign_name"] == "Expo 2026"), "{json:#}");

    // The other formats say the same.
    let csv = run("csv");
    assert_eq!(csv.lines().count(), rows.len() + 1, "{csv}");
    let table = run("table");
    assert!(table.contains("first touch") && table.contains("last touch"), "{table}");

    // Counting Salesforce opportunities only (HubSpot deals would mirror them in some orgs).
    let crm_only: Value =
        serde_json::from_str(&run_with("json", &["--opportunities-from", "crm"])).expect("json");
    assert_eq!(reported(&crm_only), expected(&sc, Some("crm")));
    assert_ne!(expected(&sc, Some("crm")), want, "the scenario has deals in both systems");

    // Reproducible: a second run gives the same report.
    let again: Value = serde_json::from_str(&run("json")).expect("json");
    assert_eq!(again["rows"], json["rows"]);

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}
