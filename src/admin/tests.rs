//! Admin endpoint tests: the router through `oneshot` with a test-double source and with the
//! real ledger, a Prometheus text check, and one test over a real socket with shutdown.

use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::*;
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

/// Checks Prometheus text format 0.0.4 as far as we emit it: `# HELP`/`# TYPE` comments, and
/// `name{k="v",...} value` samples whose metric family was typed before. Returns the sample
/// lines as (name, labels, value).
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram", "summary"].contains(&kind), "{line}");
            typed.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let close = inner.find('}').expect("labels closed");
            for pair in inner[..close].split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("label k=v");
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                labels.push((k.to_string(), v.expect("quoted label value").to_string()));
            }
            rest = &inner[close + 1..];
        }
        let value = rest.strip_prefix(' ').expect("one space before the value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("float value: {line}"));
        let family = typed.last().map(|(n, k)| (n.as_str(), k.as_str()));
        let ok = match family {
            Some((n, "histogram")) => {
                [n.to_string() + "_bucket", n.to_string() + "_sum", n.to_string() + "_count"]
                    .contains(&name.to_string())
            }
            Some((n, _)) => n == name,
            None => false,
        };
        assert!(ok, "sample not preceded by its # TYPE line: {line}");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[test]
fn the_parser_rejects_malformed_text() {
    let good = "# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert_eq!(parse_prometheus(good).len(), 1);
    for bad in [
        "a_total 1\n",                              // no TYPE line
        "# TYPE a_total counter\na_total{x=1} 2\n", // unquoted label
        "# TYPE a_total counter\na_total x\n",      // not a float
        "# TYPE a gauge\nb 1\n",                    // other family
    ] {
        let r = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(r.is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test]
async fn metrics_render_every_name_as_prometheus_text_with_fresh_ledger_gauges() {
    let (_dir, ledger) = real_ledger(&["metrics_crm"]);
    ledger.record_poll_ok(&SystemName("metrics_crm".into()), Utc::now()).expect("poll ok");
    let app = router(state(Arc::new(LedgerSource::new(Arc::clone(&ledger)))));

    // Touch every pipeline metric once, as the pollers and pushers will.
    let c = "metrics_crm";
    m::event_received(c);
    m::event_rejected(c, "bad_signature");
    m::api_call(c, m::OUTCOME_OK);
    m::push_duration(c, Duration::from_millis(120));
    m::rate_limit_remaining(c, 99);
    m::records_polled(c, 7);
    m::records_pushed(c, m::OUTCOME_OK, 5);

    let (status, ctype, text) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.expect("content type").starts_with("text/plain; version=0.0.4"));
    let samples = parse_prometheus(&text);
    for name in m::ALL {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from:\n{text}");
    }
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(&(m::CONNECTOR.into(), c.into())))
            .map(|s| s.2)
    };
    assert_eq!(value(m::INBOX_PENDING), Some(0.0));
    assert_eq!(value(m::DEAD_RECORDS), Some(0.0));
    assert_eq!(value(m::RECORDS_POLLED), Some(7.0));
    assert_eq!(value("leadsync_push_duration_seconds_count"), Some(1.0));
    let polled_at = value(m::LAST_POLL_SUCCESS).expect("last poll gauge");
    #[allow(clippy::cast_precision_loss, reason = "unix seconds")]
    let now = Utc::now().timestamp() as f64;
    assert!((now - polled_at).abs() < 5.0, "{polled_at} vs {now}");

    // Gauges follow the ledger on the next scrape.
    let mkt = SystemName("metrics_crm".into());
    let change = crate::domain::Change {
        remote: crate::domain::RemoteId { object_type: "Lead".into(), id: "1".into() },
        fields: [(crate::domain::Field::Email, "a@x.test".to_string())].into(),
        ledger_key: None,
        modified_at: Utc::now(),
        fetched_at: Utc::now(),
        deleted: false,
    };
    ledger.ingest(&mkt, "poll", &[change], None, Utc::now()).expect("ingest");
    let (_, _, text) = get(&app, "/metrics").await;
    assert!(
        text.contains(&format!("{}{{connector=\"metrics_crm\"}} 1\n", m::INBOX_PENDING)),
        "{text}"
    );
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
