//! Outbound Messages (api-facts §2.7): a workflow rule "on create and every edit" of Lead whose
//! action POSTs a SOAP `notifications` message to a configured endpoint, through the shared
//! engine ([`crate::sim::webhooks`]).
//!
//! Each committed Lead write (REST single or collections, `insert`, `ui_update`,
//! `convert_lead`) queues one notification with its own `04l…` id; deletes queue nothing
//! (workflow rules do not fire on delete). The record's values are read when the message is
//! built, on every try: the receiver only ever sees the latest values, and a notification whose
//! record was deleted meanwhile carries only `sf:Id` ("the notification contains no data").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use quick_xml::NsReader;
use quick_xml::events::Event as XmlEvent;
use quick_xml::name::ResolveResult;

use super::Inner;
use super::store::{Obj, Val, make_id, org_id};
use crate::sim::webhooks::{
    DeliveryOptions, DeliveryStats, Endpoint, LazyEngine, Prepared, RetrySchedule,
};

const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
/// API version in the `EnterpriseUrl`/`PartnerUrl` the message carries.
const SOAP_API_VERSION: &str = "62.0";

/// The Lead fields leadsync reads, sent by default.
pub const DEFAULT_OUTBOUND_FIELDS: &[&str] = &[
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Company",
    "Phone",
    "Title",
    "Status",
    "LeadSource",
    "HasOptedOutOfEmail",
    "IsConverted",
    "ConvertedContactId",
    "LastModifiedDate",
    "SystemModstamp",
];

/// The outbound message action on Lead.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceOutboundOptions {
    /// Endpoint URL; `None` switches the action off (writes queue nothing). Userinfo
    /// (`https://user:pass@host/…`) is sent as `Authorization: Basic`, as Salesforce does.
    pub endpoint_url: Option<String>,
    /// The outbound message's id (`04k…`).
    pub action_id: String,
    /// Lead fields to send, by API name (`Id` is always sent first as `sf:Id`).
    pub fields: Vec<String>,
    /// Fill `SessionId` with a live session token of the org (off: `xsi:nil`).
    pub send_session_id: bool,
    /// How long notifications gather before a message of up to 100 is sent.
    pub batch_window: Duration,
    /// Messages in flight at once (Salesforce documents no number).
    pub max_concurrent: usize,
    /// A receiver slower than this fails the try (Salesforce: 60 s).
    pub timeout: Duration,
    /// Multiplies retry delays (1.0 = real time).
    pub time_scale: f64,
}

impl Default for SalesforceOutboundOptions {
    fn default() -> Self {
        SalesforceOutboundOptions {
            endpoint_url: None,
            action_id: make_id("04k", 1),
            fields: DEFAULT_OUTBOUND_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
            send_session_id: false,
            batch_window: Duration::from_millis(50),
            max_concurrent: 10,
            timeout: Duration::from_secs(60),
            time_scale: 1.0,
        }
    }
}

/// Salesforce's documented back-off: "the interval between retries increases exponentially,
/// up to a maximum of two hours between retries", messages dropped at 24 hours. The first
/// interval is not documented; a Salesforce employee on Salesforce StackExchange (question
/// 142580) puts it "in the order of 2-5 seconds": we wait 5 s and double, so 21 retries
/// (5 s … 85 min, then every 2 h) fit in 24 h. ±20 % jitter.
pub fn salesforce_retry_schedule() -> RetrySchedule {
    RetrySchedule::Exponential {
        initial: Duration::from_secs(5),
        factor: 2.0,
        max_interval: Duration::from_secs(2 * 3600),
        give_up_after: Duration::from_secs(24 * 3600),
    }
}

/// One queued notification.
pub(crate) struct Notification {
    id: String,
    record_id: String,
}

pub(crate) struct OutboundEndpoint {
    /// Weak: the engine's tasks must not keep the org alive (and with it the engine).
    inner: Weak<Inner>,
}

pub(crate) struct Outbound {
    endpoint_url: Mutex<Option<String>>,
    engine: LazyEngine<OutboundEndpoint>,
    next_notification: AtomicU64,
}

impl Outbound {
    pub fn new(opts: &SalesforceOutboundOptions) -> Outbound {
        Outbound {
            endpoint_url: Mutex::new(opts.endpoint_url.clone()),
            engine: LazyEngine::default(),
            next_notification: AtomicU64::new(1),
        }
    }

    pub fn endpoint_url(&self) -> Option<String> {
        self.endpoint_url.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_endpoint_url(&self, url: Option<String>) {
        *self.endpoint_url.lock().unwrap_or_else(|p| p.into_inner()) = url;
    }

    pub fn stats(&self) -> DeliveryStats {
        self.engine.stats()
    }

    pub fn stop(&self) {
        self.engine.stop();
    }

    /// Queues one notification per committed Lead write (nothing when the action is off).
    pub fn emit(&self, inner: &Inner, lead_ids: Vec<String>) {
        if self.endpoint_url().is_none() {
            return;
        }
        let weak = inner.me.clone();
        let o = &inner.opts.outbound;
        let opts = DeliveryOptions {
            batch_window: o.batch_window,
            max_batch: 100,
            max_concurrent: o.max_concurrent,
            timeout: o.timeout,
            retry: salesforce_retry_schedule(),
            jitter: 0.2,
            time_scale: o.time_scale,
        };
        self.engine.with(
            || (OutboundEndpoint { inner: weak }, opts),
            |engine| {
                for record_id in lead_ids {
                    let seq = self.next_notification.fetch_add(1, Ordering::Relaxed);
                    engine.push(Notification { id: make_id("04l", seq), record_id });
                }
            },
        );
    }
}

impl Endpoint for OutboundEndpoint {
    type Item = Notification;

    fn prepare(&self, client: &reqwest::Client, items: &[Notification], _attempt: u32) -> Prepared {
        let Some(inner) = self.inner.upgrade() else { return Prepared::Done };
        let Some(target) = inner.outbound.endpoint_url() else { return Prepared::Done };
        let Ok(mut url) = url::Url::parse(&target) else { return Prepared::Done };
        let user = percent_decode(url.username());
        let pass = url.password().map(percent_decode);
        // Userinfo becomes a header, never part of the request line.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let body = build_message(&inner, items);
        let mut request = client
            .post(url)
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "\"\"")
            .body(body);
        if !user.is_empty() || pass.is_some() {
            request = request.basic_auth(user, pass);
        }
        Prepared::Send(Box::new(request))
    }

    fn accepted(&self, status: reqwest::StatusCode, body: &[u8]) -> bool {
        status == reqwest::StatusCode::OK && is_ack(body)
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// XML text and attribute escaping.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(ch),
        }
    }
    out
}

/// The SOAP API's datetime form: `2024-05-01T10:00:00.000Z`.
fn soap_datetime(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Builds the message from the records as they are now.
fn build_message(inner: &Inner, items: &[Notification]) -> String {
    let o = &inner.opts.outbound;
    let org = org_id();
    let base = {
        let b = inner.base_url.lock().unwrap_or_else(|p| p.into_inner()).clone();
        b.unwrap_or_else(|| "https://leadsync-sim.my.salesforce.com".to_owned())
    };
    let mut st = inner.lock();
    let session = if o.send_session_id {
        // A real session, usable against this org's API, as Salesforce sends.
        let token = format!("{}!{}", &org[..15], uuid::Uuid::new_v4().simple());
        st.sessions.insert(token.clone(), tokio::time::Instant::now());
        format!("<SessionId>{}</SessionId>", esc(&token))
    } else {
        "<SessionId xsi:nil=\"true\"/>".to_owned()
    };
    let mut xml = String::with_capacity(1024 + items.len() * 1024);
    xml.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    xml.push_str(concat!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
        r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" "#,
        r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
        r#"<soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    ));
    xml.push_str(&format!("<OrganizationId>{}</OrganizationId>", esc(&org)));
    xml.push_str(&format!("<ActionId>{}</ActionId>", esc(&o.action_id)));
    xml.push_str(&session);
    xml.push_str(&format!(
        "<EnterpriseUrl>{}</EnterpriseUrl><PartnerUrl>{}</PartnerUrl>",
        esc(&format!("{base}/services/Soap/c/{SOAP_API_VERSION}/{}", &org[..15])),
        esc(&format!("{base}/services/Soap/u/{SOAP_API_VERSION}/{}", &org[..15])),
    ));
    let table = st.store.table(Obj::Lead);
    for n in items {
        xml.push_str(&format!("<Notification><Id>{}</Id>", esc(&n.id)));
        xml.push_str(concat!(
            r#"<sObject xsi:type="sf:Lead" "#,
            r#"xmlns:sf="urn:sobject.enterprise.soap.sforce.com">"#,
        ));
        xml.push_str(&format!("<sf:Id>{}</sf:Id>", esc(&n.record_id)));
        let live = table.row_of(&n.record_id).filter(|r| !table.rows[*r].is_deleted());
        if let Some(row) = live {
            let rec = &table.rows[row];
            for name in &o.fields {
                if name.eq_ignore_ascii_case("Id") {
                    continue;
                }
                let Some(idx) = table.schema.field(name) else { continue };
                let api_name = &table.schema.fields[idx].name;
                match &rec.vals[idx] {
                    Val::Null => xml.push_str(&format!("<sf:{api_name} xsi:nil=\"true\"/>")),
                    Val::Str(s) => {
                        xml.push_str(&format!("<sf:{api_name}>{}</sf:{api_name}>", esc(s)))
                    }
                    Val::Bool(b) => xml.push_str(&format!("<sf:{api_name}>{b}</sf:{api_name}>")),
                    Val::Num(n) => xml.push_str(&format!("<sf:{api_name}>{n}</sf:{api_name}>")),
                    Val::Dt(ms) => xml.push_str(&format!(
                        "<sf:{api_name}>{}</sf:{api_name}>",
                        soap_datetime(*ms)
                    )),
                }
            }
        }
        xml.push_str("</sObject></Notification>");
    }
    xml.push_str("</notifications></soapenv:Body></soapenv:Envelope>");
    xml
}

/// Whether `body` is a SOAP envelope whose body holds `notificationsResponse` › `Ack` = `true`
/// in the outbound namespace. Anything else (wrong namespace, `false`, a fault, not XML) is a
/// failed delivery, as for Salesforce.
pub(crate) fn is_ack(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else { return false };
    let mut reader = NsReader::from_str(text);
    let expected: [(&str, &str); 4] = [
        (SOAP_ENV_NS, "Envelope"),
        (SOAP_ENV_NS, "Body"),
        (OUTBOUND_NS, "notificationsResponse"),
        (OUTBOUND_NS, "Ack"),
    ];
    let mut path: Vec<(String, String)> = Vec::new();
    let mut ack_text = String::new();
    let mut in_ack = false;
    let mut acked = false;
    loop {
        let Ok((ns, event)) = reader.read_resolved_event() else { return false };
        let ns = match ns {
            ResolveResult::Bound(n) => n.into_inner().to_owned(),
            _ => String::new(),
        };
        match event {
            XmlEvent::Start(start) => {
                let local = start.local_name().into_inner().to_owned();
                path.push((ns, local));
                in_ack = path.len() == 4
                    && path
                        .iter()
                        .zip(expected.iter())
                        .all(|((n, l), (en, el))| n == en && l == el);
                if in_ack {
                    ack_text.clear();
                }
            }
            XmlEvent::Text(t) if in_ack => {
                ack_text.push_str(&t.xml10_content());
            }
            XmlEvent::End(_) => {
                if in_ack && ack_text.trim() == "true" {
                    acked = true;
                }
                in_ack = false;
                path.pop();
            }
            XmlEvent::Eof => return acked,
            XmlEvent::DocType(_) => return false,
            _ => {}
        }
    }
}
