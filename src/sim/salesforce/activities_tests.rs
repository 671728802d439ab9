//! Tasks over real HTTP: defaults, validation, `LastActivityDate` upkeep (only
//! `SystemModstamp` moves), conversion, SOQL paging through `nextRecordsUrl`, auth and limits.

use chrono::NaiveDate;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{Fault, SalesforceSim, SalesforceSimOptions};

const V: &str = "/services/data/v62.0";

struct H {
    sim: SalesforceSim,
    http: Client,
    base: String,
    token: String,
}

impl H {
    async fn new(opts: SalesforceSimOptions) -> H {
        let sim = SalesforceSim::new(opts);
        sim.start("127.0.0.1:0").await.unwrap();
        let base = sim.base_url();
        let http = Client::new();
        let tok: Value = http
            .post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sim-client-id"),
                ("client_secret", "sim-client-secret"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = tok["access_token"].as_str().unwrap().to_owned();
        H { sim, http, base, token }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    async fn create_task(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("{V}/sobjects/Task/"), Some(body)).await
    }

    async fn query(&self, path: &str, soql: &str) -> (StatusCode, Value) {
        let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        self.call(Method::GET, &format!("{V}/{path}?q={q}"), None).await
    }

    fn lead(&self, n: usize) -> String {
        self.sim
            .insert(
                "Lead",
                obj(json!({"LastName": format!("L{n}"), "Company": "Acme", "Email": format!("l{n}@example.test")})),
            )
            .unwrap()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn code(body: &Value) -> &str {
    body[0]["errorCode"].as_str().unwrap_or_else(|| panic!("not an error array: {body}"))
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

#[tokio::test]
async fn a_task_gets_the_defaults_and_only_a_closed_one_moves_last_activity_date() {
    let h = H::new(SalesforceSimOptions::default()).await;
    let lead = h.lead(1);
    let before = h.sim.get("Lead", &lead).unwrap();
    assert_eq!(before["LastActivityDate"], Value::Null);

    let (status, out) = h
        .create_task(json!({"WhoId": lead, "Subject": "Follow up", "ActivityDate": "2026-11-20"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    let id = out["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("00T"), "{id}");
    let (_, rec) = h.call(Method::GET, &format!("{V}/sobjects/Task/{id}"), None).await;
    assert_eq!(rec["Status"], "Not Started");
    assert_eq!(rec["Priority"], "Normal");
    assert_eq!(rec["TaskSubtype"], "Task");
    assert_eq!(rec["IsClosed"], false);
    // An open task is no activity yet.
    assert_eq!(h.sim.get("Lead", &lead).unwrap()["LastActivityDate"], Value::Null);

    let path = format!("{V}/sobjects/Task/{id}");
    let (status, body) = h.call(Method::PATCH, &path, Some(json!({"Status": "Completed"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(h.sim.get("Task", &id).unwrap()["IsClosed"], true);
    let after = h.sim.get("Lead", &lead).unwrap();
    assert_eq!(after["LastActivityDate"], "2026-11-20");
    // Salesforce moves only SystemModstamp for it: a user did not edit the lead.
    assert_eq!(after["LastModifiedDate"], before["LastModifiedDate"]);
    assert_ne!(after["SystemModstamp"], before["SystemModstamp"]);

    // The latest due date of the closed tasks wins, whatever the order they were logged in.
    h.sim.log_task(&lead, "Call", day(25)).unwrap();
    let older = h.sim.log_task(&lead, "Email", day(18)).unwrap();
    assert_eq!(h.sim.get("Lead", &lead).unwrap()["LastActivityDate"], "2026-11-25");
    let logged = h.sim.get("Task", &older).unwrap();
    assert_eq!(
        (logged["TaskSubtype"].clone(), logged["Status"].clone()),
        (json!("Email"), json!("Completed"))
    );

    // Deleting tasks brings it back down, and to null when no closed task is left.
    let calls = h.sim.all("Task");
    let latest = calls.iter().find(|t| t["ActivityDate"] == "2026-11-25").unwrap()["Id"].clone();
    h.sim.ui_delete("Task", latest.as_str().unwrap()).unwrap();
    assert_eq!(h.sim.get("Lead", &lead).unwrap()["LastActivityDate"], "2026-11-20");
    for t in h.sim.all("Task") {
        h.sim.ui_delete("Task", t["Id"].as_str().unwrap()).unwrap();
    }
    assert_eq!(h.sim.get("Lead", &lead).unwrap()["LastActivityDate"], Value::Null);
}

#[tokio::test]
async fn task_writes_are_validated_like_salesforce() {
    let h = H::new(SalesforceSimOptions::default()).await;
    let lead = h.lead(1);
    let (status, body) = h.create_task(json!({"WhoId": lead, "TaskSubtype": "Meeting"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    let (status, body) = h.create_task(json!({"WhoId": lead, "Status": "Done"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    let (_, body) = h.create_task(json!({"WhoId": lead, "ActivityDate": "20/11/2026"})).await;
    assert_eq!(code(&body), "INVALID_TYPE_ON_FIELD_IN_RECORD");
    let (_, body) = h.create_task(json!({"WhoId": "006000000000001AAA"})).await;
    assert_eq!(code(&body), "MALFORMED_ID");
    let gone = h.lead(2);
    h.sim.ui_delete("Lead", &gone).unwrap();
    let (_, body) = h.create_task(json!({"WhoId": gone})).await;
    assert_eq!(code(&body), "INVALID_CROSS_REFERENCE_KEY");
    let (_, body) = h.create_task(json!({"WhoId": lead, "IsClosed": true})).await;
    assert_eq!(code(&body), "INVALID_FIELD_FOR_INSERT_UPDATE");
    let (_, body) = h.create_task(json!({"WhoId": lead, "WhatId": lead})).await;
    assert_eq!(code(&body), "INVALID_FIELD");

    let (status, out) = h.create_task(json!({"WhoId": lead, "TaskSubtype": "Call"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("{V}/sobjects/Task/{}", out["id"].as_str().unwrap());
    let (_, body) = h.call(Method::PATCH, &path, Some(json!({"TaskSubtype": "Email"}))).await;
    assert_eq!(code(&body), "INVALID_FIELD_FOR_INSERT_UPDATE", "the subtype is create-only");
    let lead_path = format!("{V}/sobjects/Lead/{lead}");
    let (_, body) =
        h.call(Method::PATCH, &lead_path, Some(json!({"LastActivityDate": "2026-11-20"}))).await;
    assert_eq!(code(&body), "INVALID_FIELD_FOR_INSERT_UPDATE", "LastActivityDate is read-only");

    // A converted lead cannot be named; its tasks moved to the contact.
    h.sim.log_task(&lead, "Call", day(20)).unwrap();
    let contact = h.sim.convert_lead(&lead).unwrap();
    let (_, body) = h.create_task(json!({"WhoId": lead})).await;
    assert_eq!(code(&body), "CANNOT_UPDATE_CONVERTED_LEAD");
    let tasks = h.sim.all("Task");
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t["WhoId"] == contact.as_str()), "{tasks:?}");
    assert_eq!(h.sim.get("Contact", &contact).unwrap()["LastActivityDate"], "2026-11-20");
    assert!(h.sim.log_task(&lead, "Call", day(21)).is_err());
}

#[tokio::test]
async fn tasks_page_through_soql_and_deleted_ones_only_through_query_all() {
    // 200 is the smallest page Salesforce serves: 401 tasks make three pages with the
    // deleted one, two without.
    let h = H::new(SalesforceSimOptions { query_batch_size: 200, ..Default::default() }).await;
    let lead = h.lead(1);
    let mut ids = Vec::new();
    for n in 0..401usize {
        let subtype = ["Call", "Email", "Call", "Task", "Call"][n % 5];
        ids.push(h.sim.log_task(&lead, subtype, day(10 + (n % 5) as u32)).unwrap());
    }
    h.sim.ui_delete("Task", &ids[1]).unwrap();
    let soql = "SELECT Id, WhoId, TaskSubtype, Status, IsClosed, ActivityDate, CreatedDate, \
                LastModifiedDate, SystemModstamp, IsDeleted FROM Task \
                WHERE SystemModstamp > 2000-01-01T00:00:00Z ORDER BY SystemModstamp, Id";
    let read = |path: &'static str| {
        let h = &h;
        async move {
            let (status, mut page) = h.query(path, soql).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let mut seen: Vec<Value> = Vec::new();
            let mut pages = 1;
            loop {
                seen.extend(page["records"].as_array().unwrap().iter().cloned());
                if page["done"] == true {
                    break;
                }
                let next = page["nextRecordsUrl"].as_str().unwrap().to_owned();
                page = h.call(Method::GET, &next, None).await.1;
                pages += 1;
            }
            (seen, pages)
        }
    };
    let (live, pages) = read("query").await;
    assert_eq!((live.len(), pages), (400, 2));
    let live_ids: Vec<&str> = live.iter().map(|r| r["Id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.remove(1);
    // The delete moved task 1's modstamp last, but `query` does not see it at all.
    assert_eq!(live_ids, want);
    assert!(live.iter().all(|r| r["WhoId"] == lead.as_str() && r["IsClosed"] == true));
    let (all, pages) = read("queryAll").await;
    assert_eq!((all.len(), pages), (401, 3));
    let last = all.last().unwrap();
    assert_eq!(
        (last["Id"].as_str().unwrap(), last["IsDeleted"].clone()),
        (ids[1].as_str(), json!(true))
    );

    let (status, body) = h
        .query(
            "query",
            "SELECT Id FROM Task WHERE TaskSubtype = 'Call' AND ActivityDate >= 2026-11-12",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Calls are n % 5 in {0, 2, 4}; due on or after the 12th: n % 5 in {2, 4}, 80 + 80.
    assert_eq!(body["totalSize"], 160);

    let resp =
        h.http.get(format!("{}{V}/query?q=SELECT+Id+FROM+Task", h.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    h.sim.inject(Fault::RequestLimit { count: 1 });
    let (status, body) = h.create_task(json!({"WhoId": lead})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "REQUEST_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn a_rolled_back_task_leaves_last_activity_date_as_it_was() {
    let h = H::new(SalesforceSimOptions::default()).await;
    let lead = h.lead(1);
    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Task"}, "WhoId": lead, "Status": "Completed", "ActivityDate": "2026-11-20"},
        {"attributes": {"type": "Task"}, "WhoId": lead, "Status": "Nope"},
    ]});
    let (status, out) = h.call(Method::POST, &format!("{V}/composite/sobjects"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out[0]["success"], false, "{out}");
    assert!(h.sim.all("Task").is_empty());
    assert_eq!(h.sim.get("Lead", &lead).unwrap()["LastActivityDate"], Value::Null);
}
