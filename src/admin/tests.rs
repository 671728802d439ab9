//! Admin endpoint tests: the router through `oneshot` with a test-double source and with the
//! real ledger, a Prometheus text check, and one test over a real socket with shutdown.

use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::*;
use crate::connectors::ConnectorError;
use crate::domain::SystemName;
use crate::metrics as m;

/// A source whose answers the test sets.
struct Fake {
    ledger: Mutex<Result<(), String>>,
    systems: Mutex<Vec<(String, Option<Duration>)>>,
    delay: Duration,
}

impl Fake {
    fn healthy() -> Arc<Fake> {
        Arc::new(Fake {
            ledger: Mutex::new(Ok(())),
            systems: Mutex::new(vec![
                ("crm".into(), Some(Duration::from_secs(5))),
                ("marketing".into(), Some(Duration::from_secs(30))),
            ]),
            delay: Duration::ZERO,
        })
    }
}

impl ReadinessSource for Fake {
    fn ledger_writable(&self) -> Result<(), String> {
        std::thread::sleep(self.delay);
        self.ledger.lock().expect("lock").clone()
    }
    fn systems(&self) -> Result<Vec<(String, Option<Duration>)>, String> {
        Ok(self.systems.lock().expect("lock").clone())
    }
    fn gauges(&self) -> Vec<GaugeSample> {
        vec![GaugeSample::for_connector(m::INBOX_PENDING, "fake_source", 42.0)]
    }
}

fn state(source: Arc<dyn ReadinessSource>) -> AdminState {
    AdminState::new(source, m::install().expect("metrics"), Duration::from_secs(60))
}

async fn get(app: &Router, path: &str) -> (StatusCode, Option<String>, String) {
    let req = Request::get(path).body(Body::empty()).expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let ctype = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii content type").to_string());
    let body = axum::body::to_bytes(res.into_body(), 1 << 22).await.expect("body");
    (status, ctype, String::from_utf8(body.to_vec()).expect("utf-8"))
}

async fn readyz(app: &Router) -> (StatusCode, Value) {
    let (status, ctype, body) = get(app, "/readyz").await;
    assert_eq!(ctype.as_deref(), Some("application/json"));
    (status, serde_json::from_str(&body).expect("json body"))
}

#[tokio::test]
async fn healthz_is_ok() {
    let app = router(state(Fake::healthy()));
    let (status, _, body) = get(&app, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn readyz_names_each_check_and_flips_on_a_failing_ledger() {
    let fake = Fake::healthy();
    let app = router(state(fake.clone()));
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "ready": true,
            "checks": {
                "ledger": { "ok": true, "detail": "writable" },
                "crm": { "ok": true, "last_poll_ok_secs_ago": 5 },
                "marketing": { "ok": true, "last_poll_ok_secs_ago": 30 },
            }
        })
    );

    *fake.ledger.lock().expect("lock") = Err("sqlite: attempt to write a readonly database".into());
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], json!(false));
    assert_eq!(body["checks"]["ledger"]["ok"], json!(false));
    assert_eq!(
        body["checks"]["ledger"]["detail"],
        json!("sqlite: attempt to write a readonly database")
    );
    assert_eq!(body["checks"]["crm"]["ok"], json!(true), "only the failing check is named");
}

#[tokio::test]
async fn a_stale_or_never_polled_system_is_not_ready() {
    let fake = Fake::healthy();
    let app = router(state(fake.clone()));
    fake.systems.lock().expect("lock")[1].1 = Some(Duration::from_secs(61));
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["marketing"], json!({ "ok": false, "last_poll_ok_secs_ago": 61 }));
    assert_eq!(body["checks"]["crm"]["ok"], json!(true));

    // Exactly the max age is still ready.
    fake.systems.lock().expect("lock")[1].1 = Some(Duration::from_secs(60));
    assert_eq!(readyz(&app).await.0, StatusCode::OK);

    fake.systems.lock().expect("lock")[0].1 = None;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["crm"], json!({ "ok": false, "last_poll_ok_secs_ago": null }));
}

#[tokio::test]
async fn a_hung_ledger_check_fails_within_the_time_limit() {
    let fake = Arc::new(Fake {
        ledger: Mutex::new(Ok(())),
        systems: Mutex::new(Vec::new()),
        delay: Duration::from_millis(400),
    });
    let app = router(state(fake).with_check_timeout(Duration::from_millis(50)));
    let started = std::time::Instant::now();
    let (status, body) = readyz(&app).await;
    assert!(started.elapsed() < Duration::from_millis(300), "did not wait for the source");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let detail = body["checks"]["ledger"]["detail"].as_str().expect("detail");
    assert!(detail.contains("timed out"), "{detail}");
}

fn real_ledger(systems: &[&str]) -> (tempfile::TempDir, Arc<Ledger>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    let rows: Vec<(String, String, String)> =
        systems.iter().map(|s| ((*s).to_string(), "salesforce".into(), "crm".into())).collect();
    ledger.register_systems(&rows).expect("register");
    (dir, Arc::new(ledger))
}

#[tokio::test]
async fn readyz_on_the_real_ledger_fails_when_it_refuses_writes() {
    let (_dir, ledger) = real_ledger(&["crm"]);
    let app = router(state(Arc::new(LedgerSource::new(Arc::clone(&ledger)))));

    // Registered but never polled: not ready yet.
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["ledger"]["ok"], json!(true));
    assert_eq!(body["checks"]["crm"]["ok"], json!(false));

    ledger.record_poll_ok(&SystemName("crm".into()), Utc::now()).expect("poll ok");
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["checks"]["crm"]["last_poll_ok_secs_ago"].as_u64().expect("secs") <= 1);

    ledger.set_query_only_for_test(true);
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["ledger"]["ok"], json!(false));
    let detail = body["checks"]["ledger"]["detail"].as_str().expect("detail");
    assert!(detail.contains("readonly"), "{detail}");

    ledger.set_query_only_for_test(false);
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
}

/// (metric name, labels, value) of one sample line.
type Sample = (String, Vec<(String, String)>, f64);

/// A strict reader of Prometheus text exposition format 0.0.4, as far as we emit it. It
/// panics on anything the format does not allow and on some things it allows but we never
/// emit (comments other than `# HELP`/`# TYPE`, tabs or runs of spaces, timestamps):
///
/// - `# HELP name text` (escapes `\\` and `\n` only) and `# TYPE name kind`, each at most once
///   per family and before its samples;
/// - samples `name{label="value",...} value`: valid metric and label names, no reserved `__`
///   labels, no repeated label, values escaped (`\\`, `\"`, `\n` only), a float or `+Inf`,
///   `-Inf`, `NaN`; every sample belongs to the family typed before it, families are not split,
///   and no series appears twice;
/// - counters are non-negative; histograms have, per label set, `_bucket` lines with ascending
///   `le` ending at `+Inf`, cumulative counts that never fall, and `_sum` and `_count`, with
///   `_count` equal to the `+Inf` bucket.
///
/// Returns the samples in order.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    use std::collections::{BTreeMap, HashSet};

    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut samples = Vec::new();
    assert!(text.is_empty() || text.ends_with('\n'), "text ends with a newline");

    // Enter `family`, checking families are not split.
    let mut enter = |family: &str, current: &mut Option<String>| {
        if current.as_deref() != Some(family) {
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            assert!(!finished.contains(family), "family {family} split into two groups");
            *current = Some(family.to_string());
        }
    };

    for line in text.split('\n').filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert_metric_name(name, line);
            enter(name, &mut current);
            assert!(helped.insert(name.to_string()), "second HELP: {line}");
            assert!(!samples.iter().any(|s: &Sample| family_of(&s.0, &typed) == name));
            unescape(help, false, line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_metric_name(name, line);
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            enter(name, &mut current);
            assert!(typed.insert(name.to_string(), kind.to_string()).is_none(), "second TYPE");
            assert!(
                !samples.iter().any(|s: &Sample| family_of(&s.0, &typed) == name),
                "TYPE after samples: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");

        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let name = &line[..name_end];
        assert_metric_name(name, line);
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            rest = parse_labels(inner, &mut labels, line);
        }
        let value = rest.strip_prefix(' ').expect("one space before the value");
        let value = parse_value(value, line);
        let family = family_of(name, &typed);
        assert!(typed.contains_key(&family), "sample not preceded by its # TYPE line: {line}");
        enter(&family, &mut current);
        if typed[&family] == "counter" {
            assert!(value >= 0.0, "counter below zero: {line}");
        }
        let mut key_labels = labels.clone();
        key_labels.sort();
        assert!(seen.insert((name.to_string(), key_labels)), "series repeated: {line}");
        samples.push((name.to_string(), labels, value));
    }
    for (family, kind) in &typed {
        if kind == "histogram" {
            check_histogram(family, &samples);
        }
    }
    samples
}

/// The family a sample line belongs to: histogram lines carry a suffix.
fn family_of(name: &str, typed: &std::collections::BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && typed.get(base).map(String::as_str) == Some("histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

fn assert_metric_name(name: &str, line: &str) {
    let mut chars = name.chars();
    let first = chars.next().expect("metric name not empty");
    assert!(
        (first.is_ascii_alphabetic() || first == '_' || first == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name: {line}"
    );
}

/// Parse `k="v",...}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>, line: &str) -> &'a str {
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return after;
        }
        let eq = s.find('=').unwrap_or_else(|| panic!("label without '=': {line}"));
        let key = &s[..eq];
        let mut chars = key.chars();
        let first = chars.next().unwrap_or_else(|| panic!("empty label name: {line}"));
        assert!(
            (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.starts_with("__"),
            "bad label name {key:?}: {line}"
        );
        assert!(!labels.iter().any(|(k, _)| k == key), "label {key} repeated: {line}");
        let quoted = s[eq + 1..].strip_prefix('"').unwrap_or_else(|| panic!("unquoted: {line}"));
        // Find the closing quote: the first '"' not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.unwrap_or_else(|| panic!("label value not closed: {line}"));
        labels.push((key.to_string(), unescape(&quoted[..end], true, line)));
        s = &quoted[end + 1..];
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else {
            assert!(s.starts_with('}'), "expected ',' or '}}' after a label: {line}");
        }
    }
}

/// Undo the format's escapes; `\"` is allowed only in label values.
fn unescape(s: &str, label_value: bool, line: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label_value => out.push('"'),
            other => panic!("bad escape \\{other:?}: {line}"),
        }
    }
    out
}

/// A Go-style float as the format allows, without the forms Rust accepts beyond it (`inf`).
fn parse_value(v: &str, line: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => {
            assert!(
                !v.is_empty()
                    && v.bytes().all(|b| b.is_ascii_digit() || b".eE+-".contains(&b))
                    && v.bytes().any(|b| b.is_ascii_digit()),
                "not a float value (or a timestamp we never emit): {line}"
            );
            v.parse().unwrap_or_else(|_| panic!("not a float value: {line}"))
        }
    }
}

fn check_histogram(family: &str, samples: &[Sample]) {
    type Series = Vec<(String, String)>;
    let without_le = |labels: &Series| -> Series {
        let mut l: Series = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        l.sort();
        l
    };
    /// One label set: its (le, count) buckets in order, its `_sum` and its `_count`.
    type Parts = (Series, Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut series: Vec<Parts> = Vec::new();
    let bucket = format!("{family}_bucket");
    let (sum, count) = (format!("{family}_sum"), format!("{family}_count"));
    for (name, labels, value) in samples {
        if ![&bucket, &sum, &count].contains(&name) {
            continue;
        }
        let key = without_le(labels);
        let idx = match series.iter().position(|s| s.0 == key) {
            Some(i) => i,
            None => {
                series.push((key, Vec::new(), None, None));
                series.len() - 1
            }
        };
        let entry = &mut series[idx];
        if *name == bucket {
            let le = labels.iter().find(|(k, _)| k == "le").expect("bucket has le");
            let le = parse_value(&le.1, name);
            assert!(value.fract() == 0.0 && *value >= 0.0, "{family}: bucket count {value}");
            entry.1.push((le, *value));
        } else {
            assert!(labels.iter().all(|(k, _)| k != "le"), "{family}: le outside buckets");
            let slot = if *name == sum { &mut entry.2 } else { &mut entry.3 };
            assert!(slot.replace(*value).is_none(), "{family}: repeated {name}");
        }
    }
    assert!(!series.is_empty(), "{family}: typed histogram without samples");
    for (key, buckets, sum, count) in series {
        assert!(!buckets.is_empty(), "{family}{key:?}: no buckets");
        for pair in buckets.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{family}{key:?}: le not ascending");
            assert!(pair[0].1 <= pair[1].1, "{family}{key:?}: buckets not cumulative");
        }
        let (last_le, last) = *buckets.last().expect("not empty");
        assert!(last_le == f64::INFINITY, "{family}{key:?}: no +Inf bucket");
        assert!(sum.is_some(), "{family}{key:?}: no _sum");
        assert_eq!(count, Some(last), "{family}{key:?}: _count differs from +Inf bucket");
    }
}

#[test]
fn the_parser_rejects_malformed_text() {
    let good = "# HELP a_total Things \\\\ done\\n.\n# TYPE a_total counter\n\
                a_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 2\na_total 3e2\n\n\
                # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                h_sum 1.5\nh_count 2\n# TYPE g gauge\ng NaN\ng{a=\"b\"} -Inf\n";
    let parsed = parse_prometheus(good);
    assert_eq!(parsed.len(), 8);
    assert_eq!(parsed[0].1[1], ("y".into(), "q\"\\\n".into()), "escapes undone");
    assert_eq!(parsed[1].2, 300.0);
    let h = "# TYPE h histogram\n";
    for bad in [
        "a_total 1\n".to_string(),                             // no TYPE line
        "# TYPE a_total counter\na_total{x=1} 2\n".into(),     // unquoted label
        "# TYPE a_total counter\na_total x\n".into(),          // not a float
        "# TYPE a_total counter\na_total inf\n".into(),        // Rust float, not Go
        "# TYPE a_total counter\na_total 1 1700000\n".into(),  // timestamp
        "# TYPE a_total counter\na_total -1\n".into(),         // counter below zero
        "# TYPE a gauge\nb 1\n".into(),                        // other family
        "# TYPE a gauge\na 1".into(),                          // no final newline
        "# TYPE a gauge\na  1\n".into(),                       // two spaces
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n".into(), // repeated series
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n".into(),       // repeated label
        "# TYPE a gauge\na{1x=\"1\"} 1\n".into(),              // bad label name
        "# TYPE a gauge\na{__x=\"1\"} 1\n".into(),             // reserved label name
        "# TYPE a gauge\na{x=\"\\t\"} 1\n".into(),             // unknown escape
        "# TYPE a gauge\na{x=\"1\" 1\n".into(),                // labels not closed
        "# TYPE a gauge\n# TYPE a gauge\na 1\n".into(),        // TYPE twice
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n".into(), // family split
        "# TYPE 1a gauge\n1a 1\n".into(),                      // bad metric name
        "# TYPE a wibble\na 1\n".into(),                       // unknown type
        "# a comment\n".into(),                                // comment we never emit
        format!("{h}h_bucket{{le=\"1\"}} 1\nh_sum 1\nh_count 1\n"), // no +Inf bucket
        format!("{h}h_bucket{{le=\"1\"}} 2\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"),
        format!(
            "{h}h_bucket{{le=\"2\"}} 1\nh_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"
        ),
        format!("{h}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\nh_count 3\n"), // count != +Inf
        format!("{h}h_bucket{{le=\"+Inf\"}} 2\nh_count 2\n"),          // no sum
    ] {
        let r = std::panic::catch_unwind(|| parse_prometheus(&bad));
        assert!(r.is_err(), "accepted: {bad:?}");
    }
}

/// The value of the one sample named `name` with all these labels.
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.2)
        .collect();
    assert!(hits.len() <= 1, "{name} {labels:?} matches {} samples", hits.len());
    hits.first().copied()
}

#[tokio::test]
async fn metrics_render_every_name_as_prometheus_text_with_fresh_ledger_gauges() {
    let (_dir, ledger) = real_ledger(&["metrics_crm"]);
    ledger.record_poll_ok(&SystemName("metrics_crm".into()), Utc::now()).expect("poll ok");
    let api = Arc::new(ApiCounters::default());
    api.read();
    api.outcome(crate::connectors::ApiOutcome::Ok);
    api.record_rate_limit(99, Some(100), None);
    let source = LedgerSource::new(Arc::clone(&ledger))
        .with_api_counters(vec![("metrics_crm".into(), Arc::clone(&api))]);
    let app = router(state(Arc::new(source)));

    // Touch every pipeline metric once, as the pollers, pushers and webhook server will.
    let c = "metrics_crm";
    m::events_received(c, 1);
    m::event_rejected(c, m::REASON_BAD_SIGNATURE);
    m::push_duration(c, Duration::from_millis(120));
    m::records_polled(c, 7);
    m::records_pushed(c, m::OUTCOME_OK, 5);
    m::webhook_ack_duration(c, Duration::from_micros(700));
    m::webhook_ack_duration(c, Duration::from_millis(15));
    m::webhook_commit_batch(3);
    m::vendor_merge(c, m::OUTCOME_OK);
    m::erased_change_dropped(c);
    m::closed_loop_stored(c, m::OBJECT_OPPORTUNITY, 2);
    // The pending-notice gauge comes from the ledger at scrape time, like the queue gauges.
    let notice = crate::domain::Notice {
        dedupe_key: "hubspot:1:1".into(),
        remote: crate::domain::RemoteId { object_type: "contact".into(), id: "1".into() },
        kind: crate::domain::NoticeKind::Changed,
        occurred_at: Utc::now(),
        related: Vec::new(),
        snapshot: None,
    };
    let sys = SystemName(c.into());
    ledger.store_notices(&[(&sys, std::slice::from_ref(&notice))], Utc::now()).expect("notice");
    // A label value that needs escaping shows the exporter's output still parses.
    m::event_rejected("we\"ird\\sys\ntem", m::REASON_MALFORMED);

    let (status, ctype, text) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.expect("content type").starts_with("text/plain; version=0.0.4"));
    let samples = parse_prometheus(&text);
    for name in m::ALL {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from:\n{text}");
    }
    let value = |name: &str| value_of(&samples, name, &[(m::CONNECTOR, c)]);
    assert_eq!(value(m::INBOX_PENDING), Some(0.0));
    assert_eq!(value(m::DEAD_RECORDS), Some(0.0));
    assert_eq!(value(m::RECORDS_POLLED), Some(7.0));
    assert_eq!(value(m::RATE_LIMIT_REMAINING), Some(99.0));
    assert_eq!(value(m::WEBHOOK_EVENTS_PENDING), Some(1.0));
    assert_eq!(value("leadsync_push_duration_seconds_count"), Some(1.0));
    let rejected = |conn: &str, code: &str| {
        value_of(&samples, m::EVENTS_REJECTED, &[(m::CONNECTOR, conn), (m::ERROR_CODE, code)])
    };
    assert_eq!(rejected(c, "bad_signature"), Some(1.0));
    assert_eq!(rejected("we\"ird\\sys\ntem", "malformed"), Some(1.0));
    let polled_at = value(m::LAST_POLL_SUCCESS).expect("last poll gauge");
    #[allow(clippy::cast_precision_loss, reason = "unix seconds")]
    let now = Utc::now().timestamp() as f64;
    assert!((now - polled_at).abs() < 5.0, "{polled_at} vs {now}");

    // The webhook histograms have the buckets ops asked for.
    let ack = |le: &str| {
        value_of(
            &samples,
            "leadsync_webhook_ack_duration_seconds_bucket",
            &[(m::CONNECTOR, c), ("le", le)],
        )
    };
    assert_eq!(ack("0.0005"), Some(0.0));
    assert_eq!(ack("0.001"), Some(1.0));
    assert_eq!(ack("0.02"), Some(2.0));
    assert_eq!(ack("1"), Some(2.0));
    let batch =
        |le: &str| value_of(&samples, "leadsync_webhook_commit_batch_events_bucket", &[("le", le)]);
    assert_eq!(batch("2"), Some(0.0), "3 events is above the 2 bucket");
    assert_eq!(batch("4"), Some(1.0));
    assert!(batch("1024").is_some());

    // Gauges follow the ledger on the next scrape.
    let mkt = SystemName("metrics_crm".into());
    let change = crate::domain::Change {
        remote: crate::domain::RemoteId { object_type: "Lead".into(), id: "1".into() },
        fields: [(crate::domain::Field::Email, "a@x.test".to_string())].into(),
        ledger_key: None,
        modified_at: Utc::now(),
        fetched_at: Utc::now(),
        fate: crate::domain::RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    };
    ledger.ingest(&mkt, "poll", &[change], None, Utc::now()).expect("ingest");
    let (_, _, text) = get(&app, "/metrics").await;
    assert!(
        text.contains(&format!("{}{{connector=\"metrics_crm\"}} 1\n", m::INBOX_PENDING)),
        "{text}"
    );
}

#[tokio::test]
async fn api_counters_are_published_per_outcome_with_the_budget_only_once_known() {
    let known = Arc::new(ApiCounters::default());
    let unknown = Arc::new(ApiCounters::default());
    for _ in 0..3 {
        known.read();
        known.outcome(crate::connectors::ApiOutcome::Ok);
    }
    known.write();
    known.outcome(crate::connectors::ApiOutcome::RateLimited);
    known.record_rate_limit(0, Some(100), Some(Duration::from_secs(3600)));
    unknown.read();
    unknown.error();
    let (_dir, ledger) = real_ledger(&[]);
    let source = LedgerSource::new(ledger).with_api_counters(vec![
        ("api_known".into(), Arc::clone(&known)),
        ("api_unknown".into(), Arc::clone(&unknown)),
    ]);
    let app = router(state(Arc::new(source)));

    let (_, _, text) = get(&app, "/metrics").await;
    let samples = parse_prometheus(&text);
    let calls = |conn: &str, outcome: &str| {
        value_of(&samples, m::API_CALLS, &[(m::CONNECTOR, conn), (m::OUTCOME, outcome)])
    };
    assert_eq!(calls("api_known", "ok"), Some(3.0));
    assert_eq!(calls("api_known", "rate_limited"), Some(1.0));
    assert_eq!(calls("api_known", "error"), Some(0.0));
    assert_eq!(calls("api_unknown", "ok"), Some(0.0));
    assert_eq!(calls("api_unknown", "error"), Some(1.0));
    let budget = |conn: &str| value_of(&samples, m::RATE_LIMIT_REMAINING, &[(m::CONNECTOR, conn)]);
    assert_eq!(budget("api_known"), Some(0.0), "a spent budget is 0, not missing");
    assert_eq!(budget("api_unknown"), None, "never reported: no gauge");

    // Counters move with the connectors between scrapes.
    known.read();
    known.outcome(crate::connectors::ApiOutcome::Ok);
    known.record_rate_limit(42, Some(100), None);
    let (_, _, text) = get(&app, "/metrics").await;
    let samples = parse_prometheus(&text);
    let calls = |outcome: &str| {
        value_of(&samples, m::API_CALLS, &[(m::CONNECTOR, "api_known"), (m::OUTCOME, outcome)])
    };
    assert_eq!(calls("ok"), Some(4.0));
    let budget = value_of(&samples, m::RATE_LIMIT_REMAINING, &[(m::CONNECTOR, "api_known")]);
    assert_eq!(budget, Some(42.0));
}

/// Both real connectors against wiremock vendors: each call's outcome and the budget the
/// vendor reports reach `/metrics`.
#[tokio::test]
async fn connector_calls_and_vendor_budgets_reach_the_scrape() {
    use crate::connectors::Connector;
    use crate::connectors::hubspot::{HubspotConfig, HubspotConfigRaw, HubspotConnector};
    use crate::connectors::salesforce::{
        SalesforceConfig, SalesforceConfigRaw, SalesforceConnector,
    };
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    // One attempt per call, so each mocked reply is one healthcheck's result.
    let once = crate::retry::RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(1),
        max_attempts: 1,
    };

    let hs_server = MockServer::start().await;
    let contacts = "/crm/v3/objects/contacts";
    Mock::given(method("GET"))
        .and(path(contacts))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .insert_header("x-hubspot-ratelimit-remaining", "0")
                .insert_header("x-hubspot-ratelimit-max", "100")
                // A short window, so the pacer's pause after a spent window stays short.
                .insert_header("x-hubspot-ratelimit-interval-milliseconds", "1")
                .set_body_json(json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"})),
        )
        .up_to_n_times(1)
        .mount(&hs_server)
        .await;
    Mock::given(method("GET"))
        .and(path(contacts))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&hs_server)
        .await;
    Mock::given(method("GET"))
        .and(path(contacts))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-hubspot-ratelimit-remaining", "87")
                .insert_header("x-hubspot-ratelimit-max", "100")
                .insert_header("x-hubspot-ratelimit-interval-milliseconds", "10000")
                .set_body_json(json!({"results": []})),
        )
        .mount(&hs_server)
        .await;
    let env: std::collections::HashMap<String, String> =
        [("HS_TOKEN".to_string(), "pat-test".to_string()), ("SF_SECRET".into(), "s3cret".into())]
            .into();
    let raw = HubspotConfigRaw {
        base_url: hs_server.uri(),
        token_env: Some("HS_TOKEN".into()),
        search_min_interval_ms: 0,
        ..HubspotConfigRaw::default()
    };
    let mut cfg = HubspotConfig::from_raw(raw, "systems.scrape_mkt", &env).expect("config");
    cfg.retry = once;
    let hubspot = HubspotConnector::new(cfg).expect("connector");

    let sf_server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "tok", "instance_url": sf_server.uri(), "token_type": "Bearer",
            "id": format!("{}/id/00D000000000001EAA/005000000000001AAA", sf_server.uri()),
            "issued_at": "1714557600000", "signature": "c2lnbmF0dXJl",
        })))
        .mount(&sf_server)
        .await;
    let query = "/services/data/v62.0/query";
    Mock::given(method("GET"))
        .and(path(query))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("sforce-limit-info", "api-usage=15000/15000")
                .set_body_json(json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])),
        )
        .up_to_n_times(1)
        .mount(&sf_server)
        .await;
    Mock::given(method("GET"))
        .and(path(query))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!([{"message": "no", "errorCode": "MALFORMED_QUERY"}])),
        )
        .up_to_n_times(1)
        .mount(&sf_server)
        .await;
    Mock::given(method("GET"))
        .and(path(query))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("sforce-limit-info", "api-usage=25/15000")
                .set_body_json(json!({"totalSize": 0, "done": true, "records": []})),
        )
        .mount(&sf_server)
        .await;
    let raw: SalesforceConfigRaw = serde_json::from_value(json!({
        "login_url": sf_server.uri(), "client_id": "cid", "client_secret_env": "SF_SECRET",
    }))
    .expect("raw config");
    let cfg = SalesforceConfig::from_raw(raw, "systems.scrape_crm", &env)
        .expect("config")
        .with_retry_policy(once);
    let salesforce = SalesforceConnector::new(cfg).expect("connector");

    let (_dir, ledger) = real_ledger(&[]);
    let source = LedgerSource::new(ledger).with_api_counters(vec![
        ("scrape_mkt".into(), hubspot.counters()),
        ("scrape_crm".into(), salesforce.counters()),
    ]);
    let app = router(state(Arc::new(source)));

    // Nothing reported yet: counters at zero, no budget gauge.
    let (_, _, text) = get(&app, "/metrics").await;
    let samples = parse_prometheus(&text);
    let budget =
        |s: &[Sample], conn: &str| value_of(s, m::RATE_LIMIT_REMAINING, &[(m::CONNECTOR, conn)]);
    assert_eq!(budget(&samples, "scrape_mkt"), None);
    assert_eq!(budget(&samples, "scrape_crm"), None);

    let hs = hubspot.healthcheck().await;
    assert!(matches!(hs, Err(ConnectorError::RateLimited { .. })), "{hs:?}");
    let hs = hubspot.healthcheck().await;
    assert!(matches!(hs, Err(ConnectorError::Transient(_))), "{hs:?}");
    hubspot.healthcheck().await.expect("third call succeeds");
    let sf = salesforce.healthcheck().await;
    assert!(matches!(sf, Err(ConnectorError::RateLimited { .. })), "{sf:?}");
    let sf = salesforce.healthcheck().await;
    assert!(matches!(sf, Err(ConnectorError::Rejected { .. })), "{sf:?}");
    salesforce.healthcheck().await.expect("third call succeeds");

    let (_, _, text) = get(&app, "/metrics").await;
    let samples = parse_prometheus(&text);
    let calls = |conn: &str, outcome: &str| {
        value_of(&samples, m::API_CALLS, &[(m::CONNECTOR, conn), (m::OUTCOME, outcome)])
    };
    assert_eq!(
        (
            calls("scrape_mkt", "ok"),
            calls("scrape_mkt", "rate_limited"),
            calls("scrape_mkt", "error")
        ),
        (Some(1.0), Some(1.0), Some(1.0))
    );
    // The token request is a call too.
    assert_eq!(
        (
            calls("scrape_crm", "ok"),
            calls("scrape_crm", "rate_limited"),
            calls("scrape_crm", "error")
        ),
        (Some(2.0), Some(1.0), Some(1.0))
    );
    assert_eq!(budget(&samples, "scrape_mkt"), Some(87.0));
    assert_eq!(budget(&samples, "scrape_crm"), Some(14_975.0), "max - used");

    // The old counts stay consistent with the outcomes.
    for counters in [hubspot.counters(), salesforce.counters()] {
        let n = counters.snapshot();
        assert_eq!(n.reads + n.writes, n.ok + n.rate_limited + n.failed, "{n:?}");
        assert_eq!(n.errors, n.rate_limited + n.failed, "{n:?}");
    }
}

#[tokio::test]
async fn serves_on_a_real_socket_and_stops_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (trigger, shutdown) = crate::shutdown::channel();
    let server = tokio::spawn(serve(listener, state(Fake::healthy()), shutdown));

    let client = reqwest::Client::new();
    let res = client.get(format!("http://{addr}/healthz")).send().await.expect("healthz");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert_eq!(res.text().await.expect("body"), "ok");
    let res = client.get(format!("http://{addr}/readyz")).send().await.expect("readyz");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let res = client.get(format!("http://{addr}/metrics")).send().await.expect("metrics");
    let text = res.text().await.expect("body");
    assert!(text.contains(r#"leadsync_inbox_pending_records{connector="fake_source"} 42"#));
    let res = client.get(format!("http://{addr}/nope")).send().await.expect("404");
    assert_eq!(res.status(), reqwest::StatusCode::NOT_FOUND);
    drop(client);

    trigger.trigger();
    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
    stopped.expect("stops after shutdown").expect("task").expect("serve ok");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener closed");
}
