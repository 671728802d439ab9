//! The SOAP API's `merge()` (partner WSDL, `POST /services/Soap/u/<version>`), the one call
//! leadsync makes over SOAP: the REST API cannot merge records.
//!
//! Modelled on Salesforce's documentation of `merge()` (api-facts says nothing of SOAP; these
//! are our decisions, from the SOAP API developer guide):
//! - The session is the OAuth access token in `<SessionHeader><sessionId>`; a missing or
//!   expired one is a `sf:INVALID_SESSION_ID` fault. Faults come with HTTP 500, as SOAP 1.1
//!   has them; the request limit is a `sf:REQUEST_LIMIT_EXCEEDED` fault.
//! - The call passes the same gate as REST data calls (daily API limit, injected faults) and
//!   counts as one API write.
//! - Up to 200 `request`s per call, each its own transaction with its own `result`
//!   (`success`, `id`, `mergedRecordIds`, or `errors` with `statusCode` and `message`).
//!   Each merges one master and one or two records (`recordToMergeIds`) of one type; only
//!   Lead and Contact exist here (Account is not modelled). The master's fields given in the
//!   request are not applied: leadsync sends only the type and the id.
//! - Only `merge` is implemented; any other operation is a `sf:INVALID_OPERATION` fault.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Inner;
use super::server::{Gate, gate_token, valid_version, with_limit_info};
use super::store::Obj;
use crate::xml::{Node, XmlLimits, escape, parse_tree, soap_body};

const PARTNER_NS: &str = "urn:partner.soap.sforce.com";
/// Requests in one `merge()` call.
pub const MAX_MERGE_REQUESTS: usize = 200;
const LIMITS: XmlLimits = XmlLimits { max_depth: 12, max_elements: 10_000 };

fn xml_resp(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    r
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope \
         xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns=\"{PARTNER_NS}\" xmlns:sf=\"urn:fault.partner.soap.sforce.com\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>{body}\
         </soapenv:Body></soapenv:Envelope>"
    )
}

/// A SOAP fault (HTTP 500), `code` like `sf:INVALID_SESSION_ID`.
pub fn fault(code: &str, message: &str) -> Response {
    let text = escape(&format!("{}: {message}", code.trim_start_matches("sf:")));
    xml_resp(
        StatusCode::INTERNAL_SERVER_ERROR,
        envelope(&format!(
            "<soapenv:Fault><faultcode>{}</faultcode><faultstring>{text}</faultstring>\
             </soapenv:Fault>",
            escape(code)
        )),
    )
}

/// `POST /services/Soap/u/<version>`.
pub(super) async fn handle(sim: &Inner, method: &Method, ver: &str, body: &[u8]) -> Response {
    if !valid_version(&format!("v{ver}")) {
        return fault(
            "sf:UNSUPPORTED_API_VERSION",
            &format!("Invalid Api version specified on URL: {ver}"),
        );
    }
    if method != Method::POST {
        return fault("soapenv:Client", "SOAP requests must be POSTed");
    }
    let parsed = std::str::from_utf8(body)
        .map_err(|_| "body is not utf-8")
        .and_then(|t| parse_tree(t, LIMITS).map_err(|e| e.0));
    let root = match parsed {
        Ok(r) => r,
        Err(why) => return fault("soapenv:Client", &format!("Unable to parse request: {why}")),
    };
    let token = root
        .children
        .iter()
        .find(|c| c.local == "Header")
        .and_then(|h| h.child("SessionHeader"))
        .and_then(|s| s.text_of("sessionId"));
    match gate_token(sim, token) {
        Gate::Go(Some(delay)) => tokio::time::sleep(delay).await,
        Gate::Go(None) => {}
        Gate::Stop(resp) => return with_limit_info(sim, as_fault(resp)),
    }
    super::bump(&sim.counters.api_writes, 1);
    let op = match soap_body(&root) {
        Ok(b) => b.children.first(),
        Err(e) => return with_limit_info(sim, fault("soapenv:Client", e.0)),
    };
    let resp = match op {
        Some(op) if op.local == "merge" => merge(sim, op),
        Some(op) => fault(
            "sf:INVALID_OPERATION",
            &format!("No operation available for request {{{PARTNER_NS}}}{}", op.local),
        ),
        None => fault("soapenv:Client", "empty SOAP body"),
    };
    with_limit_info(sim, resp)
}

/// The gate's REST-shaped refusals as the SOAP API says them.
fn as_fault(resp: Response) -> Response {
    match resp.status() {
        StatusCode::UNAUTHORIZED => fault(
            "sf:INVALID_SESSION_ID",
            "Invalid Session ID found in SessionHeader: Illegal Session",
        ),
        StatusCode::FORBIDDEN => {
            fault("sf:REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        }
        // Injected 5xx: the REST body and status stand (a proxy or an outage answers the same).
        _ => resp,
    }
}

fn merge(sim: &Inner, op: &Node) -> Response {
    let requests: Vec<&Node> = op.children_named("request").collect();
    if requests.is_empty() {
        return fault("soapenv:Client", "merge needs at least one request");
    }
    if requests.len() > MAX_MERGE_REQUESTS {
        return fault(
            "sf:EXCEEDED_ID_LIMIT",
            &format!("merge takes at most {MAX_MERGE_REQUESTS} requests"),
        );
    }
    let mut results = String::new();
    for r in requests {
        results.push_str(&merge_one(sim, r));
    }
    xml_resp(StatusCode::OK, envelope(&format!("<mergeResponse>{results}</mergeResponse>")))
}

fn merge_one(sim: &Inner, request: &Node) -> String {
    let error = |code: &str, message: &str| {
        format!(
            "<result><errors><message>{}</message><statusCode>{}</statusCode></errors>\
             <id xsi:nil=\"true\"/><success>false</success></result>",
            escape(message),
            escape(code)
        )
    };
    let Some(master) = request.child("masterRecord") else {
        return error("MISSING_ARGUMENT", "masterRecord not specified");
    };
    let kind = master.text_of("type").unwrap_or_default();
    let obj = match Obj::parse(kind) {
        Some(o @ (Obj::Lead | Obj::Contact)) => o,
        _ => return error("INVALID_TYPE", "merge is supported for Lead, Contact and Account"),
    };
    let Some(master_id) = master.text_of("Id") else {
        return error("MISSING_ARGUMENT", "masterRecord has no Id");
    };
    let losers: Vec<&str> = request
        .children_named("recordToMergeIds")
        .map(|n| n.text.trim())
        .filter(|t| !t.is_empty())
        .collect();
    let mut st = sim.lock();
    let table = st.store.table(obj);
    let Some(master_row) = table.row_of(master_id) else {
        return error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id");
    };
    let mut rows = Vec::with_capacity(losers.len());
    for id in &losers {
        match table.row_of(id) {
            Some(r) => rows.push(r),
            None => return error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"),
        }
    }
    let master_id = table.rows[master_row].id(&table.schema).to_owned();
    let merged: Vec<String> =
        rows.iter().map(|r| table.rows[*r].id(&table.schema).to_owned()).collect();
    match st.store.merge(obj, master_row, &rows) {
        Ok(()) => {
            let ids: String = merged
                .iter()
                .map(|id| format!("<mergedRecordIds>{}</mergedRecordIds>", escape(id)))
                .collect();
            format!("<result><id>{}</id>{ids}<success>true</success></result>", escape(&master_id))
        }
        Err(e) => error(&e.code, &e.message),
    }
}
