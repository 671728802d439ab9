//! Drives the simulator over real HTTP on 127.0.0.1:0, as a connector would.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Fault, SalesforceSim, SalesforceSimOptions, SimFieldType};

const V: &str = "/services/data/v62.0";

struct Harness {
    sim: SalesforceSim,
    http: Client,
    base: String,
    token: String,
}

impl Harness {
    async fn new(opts: SalesforceSimOptions) -> Harness {
        let sim = SalesforceSim::new(opts);
        sim.start("127.0.0.1:0").await.unwrap();
        let base = sim.base_url();
        let http = Client::new();
        let token =
            fetch_token(&http, &base, "sim-client-id", "sim-client-secret").await.1["access_token"]
                .as_str()
                .unwrap()
                .to_owned();
        Harness { sim, http, base, token }
    }

    async fn default() -> Harness {
        Harness::new(SalesforceSimOptions::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let resp = rb.bearer_auth(&self.token).send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        if !status.is_success() {
            let ct = headers.get("content-type").unwrap().to_str().unwrap();
            assert!(ct.starts_with("application/json"), "error without JSON content type: {ct}");
        }
        (status, body, headers)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, b, _) = self.send(self.http.get(self.url(path))).await;
        (s, b)
    }

    async fn query(&self, soql: &str) -> (StatusCode, Value) {
        let (s, b, _) =
            self.send(self.http.get(self.url(&format!("{V}/query"))).query(&[("q", soql)])).await;
        (s, b)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, b, _) = self.send(self.http.request(method, self.url(path)).json(&body)).await;
        (s, b)
    }

    fn seed(&self, object: &str, v: Value) -> String {
        self.sim.insert(object, obj(v)).unwrap()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn fetch_token(http: &Client, base: &str, id: &str, secret: &str) -> (StatusCode, Value) {
    let resp = http
        .post(format!("{base}/services/oauth2/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{ct}");
    (status, resp.json().await.unwrap())
}

fn lead(n: usize) -> Value {
    json!({"LastName": format!("Last{n:05}"), "Company": "Acme", "Email": format!("p{n}@example.test")})
}

fn error_code(body: &Value) -> &str {
    body[0]["errorCode"].as_str().unwrap_or_else(|| panic!("not an error array: {body}"))
}

#[tokio::test]
async fn token_flow_has_no_expires_in_and_rejects_bad_credentials() {
    let h = Harness::default().await;
    let (status, body) = fetch_token(&h.http, &h.base, "sim-client-id", "sim-client-secret").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["instance_url"], json!(h.base));
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["issued_at"].as_str().unwrap().parse::<i64>().unwrap() > 1_600_000_000_000);
    assert!(body["id"].as_str().unwrap().starts_with(&format!("{}/id/00D", h.base)));
    assert!(body["signature"].is_string());
    assert!(body.get("expires_in").is_none(), "{body}");

    let (status, body) = fetch_token(&h.http, &h.base, "sim-client-id", "wrong").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_client", "error_description": "invalid client credentials"})
    );
    let (status, body) = fetch_token(&h.http, &h.base, "nope", "sim-client-secret").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_client_id");

    let resp = h
        .http
        .post(h.url("/services/oauth2/token"))
        .form(&[("grant_type", "password"), ("client_id", "sim-client-id")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    assert_eq!(h.sim.stats().token_requests, 5, "four here plus the harness");
    assert_eq!(h.sim.api_usage(), 0, "token calls are not API calls");
}

#[tokio::test]
async fn token_accepts_a_chunked_body_without_content_length() {
    let h = Harness::default().await;
    let form =
        "grant_type=client_credentials&client_id=sim-client-id&client_secret=sim-client-secret";
    let (a, b) = form.split_at(20);
    let addr = h.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /services/oauth2/token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("access_token"), "{out}");
}

#[tokio::test]
async fn revoked_expired_or_missing_tokens_get_401_invalid_session_id() {
    let h = Harness::new(SalesforceSimOptions {
        session_ttl: Some(Duration::from_millis(150)),
        ..SalesforceSimOptions::default()
    })
    .await;
    let (status, _) = h.get(&format!("{V}/limits")).await;
    assert_eq!(status, StatusCode::OK);

    let resp = h.http.get(h.url(&format!("{V}/limits"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );

    // Idle timeout.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (status, body) = h.get(&format!("{V}/limits")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "INVALID_SESSION_ID");

    // A fresh token works until revoked.
    let mut h = h;
    h.token =
        fetch_token(&h.http, &h.base, "sim-client-id", "sim-client-secret").await.1["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    assert_eq!(h.get(&format!("{V}/limits")).await.0, StatusCode::OK);
    h.sim.revoke_tokens();
    let (status, body) = h.get(&format!("{V}/limits")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "INVALID_SESSION_ID");
}

#[tokio::test]
async fn query_returns_wire_dates_and_filters_on_all_datetime_forms() {
    let h = Harness::default().await;
    let id = h.seed("Lead", lead(1));
    let rec = h.sim.get("Lead", &id).unwrap();
    let stamp = rec["SystemModstamp"].as_str().unwrap().to_owned();
    assert_eq!(stamp.len(), "2024-05-01T10:00:00.000+0000".len());
    assert!(stamp.ends_with("+0000"), "{stamp}");

    let (status, body) = h
        .query(&format!(
            "SELECT Id, Email, SystemModstamp FROM Lead WHERE SystemModstamp >= {stamp}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["totalSize"], 1);
    assert_eq!(body["done"], true);
    assert!(body.get("nextRecordsUrl").is_none());
    let r = &body["records"][0];
    assert_eq!(r["attributes"], json!({"type": "Lead", "url": format!("{V}/sobjects/Lead/{id}")}));
    assert_eq!(r["Id"], json!(id));
    assert_eq!(r["SystemModstamp"], json!(stamp));
    assert!(r.get("LastName").is_none(), "only selected fields come back");

    let later =
        h.query("SELECT Id FROM Lead WHERE SystemModstamp > 2999-01-01T00:00:00+00:00").await.1;
    assert_eq!(later["totalSize"], 0);
    let (status, body) =
        h.query("SELECT Id FROM Lead WHERE SystemModstamp > 2000-01-01T00:00:00Z ORDER BY SystemModstamp").await;
    assert_eq!((status, body["totalSize"].clone()), (StatusCode::OK, json!(1)));

    // Trailing slash is the same resource; an unencoded `+` arrives as a space and fails.
    let raw = format!(
        "{}{V}/query/?q=SELECT+Id+FROM+Lead+WHERE+SystemModstamp+>+2000-01-01T00:00:00+00:00",
        h.base
    );
    let (status, body, _) = h.send(h.http.get(raw)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "MALFORMED_QUERY");
    let raw = format!(
        "{}{V}/query/?q=SELECT+Id+FROM+Lead+WHERE+SystemModstamp+>+2000-01-01T00:00:00%2B00:00",
        h.base
    );
    let (status, body, _) = h.send(h.http.get(raw)).await;
    assert_eq!((status, body["totalSize"].clone()), (StatusCode::OK, json!(1)));
}

#[tokio::test]
async fn query_errors_are_top_level_arrays() {
    let h = Harness::default().await;
    let (status, body) = h.query("SELECT Id, Nope__c FROM Lead").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "INVALID_FIELD");
    assert!(body[0]["message"].as_str().unwrap().contains("No such column 'Nope__c'"));
    assert_eq!(error_code(&h.query("SELECT Id FROM Lead WHERE").await.1), "MALFORMED_QUERY");
    assert_eq!(error_code(&h.query("SELECT Id FROM Case").await.1), "INVALID_TYPE");
    assert_eq!(error_code(&h.get(&format!("{V}/query")).await.1), "MALFORMED_QUERY");
    assert_eq!(error_code(&h.get("/services/data/v10.0/limits").await.1), "NOT_FOUND");
}

#[tokio::test]
async fn keyset_paging_by_modstamp_and_id_visits_every_record_once() {
    let h = Harness::default().await;
    let mut ids: Vec<String> = (0..25).map(|n| h.seed("Lead", lead(n))).collect();
    // Updates move records to the end of the modstamp order.
    h.sim.ui_update("Lead", &ids[3], obj(json!({"Title": "CEO"}))).unwrap();
    let moved = ids.remove(3);
    ids.push(moved);

    let mut seen = Vec::new();
    let mut cursor: Option<(String, String)> = None;
    loop {
        let filter = match &cursor {
            None => String::new(),
            Some((x, y)) => {
                format!("WHERE SystemModstamp > {x} OR (SystemModstamp = {x} AND Id > '{y}') ")
            }
        };
        let soql = format!(
            "SELECT Id, SystemModstamp FROM Lead {filter}ORDER BY SystemModstamp, Id LIMIT 7"
        );
        let (status, body) = h.query(&soql).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let recs = body["records"].as_array().unwrap();
        if recs.is_empty() {
            break;
        }
        for r in recs {
            seen.push(r["Id"].as_str().unwrap().to_owned());
        }
        let last = recs.last().unwrap();
        cursor = Some((
            last["SystemModstamp"].as_str().unwrap().to_owned(),
            last["Id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn next_records_url_pages_with_batch_size_and_is_a_snapshot() {
    let h = Harness::default().await;
    let ids: Vec<String> = (0..450).map(|n| h.seed("Lead", lead(n))).collect();
    let (status, first, _) = h
        .send(
            h.http
                .get(h.url(&format!("{V}/query")))
                .query(&[("q", "SELECT Id, Title FROM Lead ORDER BY Id")])
                .header("Sforce-Query-Options", "batchSize=200"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["totalSize"], 450);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().unwrap().len(), 200);
    let next = first["nextRecordsUrl"].as_str().unwrap().to_owned();
    assert!(next.starts_with(&format!("{V}/query/01g")) && next.ends_with("-200"), "{next}");

    // A write after the query does not change the pages already promised.
    h.sim.ui_update("Lead", &ids[300], obj(json!({"Title": "Changed"}))).unwrap();

    let (status, second) = h.get(&next).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["records"].as_array().unwrap().len(), 200);
    assert_eq!(second["records"][100]["Id"], json!(ids[300]));
    assert_eq!(second["records"][100]["Title"], Value::Null);
    // jsforce keeps only the locator and rebuilds the path with its own version.
    let locator = second["nextRecordsUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let (status, third) = h.get(&format!("/services/data/v58.0/query/{locator}/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(third["done"], true);
    assert!(third.get("nextRecordsUrl").is_none());
    assert_eq!(third["records"].as_array().unwrap().len(), 50);
    assert_eq!(third["records"][49]["Id"], json!(ids[449]));

    let (status, body) = h.get(&format!("{V}/query/01gXXXXXXXXXXXXXXX-200")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn query_locators_expire_when_idle() {
    let h = Harness::new(SalesforceSimOptions {
        query_batch_size: 200,
        query_locator_ttl: Duration::from_millis(100),
        ..SalesforceSimOptions::default()
    })
    .await;
    for n in 0..201 {
        h.seed("Lead", lead(n));
    }
    let first = h.query("SELECT Id FROM Lead").await.1;
    let next = first["nextRecordsUrl"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = h.get(&next).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn collections_reject_more_than_200_records() {
    let h = Harness::default().await;
    let records: Vec<Value> = (0..201)
        .map(|n| {
            let mut r = lead(n);
            r["attributes"] = json!({"type": "Lead"});
            r
        })
        .collect();
    let (status, body) = h
        .call(
            reqwest::Method::POST,
            &format!("{V}/composite/sobjects"),
            json!({"records": records}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "EXCEEDED_ID_LIMIT");
    assert!(h.sim.all("Lead").is_empty());
}

#[tokio::test]
async fn per_record_failures_come_back_inside_a_200() {
    let h = Harness::default().await;
    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Lead"}, "LastName": "Ok", "Company": "A"},
        {"attributes": {"type": "Lead"}, "LastName": "Bad", "Company": "A", "Status": "Hot"},
        {"attributes": {"type": "Lead"}, "Company": "A"},
        {"attributes": {"type": "Lead"}, "LastName": "Ro", "Company": "A", "IsConverted": true},
        {"attributes": {"type": "Lead"}, "LastName": "Unknown", "Company": "A", "Foo__c": 1},
        {"attributes": {"type": "Contact"}, "LastName": "Person", "Email": "x@y.test"},
    ]});
    let (status, out) =
        h.call(reqwest::Method::POST, &format!("{V}/composite/sobjects"), body).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out[0]["success"], true);
    assert!(out[0]["id"].as_str().unwrap().starts_with("00Q"));
    assert_eq!(out[0]["errors"], json!([]));
    assert_eq!(out[1]["success"], false);
    assert_eq!(
        out[1]["errors"],
        json!([{
            "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "message": "Status: bad value for restricted picklist field: Hot",
            "fields": ["Status"],
        }])
    );
    assert_eq!(out[2]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(out[2]["errors"][0]["fields"], json!(["LastName"]));
    assert_eq!(out[3]["errors"][0]["statusCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert_eq!(out[4]["errors"][0]["statusCode"], "INVALID_FIELD");
    assert!(out[5]["id"].as_str().unwrap().starts_with("003"));
    let leads = h.sim.all("Lead");
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["Status"], "Open - Not Contacted");
    assert_eq!(h.sim.stats().records_created, 2);
    assert_eq!(h.sim.stats().record_errors, 4);

    // A string where a boolean belongs fails the whole request while deserialising.
    let (status, body) = h
        .call(
            reqwest::Method::POST,
            &format!("{V}/composite/sobjects"),
            json!({"records": [{"attributes": {"type": "Lead"}, "LastName": "X", "Company": "A", "HasOptedOutOfEmail": "maybe"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "JSON_PARSER_ERROR");
    let resp = h
        .http
        .post(h.url(&format!("{V}/composite/sobjects")))
        .bearer_auth(&h.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&resp.json::<Value>().await.unwrap()), "JSON_PARSER_ERROR");
}

#[tokio::test]
async fn all_or_none_rolls_everything_back() {
    let h = Harness::default().await;
    let existing = h.seed("Lead", json!({"LastName": "Keep", "Company": "A", "Title": "Old"}));
    let before = h.sim.get("Lead", &existing).unwrap();
    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Lead"}, "id": existing, "Title": "New"},
        {"attributes": {"type": "Lead"}, "id": existing, "Status": "Nope"},
    ]});
    let (status, out) =
        h.call(reqwest::Method::PATCH, &format!("{V}/composite/sobjects"), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out[0]["success"], false);
    assert_eq!(out[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    assert_eq!(out[1]["errors"][0]["statusCode"], "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    assert_eq!(h.sim.get("Lead", &existing).unwrap(), before);

    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Lead"}, "LastName": "N1", "Company": "A", "Leadsync_Id__c": "k1"},
        {"attributes": {"type": "Lead"}, "LastName": "N2", "Company": "A", "Leadsync_Id__c": "K1"},
    ]});
    let (_, out) = h.call(reqwest::Method::POST, &format!("{V}/composite/sobjects"), body).await;
    assert_eq!(out[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    assert!(out[0].get("id").is_none());
    assert_eq!(out[1]["errors"][0]["statusCode"], "DUPLICATE_VALUE");
    assert_eq!(h.sim.all("Lead").len(), 1);
    // The rolled-back external id is free again.
    h.seed("Lead", json!({"LastName": "N3", "Company": "A", "Leadsync_Id__c": "k1"}));
    assert_eq!(h.sim.stats().records_created, 0);
    assert_eq!(h.sim.stats().records_updated, 0);
}

#[tokio::test]
async fn upsert_by_external_id_reports_created() {
    let h = Harness::default().await;
    let existing =
        h.seed("Lead", json!({"LastName": "Old", "Company": "A", "Leadsync_Id__c": "LS-1"}));
    let stamp_before = h.sim.get("Lead", &existing).unwrap()["SystemModstamp"].clone();
    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Lead"}, "Leadsync_Id__c": "ls-1", "LastName": "Old", "Company": "A"},
        {"attributes": {"type": "Lead"}, "Leadsync_Id__c": "LS-2", "LastName": "New", "Company": "B"},
        {"attributes": {"type": "Lead"}, "LastName": "NoKey", "Company": "B"},
    ]});
    let (status, out) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects/Lead/Leadsync_Id__c"),
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out[0], json!({"id": existing, "success": true, "errors": [], "created": false}));
    assert_eq!(out[1]["created"], true);
    assert_eq!(out[2]["success"], false);
    let new_id = out[1]["id"].as_str().unwrap().to_owned();
    // An update with identical values still moves the modstamp, as in Salesforce.
    assert_ne!(h.sim.get("Lead", &existing).unwrap()["SystemModstamp"], stamp_before);

    let (_, again) = h
        .call(reqwest::Method::PATCH, &format!("{V}/composite/sobjects/Lead/Leadsync_Id__c"), body)
        .await;
    assert_eq!(again[1], json!({"id": new_id, "success": true, "errors": [], "created": false}));

    let (status, body) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects/Lead/Email"),
            json!({"records": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "INVALID_FIELD");

    // Single-record upsert: 201 then 200.
    let path = format!("{V}/sobjects/Lead/Leadsync_Id__c/LS-9");
    let (status, out) =
        h.call(reqwest::Method::PATCH, &path, json!({"LastName": "S", "Company": "C"})).await;
    assert_eq!((status, out["created"].clone()), (StatusCode::CREATED, json!(true)));
    let (status, out) = h.call(reqwest::Method::PATCH, &path, json!({"Title": "T"})).await;
    assert_eq!((status, out["created"].clone()), (StatusCode::OK, json!(false)));
}

#[tokio::test]
async fn collection_read_update_and_delete() {
    let h = Harness::default().await;
    let a = h.seed("Lead", lead(1));
    let b = h.seed("Lead", lead(2));
    let missing = super::store::make_id("00Q", 999_999);
    let (status, out) = h
        .get(&format!("{V}/composite/sobjects/Lead?ids={a},{missing},{b}&fields=Email,LastName"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out[0]["Email"], "p1@example.test");
    assert_eq!(out[1], Value::Null);
    assert_eq!(out[2]["Id"], json!(b));
    let (status, out) = h
        .call(
            reqwest::Method::POST,
            &format!("{V}/composite/sobjects/Lead"),
            json!({"ids": [b, &a[..15]], "fields": ["Email"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out[0]["Email"], "p2@example.test");
    assert_eq!(out[1]["Id"], json!(a));

    let (_, out) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            json!({"records": [
                {"attributes": {"type": "Lead"}, "id": a, "Title": "VP"},
                {"attributes": {"type": "Lead"}, "id": missing, "Title": "VP"},
                {"attributes": {"type": "Lead"}, "Title": "VP"},
            ]}),
        )
        .await;
    assert_eq!(out[0]["success"], true);
    assert_eq!(out[1]["success"], false);
    assert_eq!(out[2]["errors"][0]["statusCode"], "MISSING_ARGUMENT");
    assert_eq!(h.sim.get("Lead", &a).unwrap()["Title"], "VP");

    let resp = h
        .http
        .delete(h.url(&format!("{V}/composite/sobjects?ids={a},{b}")))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out[0]["success"], true);
    assert!(h.sim.all("Lead").is_empty());
    assert_eq!(h.query("SELECT Id FROM Lead").await.1["totalSize"], 0);
    let (_, all, _) = h
        .send(
            h.http
                .get(h.url(&format!("{V}/queryAll")))
                .query(&[("q", "SELECT Id, IsDeleted FROM Lead")]),
        )
        .await;
    assert_eq!(all["totalSize"], 2);
    assert_eq!(all["records"][0]["IsDeleted"], true);
    let s = h.sim.stats();
    assert_eq!((s.records_updated, s.records_deleted), (1, 2));
}

#[tokio::test]
async fn single_record_crud() {
    let h = Harness::default().await;
    let (status, out) = h
        .call(
            reqwest::Method::POST,
            &format!("{V}/sobjects/Lead/"),
            json!({"LastName": "S", "Company": "C"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = out["id"].as_str().unwrap().to_owned();
    assert_eq!(out, json!({"id": id, "success": true, "errors": []}));

    let (status, rec) = h.get(&format!("{V}/sobjects/Lead/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rec["LastName"], "S");
    assert_eq!(rec["IsConverted"], false);
    assert!(rec["CreatedDate"].as_str().unwrap().ends_with("+0000"));

    let (status, _) = h
        .call(reqwest::Method::PATCH, &format!("{V}/sobjects/Lead/{id}"), json!({"Title": "T"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h
        .call(reqwest::Method::PATCH, &format!("{V}/sobjects/Lead/{id}"), json!({"Status": "Bad"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body[0]["fields"], json!(["Status"]));

    let (status, _, _) = h.send(h.http.delete(h.url(&format!("{V}/sobjects/Lead/{id}")))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h.get(&format!("{V}/sobjects/Lead/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "NOT_FOUND");
    let missing = super::store::make_id("00Q", 999_999);
    let (status, _) =
        h.call(reqwest::Method::PATCH, &format!("{V}/sobjects/Lead/{missing}"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn converted_leads_cannot_be_updated() {
    let h = Harness::default().await;
    let id = h.seed("Lead", lead(1));
    let contact = h.sim.convert_lead(&id).unwrap();
    let rec = h.sim.get("Lead", &id).unwrap();
    assert_eq!(rec["ConvertedContactId"], json!(contact));
    assert_eq!(rec["Status"], "Closed - Converted");
    assert_eq!(h.sim.get("Contact", &contact).unwrap()["Email"], "p1@example.test");
    let (_, out) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            json!({"records": [{"attributes": {"type": "Lead"}, "id": id, "Title": "X"}]}),
        )
        .await;
    assert_eq!(out[0]["errors"][0]["statusCode"], "CANNOT_UPDATE_CONVERTED_LEAD");
}

#[tokio::test]
async fn conversion_fills_the_contact_and_names_the_account_after_the_company() {
    let h = Harness::default().await;
    let id = h.seed(
        "Lead",
        json!({"FirstName": "Ada", "LastName": "L", "Company": "Acme Ltd", "Title": "CTO",
               "Phone": "+44 1", "LeadSource": "Web", "HasOptedOutOfEmail": true,
               "Email": "ada@example.test", "Leadsync_Id__c": "ledger-1"}),
    );
    let contact_id = h.sim.convert_lead(&id).unwrap();
    let c = h.sim.get("Contact", &contact_id).unwrap();
    for (k, v) in [
        ("FirstName", json!("Ada")),
        ("LastName", json!("L")),
        ("Title", json!("CTO")),
        ("Phone", json!("+44 1")),
        ("LeadSource", json!("Web")),
        ("HasOptedOutOfEmail", json!(true)),
        ("Email", json!("ada@example.test")),
        ("Leadsync_Id__c", Value::Null),
        ("MasterRecordId", Value::Null),
    ] {
        assert_eq!(c[k], v, "{k}");
    }
    let account = c["AccountId"].as_str().unwrap();
    assert!(account.starts_with("001"), "{account}");
    assert_eq!(h.sim.account_name(account).as_deref(), Some("Acme Ltd"));
}

#[tokio::test]
async fn merge_sends_losers_to_the_recycle_bin_pointing_at_the_master() {
    let h = Harness::default().await;
    let master =
        h.seed("Lead", json!({"LastName": "M", "Company": "Acme", "Email": "m@example.test"}));
    let l1 = h.seed(
        "Lead",
        json!({"LastName": "L1", "Company": "Other", "Title": "VP", "Phone": "1",
               "HasOptedOutOfEmail": true, "Leadsync_Id__c": "ledger-l1"}),
    );
    let l2 =
        h.seed("Lead", json!({"LastName": "L2", "Company": "C", "Title": "CEO", "Phone": "2"}));
    let before = h.sim.get("Lead", &master).unwrap()["SystemModstamp"].clone();
    h.sim.merge_records("Lead", &master, &[&l1, &l2]).unwrap();
    let m = h.sim.get("Lead", &master).unwrap();
    // Blank fields filled from the first loser that has them; set ones kept.
    assert_eq!((m["LastName"].clone(), m["Company"].clone()), (json!("M"), json!("Acme")));
    assert_eq!((m["Title"].clone(), m["Phone"].clone()), (json!("VP"), json!("1")));
    assert_eq!(m["HasOptedOutOfEmail"], true, "an opt-out survives");
    assert_eq!(m["Leadsync_Id__c"], Value::Null, "external ids are never copied");
    assert_eq!(m["IsDeleted"], false);
    assert_ne!(m["SystemModstamp"], before);
    for l in [&l1, &l2] {
        let rec = h.sim.get("Lead", l).unwrap();
        assert_eq!(rec["IsDeleted"], true);
        assert_eq!(rec["MasterRecordId"], json!(master));
    }
    let live = h.query("SELECT Id FROM Lead").await.1;
    assert_eq!(live["totalSize"], 1);
    let (_, all, _) = h
        .send(h.http.get(h.url(&format!("{V}/queryAll"))).query(&[(
            "q",
            format!("SELECT Id, IsDeleted, MasterRecordId FROM Lead WHERE Id IN ('{l1}', '{l2}')"),
        )]))
        .await;
    assert_eq!(all["totalSize"], 2);
    assert_eq!(all["records"][0]["MasterRecordId"], json!(master));
    // The collections read does not return merged-away records.
    let (_, read) = h.get(&format!("{V}/composite/sobjects/Lead?ids={l1}&fields=Id")).await;
    assert_eq!(read, json!([null]));
    // MasterRecordId is read-only.
    let (_, out) = h
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            json!({"records": [{"attributes": {"type": "Lead"}, "id": master, "MasterRecordId": l1}]}),
        )
        .await;
    assert_eq!(out[0]["errors"][0]["statusCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");

    // Refusals: merged records are deleted, three losers are too many, a contact id is not a lead.
    let e = h.sim.merge_records("Lead", &master, &[&l1]).unwrap_err();
    assert!(e.starts_with("ENTITY_IS_DELETED"), "{e}");
    let a = h.seed("Lead", lead(1));
    let b = h.seed("Lead", lead(2));
    let c = h.seed("Lead", lead(3));
    let d = h.seed("Lead", lead(4));
    let e = h.sim.merge_records("Lead", &a, &[&b, &c, &d]).unwrap_err();
    assert!(e.starts_with("INVALID_OPERATION"), "{e}");
    let e = h.sim.merge_records("Lead", &a, &[&a]).unwrap_err();
    assert!(e.starts_with("INVALID_ID_FIELD"), "{e}");
    let contact = h.sim.convert_lead(&b).unwrap();
    let e = h.sim.merge_records("Lead", &a, &[&contact]).unwrap_err();
    assert!(e.starts_with("INVALID_ID_FIELD"), "{e}");
    let e = h.sim.merge_records("Lead", &a, &[&b]).unwrap_err();
    assert!(e.starts_with("CANNOT_UPDATE_CONVERTED_LEAD"), "{e}");
    let c2 = h.seed("Contact", json!({"LastName": "Other", "Email": "c2@example.test"}));
    h.sim.merge_records("Contact", &contact, &[&c2]).unwrap();
    assert_eq!(h.sim.get("Contact", &c2).unwrap()["MasterRecordId"], json!(contact));
}

#[tokio::test]
async fn limit_info_header_and_daily_limit() {
    let h = Harness::new(SalesforceSimOptions {
        daily_api_limit: 3,
        ..SalesforceSimOptions::default()
    })
    .await;
    let (_, body, headers) = h.send(h.http.get(h.url(&format!("{V}/limits")))).await;
    assert_eq!(headers["sforce-limit-info"], "api-usage=1/3");
    assert_eq!(body, json!({"DailyApiRequests": {"Max": 3, "Remaining": 2}}));
    let (_, _, headers) =
        h.send(h.http.get(h.url(&format!("{V}/query?q=SELECT+Id+FROM+Lead")))).await;
    assert_eq!(headers["sforce-limit-info"], "api-usage=2/3");
    assert_eq!(h.get(&format!("{V}/limits")).await.0, StatusCode::OK);
    let (status, body, headers) = h.send(h.http.get(h.url(&format!("{V}/limits")))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(headers["sforce-limit-info"], "api-usage=3/3");
    let s = h.sim.stats();
    assert_eq!((s.api_reads, s.errors_returned), (3, 1));
}

#[tokio::test]
async fn injected_faults() {
    let h = Harness::default().await;
    let a = h.seed("Lead", lead(1));
    let b = h.seed("Lead", lead(2));

    h.sim.inject(Fault::ServerError { status: 503, count: 1 });
    let (status, body) = h.get(&format!("{V}/limits")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "SERVER_UNAVAILABLE");
    assert_eq!(h.get(&format!("{V}/limits")).await.0, StatusCode::OK);

    h.sim.inject(Fault::RequestLimit { count: 2 });
    assert_eq!(h.get(&format!("{V}/limits")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.get(&format!("{V}/limits")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.get(&format!("{V}/limits")).await.0, StatusCode::OK);

    h.sim.inject(Fault::RecordError {
        object: "Lead".into(),
        matches: Arc::new(|r: &Map<String, Value>| r["Email"] == "p2@example.test"),
        status_code: "UNABLE_TO_LOCK_ROW".into(),
        message: "unable to obtain exclusive access to this record".into(),
    });
    let records = json!({"records": [
        {"attributes": {"type": "Lead"}, "id": a, "Title": "X"},
        {"attributes": {"type": "Lead"}, "id": b, "Title": "X"},
    ]});
    let (_, out) =
        h.call(reqwest::Method::PATCH, &format!("{V}/composite/sobjects"), records.clone()).await;
    assert_eq!(out[0]["success"], true);
    assert_eq!(out[1]["errors"][0]["statusCode"], "UNABLE_TO_LOCK_ROW");
    let (_, out) =
        h.call(reqwest::Method::PATCH, &format!("{V}/composite/sobjects"), records).await;
    assert_eq!(out[1]["success"], true, "the record fault fires once");

    h.sim.inject(Fault::ExpireSessions);
    assert_eq!(h.get(&format!("{V}/limits")).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn concurrency_limit_rejects_the_extra_call() {
    let h = Harness::new(SalesforceSimOptions {
        max_concurrent: Some(1),
        ..SalesforceSimOptions::default()
    })
    .await;
    h.sim.inject(Fault::Delay { delay: Duration::from_millis(300), count: 1 });
    let slow = h.send(h.http.get(h.url(&format!("{V}/limits"))));
    let fast = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.send(h.http.get(h.url(&format!("{V}/limits")))).await
    };
    let ((s1, _, _), (s2, b2, _)) = tokio::join!(slow, fast);
    assert_eq!(s1, StatusCode::OK);
    assert_eq!(s2, StatusCode::FORBIDDEN);
    assert_eq!(b2[0]["message"], "ConcurrentPerOrgLongTxn Limit exceeded.");
}

#[tokio::test]
async fn modstamps_strictly_increase() {
    let sim = SalesforceSim::new(SalesforceSimOptions::default());
    let ids: Vec<String> = (0..50).map(|n| sim.insert("Lead", obj(lead(n))).unwrap()).collect();
    let stamps: Vec<String> = ids
        .iter()
        .map(|id| sim.get("Lead", id).unwrap()["SystemModstamp"].as_str().unwrap().to_owned())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    let before = sim.get("Lead", &ids[0]).unwrap();
    sim.touch_system("Lead", &ids[0]).unwrap();
    let after = sim.get("Lead", &ids[0]).unwrap();
    assert!(after["SystemModstamp"].as_str() > before["SystemModstamp"].as_str());
    assert_eq!(after["LastModifiedDate"], before["LastModifiedDate"]);
    assert!(
        sim.insert("Lead", obj(json!({"LastName": "X"})))
            .unwrap_err()
            .starts_with("REQUIRED_FIELD_MISSING")
    );
    assert!(
        sim.insert("Lead", obj(json!({"LastName": "X", "Company": "C", "Email": "nope"})))
            .unwrap_err()
            .starts_with("INVALID_EMAIL_ADDRESS")
    );
    // Email is not unique on Lead.
    sim.insert("Lead", obj(lead(1))).unwrap();
}

/// Behaviour at 100k rows: seeding keeps write order, and a keyset page from the middle starts
/// right after its key. How fast this is belongs to benchmarks (`leadsync bench` seeds and
/// reads far more), not to a test that a loaded machine can fail.
#[tokio::test]
async fn bulk_seed_and_keyset_query_over_100k() {
    let h = Harness::default().await;
    for n in 0..100_000 {
        h.seed("Lead", lead(n));
    }
    let all = h.sim.all("Lead");
    assert_eq!(all.len(), 100_000);
    let mid = &all[50_000];
    let (x, y) = (mid["SystemModstamp"].as_str().unwrap(), mid["Id"].as_str().unwrap());
    let (status, body) = h
        .query(&format!(
            "SELECT Id, Email, SystemModstamp FROM Lead WHERE SystemModstamp > {x} OR (SystemModstamp = {x} AND Id > '{y}') ORDER BY SystemModstamp, Id LIMIT 2000"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["totalSize"], 2000);
    assert_eq!(body["records"][0]["Id"], all[50_001]["Id"]);
    assert_eq!(body["records"][1999]["Id"], all[52_000]["Id"]);
}

#[tokio::test]
async fn replication_updated_and_deleted_windows() {
    let h = Harness::default().await;
    let a = h.seed("Lead", lead(1));
    let b = h.seed("Lead", lead(2));
    h.sim.ui_delete("Lead", &b).unwrap();
    // Windows are whole minutes that end in the past.
    h.sim.advance_clock(Duration::from_secs(120));
    let now = chrono::Utc::now() + chrono::Duration::seconds(120);
    let start = (now - chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
    let end = now.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
    let path = format!("{V}/sobjects/Lead/updated/");
    let (status, body, _) =
        h.send(h.http.get(h.url(&path)).query(&[("start", &start), ("end", &end)])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ids"], json!([a]));
    assert!(body["latestDateCovered"].as_str().unwrap().ends_with(":00.000+0000"));
    let (status, body, _) = h
        .send(
            h.http
                .get(h.url(&format!("{V}/sobjects/Lead/deleted")))
                .query(&[("start", &start), ("end", &end)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deletedRecords"][0]["id"], json!(b));
    // An unencoded `+` arrives as a space.
    let raw = h.url(&format!("{path}?start={start}&end={end}"));
    let (status, body, _) = h.send(h.http.get(raw)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "INVALID_REPLICATION_DATE");
}

#[tokio::test]
async fn custom_fields_exist_only_when_the_org_has_them() {
    let plain = Harness::default().await;
    let (status, body) = plain.query("SELECT Id, Country__c FROM Lead").await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "INVALID_FIELD"));

    let h = Harness::new(SalesforceSimOptions {
        custom_fields: vec![
            ("Country__c".into(), SimFieldType::Text),
            ("Score__c".into(), SimFieldType::Number),
            ("MQL_Date__c".into(), SimFieldType::Date),
        ],
        ..SalesforceSimOptions::default()
    })
    .await;
    let id = h.seed(
        "Lead",
        json!({"LastName": "Ng", "Company": "Acme", "Status": "Open - Not Contacted",
               "Country__c": "CA", "Score__c": 61}),
    );
    let (status, body) =
        h.query(&format!("SELECT Id, country__c, Score__c FROM Lead WHERE Id = '{id}'")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records"][0]["Country__c"], "CA");
    assert_eq!(body["records"][0]["Score__c"].as_f64(), Some(61.0));
    let (status, body) = h.query("SELECT Id, Country__c FROM Contact").await;
    assert_eq!(status, StatusCode::OK, "Contact has the fields too: {body}");
    let path = format!("{V}/sobjects/Lead/{id}");
    let (status, _) = h.call(reqwest::Method::PATCH, &path, json!({"MQL_Date__c": "soon"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a date field takes YYYY-MM-DD only");
    let (status, _) =
        h.call(reqwest::Method::PATCH, &path, json!({"MQL_Date__c": "2026-11-20"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.sim.get("Lead", &id).expect("lead")["MQL_Date__c"], "2026-11-20");
}

#[tokio::test]
async fn owner_ids_must_name_a_user_or_queue_of_the_org() {
    let h = Harness::default().await;
    let lead = h.seed("Lead", json!({"LastName": "Ng", "Company": "Acme"}));
    let contact = h.seed("Contact", json!({"LastName": "Ng"}));
    let users = super::owner_user_ids();
    let queue = super::owner_queue_id();
    let patch = |obj: &str, id: &str| format!("{V}/sobjects/{obj}/{id}");
    // A user (as a 15-character id), and the queue, own a lead.
    let (status, body) = h
        .call(reqwest::Method::PATCH, &patch("Lead", &lead), json!({"OwnerId": &users[1][..15]}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(h.sim.get("Lead", &lead).expect("lead")["OwnerId"], users[1].as_str());
    let (status, _) =
        h.call(reqwest::Method::PATCH, &patch("Lead", &lead), json!({"OwnerId": queue})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A queue cannot own a contact; a malformed id is malformed; an unknown user is an
    // integrity error naming OwnerId.
    let (status, body) = h
        .call(reqwest::Method::PATCH, &patch("Contact", &contact), json!({"OwnerId": queue}))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "MALFORMED_ID"));
    let (status, body) =
        h.call(reqwest::Method::PATCH, &patch("Lead", &lead), json!({"OwnerId": "005xyz"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "MALFORMED_ID"));
    let unknown = super::store::make_id("005", 99);
    let (status, body) =
        h.call(reqwest::Method::PATCH, &patch("Lead", &lead), json!({"OwnerId": unknown})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "FIELD_INTEGRITY_EXCEPTION"));
    assert!(body[0]["message"].as_str().is_some_and(|m| m.contains("OwnerId")), "{body}");
    assert_eq!(h.sim.get("Lead", &lead).expect("lead")["OwnerId"], queue.as_str(), "unchanged");
}
