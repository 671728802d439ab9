//! `leadsync bench webhooks`: the real-time path under load.
//!
//! 1. **Acknowledgement**: the engine runs in this process with its webhook listener on a
//!    loopback port and a durable ledger (WAL, `synchronous=FULL`) in a directory on disk;
//!    `wrk` (Debian package `wrk`), a separate process, POSTs signed HubSpot requests of one
//!    event each (the worst case for commits: no batching by the sender) at concurrency 1, 16
//!    and 64. Every request carries a distinct event id, so each one is a real insert and a
//!    real commit; the requests are generated and signed up front into a Lua script, and if a
//!    run sends more requests than were generated the report says how many were redeliveries.
//!    Printed: events/s, p50/p99 acknowledgement latency (wrk's), non-2xx answers, and the
//!    events the ledger holds afterwards.
//! 2. **Change to other side**: the simulated HubSpot sends its own signed webhooks to the
//!    engine; changes are made to HubSpot contacts that also exist in Salesforce at a steady
//!    rate, and the time until each new value is visible in the simulated Salesforce is
//!    measured (p50/p99/max).
//!
//! The engine, the simulators and wrk share the machine's cores: the figures are for all of
//! them together, which is what a 2-core box running leadsync would see from its own load.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use super::exit;
use crate::app::App;
use crate::ingest::webhook::hubspot::sign_v3;
use crate::settings::{DEMO_TOML, Source};
use crate::sim::harness::{Harness, wait_quiet};
use crate::sim::hubspot::HubspotSimOptions;
use crate::sim::population;
use crate::sim::salesforce::SalesforceSimOptions;
use crate::{shutdown, telemetry};

#[derive(Debug, Args)]
pub struct WebhookBenchArgs {
    /// wrk connection counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Seconds of load per concurrency level.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub wrk_threads: usize,
    /// Distinct signed requests generated per level (more than wrk sends, or some repeat).
    #[arg(long, default_value_t = 200_000)]
    pub requests: usize,
    /// Changes per second in the change-to-other-side phase (0 skips the phase).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds of changes in the change-to-other-side phase.
    #[arg(long, default_value_t = 20)]
    pub rate_duration: u64,
    /// People in the simulators.
    #[arg(long, default_value_t = 2000)]
    pub people: usize,
    /// Directory for the ledger (must be a real disk for the fsync cost to count).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// What one wrk run reported.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub non_2xx: u64,
    pub socket_errors: String,
}

/// Parse wrk's text output (`--latency`).
pub fn parse_wrk(out: &str) -> WrkReport {
    let mut r = WrkReport::default();
    let mut in_distribution = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            let mut parts = t.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("50%"), Some(v)) => r.p50_ms = duration_ms(v),
                (Some("99%"), Some(v)) => r.p99_ms = duration_ms(v),
                (Some(p), _) if p.ends_with('%') => {}
                _ => in_distribution = false,
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.socket_errors = v.trim().to_string();
        } else if t.contains(" requests in ") {
            r.requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    r
}

/// wrk durations: `812.00us`, `1.23ms`, `2.00s`, `1.5m`.
fn duration_ms(v: &str) -> Option<f64> {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * factor)
}

/// A Lua script for wrk that sends `count` distinct signed one-event HubSpot requests, split
/// evenly between wrk's threads so that no two threads send the same event.
fn wrk_script(
    secret: &str,
    url: &str,
    path: &str,
    contact_ids: &[String],
    first_event: u64,
    count: usize,
    threads: usize,
) -> String {
    let ts = chrono::Utc::now().timestamp_millis();
    let ts_s = ts.to_string();
    let mut bodies = String::with_capacity(count * 400);
    let mut sigs = String::with_capacity(count * 52);
    for i in 0..count {
        let event = first_event + i as u64;
        let object = &contact_ids[i % contact_ids.len().max(1)];
        let body = format!(
            r#"[{{"eventId":{event},"subscriptionId":1,"portalId":62515,"appId":7,"occurredAt":{ts},"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":{object},"changeSource":"CRM_UI","propertyName":"firstname","propertyValue":"Bench"}}]"#
        );
        let sig = sign_v3(secret, "POST", url, body.as_bytes(), &ts_s);
        // A level-1 Lua long string holds the JSON as is (it ends in `]`, so `[[...]]` would
        // close early); the body contains no `]=]`.
        let _ = writeln!(bodies, "[=[{body}]=],");
        let _ = writeln!(sigs, "\"{sig}\",");
    }
    format!(
        r#"-- generated by leadsync bench webhooks
local bodies = {{
{bodies}}}
local sigs = {{
{sigs}}}
local n = #bodies
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local i = 0
local stride = 0
function init(args)
  stride = math.floor(n / {threads})
  i = tid * stride
end
function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("POST", "{path}", {{
    ["Content-Type"] = "application/json",
    ["X-HubSpot-Signature-v3"] = sigs[i],
    ["X-HubSpot-Request-Timestamp"] = "{ts_s}",
  }}, bodies[i])
end
"#
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run_wrk(
    threads: usize,
    conns: usize,
    secs: u64,
    script: &Path,
    url: &str,
) -> Result<String, String> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.arg(format!("-t{}", threads.min(conns).max(1)))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url);
    // wrk blocks for the whole run: keep it off the runtime's worker threads.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| format!("wrk task failed: {e}"))?
        .map_err(|e| format!("cannot run wrk ({e}); install it: apt-get install wrk"))?;
    if !out.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[allow(clippy::too_many_lines, reason = "a linear script")]
pub async fn run(args: WebhookBenchArgs, env: &HashMap<String, String>) -> u8 {
    telemetry::init(
        crate::settings::LogFormat::Auto,
        "warn",
        env.get("RUST_LOG").map(String::as_str),
    );
    let people = population::generate(args.people, 11);
    let harness = match Harness::start(
        SalesforceSimOptions { daily_api_limit: u64::MAX, ..SalesforceSimOptions::default() },
        HubspotSimOptions::unlimited(),
    )
    .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("leadsync: cannot start simulators: {e}");
            return exit::IOERR;
        }
    };
    if let Err(e) = harness.seed(&people) {
        eprintln!("leadsync: seeding failed: {e}");
        return exit::SOFTWARE;
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("leadsync-bench-wh-{}", uuid::Uuid::new_v4().simple()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("leadsync: cannot create {}: {e}", dir.display());
        return exit::IOERR;
    }
    let ledger_path = dir.join("ledger.db");
    let mut extra = env.clone();
    extra.extend(harness.webhook_env(3600));
    extra.insert("LEADSYNC__SYSTEMS__MARKETING__SEARCH_MIN_INTERVAL_MS".into(), "0".into());
    let settings = match harness.settings(Source::Inline(DEMO_TOML), &ledger_path, &extra) {
        Ok(s) => s,
        Err(e) => {
            super::report_settings_error(&e);
            return exit::CONFIG;
        }
    };
    let app = match App::build(&settings) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("leadsync: cannot start: {e:#}");
            return exit::IOERR;
        }
    };
    let addr = match app.bind_webhooks().await {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("leadsync: webhooks are not configured");
            return exit::SOFTWARE;
        }
        Err(e) => {
            eprintln!("leadsync: cannot bind the webhook listener: {e}");
            return exit::IOERR;
        }
    };
    let (trigger, shutdown) = shutdown::channel();
    let engine = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.run_until_stopped(shutdown).await })
    };
    if !wait_quiet(&app, Duration::from_secs(300)).await {
        eprintln!("leadsync: the initial sync did not converge");
        trigger.trigger();
        return exit::FAILURE;
    }
    harness.point_webhooks_at(addr);
    let contact_ids: Vec<String> = harness.hubspot.all().into_iter().map(|(id, _)| id).collect();
    let path = "/webhooks/marketing";
    let url = format!("http://{addr}{path}");
    println!("leadsync bench webhooks: ledger {} (WAL, synchronous=FULL)", ledger_path.display());
    println!(
        "  acknowledgement, signed HubSpot requests of one event each, {} s per level",
        args.duration
    );
    println!(
        "  {:>5} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "conns", "events/s", "p50 ms", "p99 ms", "non-2xx", "repeats"
    );
    let mut ok = true;
    let mut first_event = 1_000_000u64;
    for &c in &args.concurrency {
        let script_path = dir.join(format!("wrk-c{c}.lua"));
        let threads = args.wrk_threads.min(c).max(1);
        let script = wrk_script(
            &harness.hs_app_secret,
            &url,
            path,
            &contact_ids,
            first_event,
            args.requests,
            threads,
        );
        first_event += args.requests as u64;
        if let Err(e) = std::fs::write(&script_path, script) {
            eprintln!("leadsync: cannot write {}: {e}", script_path.display());
            return exit::IOERR;
        }
        let stats = app.webhook_stats();
        let new_before =
            stats.as_ref().map_or(0, |s| s.new_events.load(std::sync::atomic::Ordering::Relaxed));
        let out = match run_wrk(args.wrk_threads, c, args.duration, &script_path, &url).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("leadsync: {e}");
                trigger.trigger();
                return exit::UNAVAILABLE;
            }
        };
        let r = parse_wrk(&out);
        let new_after =
            stats.as_ref().map_or(0, |s| s.new_events.load(std::sync::atomic::Ordering::Relaxed));
        let repeats = r.requests.saturating_sub(r.non_2xx).saturating_sub(new_after - new_before);
        let fmt = |v: Option<f64>| v.map_or("?".to_string(), |x| format!("{x:.2}"));
        println!(
            "  {:>5} {:>10.0} {:>10} {:>10} {:>9} {:>9}",
            c,
            r.requests_per_sec,
            fmt(r.p50_ms),
            fmt(r.p99_ms),
            r.non_2xx,
            repeats
        );
        if !r.socket_errors.is_empty() {
            println!("        socket errors: {}", r.socket_errors);
        }
        if let Some(st) = &stats
            && st.rejected_total() > 0
        {
            let reasons: Vec<String> = crate::ingest::webhook::server::Reason::ALL
                .iter()
                .filter(|r| st.rejected(**r) > 0)
                .map(|r| format!("{} {}", r.as_str(), st.rejected(*r)))
                .collect();
            println!("        refused so far: {}", reasons.join(", "));
        }
        ok &= r.non_2xx == 0;
        // Let the engine digest what it acknowledged before the next level.
        if !wait_quiet(&app, Duration::from_secs(120)).await {
            println!("        the engine was still busy 120 s after this level");
        }
    }
    if args.rate > 0 {
        match propagation(&app, &harness, args.rate, args.rate_duration).await {
            Ok(lat) => {
                println!(
                    "  change to other side at {} changes/s for {} s: {} changes, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {} not arrived",
                    args.rate,
                    args.rate_duration,
                    lat.made,
                    lat.p50_ms,
                    lat.p99_ms,
                    lat.max_ms,
                    lat.missing
                );
                ok &= lat.missing == 0;
            }
            Err(e) => {
                eprintln!("leadsync: change-to-other-side phase failed: {e}");
                ok = false;
            }
        }
    }
    trigger.trigger();
    let engine_ok = matches!(engine.await, Ok(Ok(())));
    if args.dir.is_none() {
        drop(std::fs::remove_dir_all(&dir));
    }
    if ok && engine_ok { exit::OK } else { exit::FAILURE }
}

/// Latencies of the change-to-other-side phase.
#[derive(Debug, Default)]
pub(crate) struct Propagation {
    pub made: usize,
    pub missing: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Make `rate` changes per second for `secs` seconds to HubSpot contacts that are linked to
/// Salesforce leads, and time each until Salesforce shows it.
pub(crate) async fn propagation(
    app: &App,
    harness: &Harness,
    rate: u64,
    secs: u64,
) -> Result<Propagation, String> {
    let pairs: Vec<(String, String)> = app
        .ledger()
        .snapshot()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|p| {
            let hs = p.links.iter().find(|(s, _)| s == "marketing")?.1.id.clone();
            let sf = p.links.iter().find(|(s, _)| s == "crm")?.1.id.clone();
            Some((hs, sf))
        })
        .collect();
    if pairs.is_empty() {
        return Err("no person is in both systems".into());
    }
    let total = usize::try_from(rate * secs).unwrap_or(usize::MAX);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut pending: BTreeMap<usize, (String, String, Instant)> = BTreeMap::new();
    let mut done: Vec<f64> = Vec::with_capacity(total);
    let start = Instant::now();
    let mut made = 0usize;
    let deadline_after = Duration::from_secs(30);
    loop {
        // Make the changes that are due by now.
        while made < total && start.elapsed() >= interval.mul_f64(made as f64) {
            let (hs, sf) = &pairs[made % pairs.len()];
            // A person changed again before the previous change arrived would make the earlier
            // one unobservable: skip people still in flight.
            if pending.values().any(|(_, s, _)| s == sf) {
                made += 1;
                continue;
            }
            let value = format!("Rt{made}");
            harness
                .hubspot
                .ui_update(hs, BTreeMap::from([("firstname".to_string(), value.clone())]))
                .map_err(|e| format!("hubspot update: {e}"))?;
            pending.insert(made, (value, sf.clone(), Instant::now()));
            made += 1;
        }
        pending.retain(|_, (value, sf, t0)| {
            let now_there = harness
                .salesforce
                .get("Lead", sf)
                .and_then(|l| l.get("FirstName").and_then(|v| v.as_str()).map(str::to_string));
            if now_there.as_deref() == Some(value.as_str()) {
                done.push(t0.elapsed().as_secs_f64() * 1000.0);
                false
            } else {
                true
            }
        });
        if made >= total
            && (pending.is_empty() || start.elapsed() > Duration::from_secs(secs) + deadline_after)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done.sort_by(f64::total_cmp);
    Ok(Propagation {
        made: done.len() + pending.len(),
        missing: pending.len(),
        p50_ms: percentile(&done, 0.50),
        p99_ms: percentile(&done, 0.99),
        max_ms: done.last().copied().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let out = "Running 10s test @ http://127.0.0.1:8088/webhooks/marketing
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    2.03ms  40.11ms   80.00%
    Req/Sec     6.32k   512.00     7.10k    70.00%
  Latency Distribution
     50%    4.80ms
     75%    5.90ms
     90%    7.20ms
     99%   12.40ms
  125812 requests in 10.00s, 9.84MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  12579.30
Transfer/sec:      0.98MB
";
        let r = parse_wrk(out);
        assert_eq!(r.requests, 125_812);
        assert!((r.requests_per_sec - 12579.30).abs() < 1e-6);
        assert_eq!(r.p50_ms, Some(4.8));
        assert_eq!(r.p99_ms, Some(12.4));
        assert_eq!(r.non_2xx, 3);
        assert_eq!(duration_ms("812.00us"), Some(0.812));
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
    }

    #[test]
    fn the_script_signs_each_request_for_the_url_called() {
        let s = wrk_script(
            "k",
            "http://127.0.0.1:1/webhooks/m",
            "/webhooks/m",
            &["5".into()],
            10,
            3,
            1,
        );
        assert_eq!(s.matches("\"eventId\":1").count(), 3, "three distinct events");
        let body = r#"[{"eventId":10,"subscriptionId":1,"portalId":62515,"appId":7,"occurredAt":"#;
        assert!(s.contains(body));
        assert_eq!(s.matches("X-HubSpot-Signature-v3").count(), 1);
    }
}
