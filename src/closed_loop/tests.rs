//! The poller against a scripted source: pages stored with their cursors, the stored cursor
//! passed back, errors waited out by kind; and the `[closed_loop]` settings.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::TimeZone;

use super::*;
use crate::connectors::Cursor;
use crate::connectors::closed_loop::ClosedLoopPage;
use crate::domain::RemoteId;
use crate::domain::closed_loop::{CampaignTouch, Opportunity, TouchKind};
use crate::shutdown::{self, Trigger};

type Reply = Result<ClosedLoopPage, ConnectorError>;

/// Answers polls from a script, noting the cursor of each; fires shutdown once it is spent.
struct Script {
    calls: Mutex<Vec<Cursor>>,
    replies: Mutex<VecDeque<Reply>>,
    trigger: Trigger,
}

impl ClosedLoopSource for Script {
    async fn poll_closed_loop(&self, cursor: &Cursor) -> Result<ClosedLoopPage, ConnectorError> {
        self.calls.lock().expect("calls").push(cursor.clone());
        let next = self.replies.lock().expect("replies").pop_front();
        next.unwrap_or_else(|| {
            self.trigger.trigger();
            Ok(ClosedLoopPage {
                next_cursor: cursor.clone(),
                poll_again_after: Duration::from_secs(3600),
                ..Default::default()
            })
        })
    }
}

fn t(s: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

fn opportunity() -> Opportunity {
    Opportunity {
        remote: RemoteId { object_type: "deal".into(), id: "9".into() },
        name: None,
        amount_cents: Some(100),
        currency: Some("EUR".into()),
        stage: "closedwon".into(),
        pipeline: Some("default".into()),
        is_closed: true,
        is_won: true,
        close_date: None,
        primary_campaign: None,
        contacts: vec![],
        created_at: Some(t(0)),
        modified_at: t(0),
        deleted: false,
    }
}

fn touch(id: &str) -> CampaignTouch {
    CampaignTouch {
        touch_id: id.into(),
        person: RemoteId { object_type: "contact".into(), id: "1".into() },
        lead: None,
        campaign_id: "Ebook".into(),
        campaign_name: None,
        kind: TouchKind::FormSubmission,
        at: t(0),
        responded: true,
        responded_on: None,
        modified_at: t(0),
        deleted: false,
    }
}

fn page(
    cursor: &str,
    opportunities: Vec<Opportunity>,
    touches: Vec<CampaignTouch>,
    more: bool,
) -> Reply {
    Ok(ClosedLoopPage {
        opportunities,
        touches,
        activities: Vec::new(),
        next_cursor: Cursor(Some(cursor.into())),
        poll_again_after: if more { Duration::ZERO } else { Duration::from_millis(1) },
    })
}

#[tokio::test]
async fn pages_are_stored_with_their_cursor_and_errors_are_waited_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Ledger::open(&dir.path().join("l.db")).expect("open"));
    let (trigger, shutdown) = shutdown::channel();
    let script = Script {
        calls: Mutex::new(Vec::new()),
        replies: Mutex::new(VecDeque::from([
            page("c1", vec![opportunity()], vec![touch("a")], true),
            // The overlap re-read of the same opportunity, and a new touch.
            page("c2", vec![opportunity()], vec![touch("b")], false),
            Err(ConnectorError::Transient("http 503".into())),
            page("c3", vec![], vec![touch("b")], false),
        ])),
        trigger,
    };
    let settings = ClosedLoopSettings {
        enabled: true,
        poll_interval: Duration::from_millis(1),
        error_backoff: Duration::from_millis(1),
        systems: None,
    };
    let name = SystemName("marketing".into());
    tokio::time::timeout(
        Duration::from_secs(10),
        run(&script, &name, &ledger, &settings, shutdown),
    )
    .await
    .expect("the poller stops once shutdown fires")
    .expect("no ledger error");

    let calls = script.calls.lock().expect("calls").clone();
    let c = |s: &str| Cursor(Some(s.into()));
    assert_eq!(
        calls,
        vec![Cursor(None), c("c1"), c("c2"), c("c2"), c("c3")],
        "each poll starts from the stored cursor; a failed poll moves nothing"
    );
    assert_eq!(ledger.closed_loop_cursor(&name).expect("cursor"), c("c3"));
    let status = ledger.closed_loop_status().expect("status");
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].opportunities, status[0].touches), (1, 2));
    assert_eq!(status[0].last_error.as_deref(), Some("transient failure: http 503"));
    assert!(status[0].last_ok_at.is_some());
}

#[test]
fn errors_wait_by_kind() {
    let b = Duration::from_secs(30);
    let rl = |s| ConnectorError::RateLimited { retry_after: Some(Duration::from_secs(s)) };
    assert_eq!(wait_after_error(&rl(90), b), Duration::from_secs(90));
    assert_eq!(wait_after_error(&rl(1), b), b, "never faster than the backoff");
    assert_eq!(wait_after_error(&ConnectorError::RateLimited { retry_after: None }, b), b);
    assert_eq!(wait_after_error(&ConnectorError::Transient("x".into()), b), b);
    let long = Duration::from_secs(360);
    assert_eq!(wait_after_error(&ConnectorError::Auth("x".into()), b), long);
    assert_eq!(wait_after_error(&ConnectorError::Config("x".into()), b), long);
    let rejected = ConnectorError::Rejected { code: "INVALID_TYPE".into(), message: "x".into() };
    assert_eq!(wait_after_error(&rejected, b), long);
}

/// The demo configuration with `extra` TOML appended, through the real settings loader.
fn load(extra: &str) -> Result<ClosedLoopSettings, crate::settings::SettingsError> {
    use crate::settings::{DEMO_TOML, Settings, Source};
    let env: std::collections::HashMap<String, String> =
        [("LEADSYNC_DEMO_SALESFORCE_SECRET", "s"), ("LEADSYNC_DEMO_HUBSPOT_TOKEN", "t")]
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
    let text = format!("{DEMO_TOML}\n{extra}");
    Settings::load(Source::Inline(&text), &env).map(|s| s.closed_loop)
}

fn key_of(e: crate::settings::SettingsError) -> String {
    match e {
        crate::settings::SettingsError::Key(k) => k.key,
        other => other.to_string(),
    }
}

#[test]
fn settings_default_off_and_name_the_key_at_fault() {
    let crm = SystemName("crm".into());
    let marketing = SystemName("marketing".into());
    let off = load("").expect("defaults");
    assert_eq!(off, ClosedLoopSettings::default());
    assert!(!off.polls(&crm), "off unless enabled");

    let on = load("[closed_loop]\nenabled = true\npoll_interval_secs = 60\nsystems = [\"crm\"]")
        .expect("valid");
    assert_eq!(on.poll_interval, Duration::from_secs(60));
    assert!(on.polls(&crm));
    assert!(!on.polls(&marketing), "only the listed systems");
    let all = load("[closed_loop]\nenabled = true").expect("valid");
    assert!(all.polls(&crm) && all.polls(&marketing), "every system by default");

    let e = load("[closed_loop]\nsystems = [\"erp\"]").expect_err("unknown system");
    assert_eq!(key_of(e), "closed_loop.systems");
    let e = load("[closed_loop]\npoll_interval_secs = 0").expect_err("zero");
    assert_eq!(key_of(e), "closed_loop.poll_interval_secs");
    let e = load("[closed_loop]\nenable = true").expect_err("unknown key");
    assert!(key_of(e).contains("enable"));
}
