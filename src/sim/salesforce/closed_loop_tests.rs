//! The closed-loop objects over real HTTP: derived fields, validation, SOQL paging, auth and
//! limits, and the seeded generator.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{ClosedLoopSeed, Fault, SalesforceSim, SalesforceSimOptions};

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

    async fn query(&self, soql: &str) -> (StatusCode, Value) {
        let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        self.call(Method::GET, &format!("{V}/query?q={q}"), None).await
    }

    async fn query_all(&self, soql: &str) -> (StatusCode, Value) {
        let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        self.call(Method::GET, &format!("{V}/queryAll?q={q}"), None).await
    }

    fn contact(&self, n: usize) -> String {
        self.sim
            .insert(
                "Contact",
                obj(json!({"LastName": format!("C{n}"), "Email": format!("c{n}@example.test")})),
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

#[tokio::test]
async fn opportunity_flags_follow_the_stage_and_are_read_only() {
    let h = H::new(SalesforceSimOptions::default()).await;
    let (status, out) = h
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity/"),
            Some(json!({"Name": "Big", "Amount": 1250.5, "StageName": "Prospecting", "CloseDate": "2026-03-31"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    let id = out["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("006"), "{id}");
    let (_, rec) = h.call(Method::GET, &format!("{V}/sobjects/Opportunity/{id}"), None).await;
    assert_eq!(rec["Amount"], json!(1250.5));
    assert_eq!(rec["CloseDate"], "2026-03-31");
    assert_eq!((rec["IsClosed"].clone(), rec["IsWon"].clone()), (json!(false), json!(false)));

    h.sim.set_opportunity_stage(&id, "Closed Won", Some(2000.0)).unwrap();
    let rec = h.sim.get("Opportunity", &id).unwrap();
    assert_eq!((rec["IsClosed"].clone(), rec["IsWon"].clone()), (json!(true), json!(true)));
    assert_eq!(rec["Amount"], json!(2000.0));
    h.sim.set_opportunity_stage(&id, "Closed Lost", None).unwrap();
    let rec = h.sim.get("Opportunity", &id).unwrap();
    assert_eq!((rec["IsClosed"].clone(), rec["IsWon"].clone()), (json!(true), json!(false)));

    let path = format!("{V}/sobjects/Opportunity/{id}");
    let (status, body) = h.call(Method::PATCH, &path, Some(json!({"IsWon": true}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_FIELD_FOR_INSERT_UPDATE");
    let (status, body) = h.call(Method::PATCH, &path, Some(json!({"StageName": "Won-ish"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    let (status, body) =
        h.call(Method::PATCH, &path, Some(json!({"CloseDate": "31/03/2026"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_TYPE_ON_FIELD_IN_RECORD");
    let (status, body) = h.call(Method::PATCH, &path, Some(json!({"Amount": [1]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "JSON_PARSER_ERROR");
    let (status, body) = h
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity/"),
            Some(json!({"Name": "No stage"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "REQUIRED_FIELD_MISSING");
}

#[tokio::test]
async fn soql_filters_on_dates_and_amounts() {
    let h = H::new(SalesforceSimOptions::default()).await;
    for (n, (amount, close)) in
        [(100.0, "2026-01-15"), (900.0, "2026-02-01"), (5000.0, "2025-12-31")]
            .into_iter()
            .enumerate()
    {
        h.sim
            .create_opportunity(&format!("O{n}"), Some(amount), "Qualification", close, None)
            .unwrap();
    }
    let (status, body) = h
        .query("SELECT Name, Amount FROM Opportunity WHERE CloseDate >= 2026-01-01 AND Amount > 150 ORDER BY Amount DESC")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> =
        body["records"].as_array().unwrap().iter().map(|r| r["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["O1"]);
    let (status, body) =
        h.query("SELECT Name FROM Opportunity WHERE CloseDate > '2026-01-01'").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_FIELD");
}

#[tokio::test]
async fn campaign_members_respond_once_and_are_unique_per_person() {
    let h = H::new(SalesforceSimOptions::default()).await;
    let camp = h.sim.create_campaign("Spring webinar").unwrap();
    let lead = h.sim.insert("Lead", obj(json!({"LastName": "L", "Company": "Acme"}))).unwrap();
    let m = h.sim.add_campaign_member(&camp, &lead, "Sent").unwrap();
    assert!(m.starts_with("00v"));
    let rec = h.sim.get("CampaignMember", &m).unwrap();
    assert_eq!(rec["HasResponded"], false);
    assert_eq!(rec["FirstRespondedDate"], Value::Null);
    let dup = h.sim.add_campaign_member(&camp, &lead, "Responded").unwrap_err();
    assert!(dup.starts_with("DUPLICATE_VALUE"), "{dup}");

    let path = format!("{V}/sobjects/CampaignMember/{m}");
    let (status, _) = h.call(Method::PATCH, &path, Some(json!({"Status": "Responded"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let rec = h.sim.get("CampaignMember", &m).unwrap();
    assert_eq!(rec["HasResponded"], true);
    let first = rec["FirstRespondedDate"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 10);
    h.sim.advance_clock(std::time::Duration::from_secs(3 * 86_400));
    h.call(Method::PATCH, &path, Some(json!({"Status": "Sent"}))).await;
    h.call(Method::PATCH, &path, Some(json!({"Status": "Responded"}))).await;
    assert_eq!(h.sim.get("CampaignMember", &m).unwrap()["FirstRespondedDate"], first.as_str());

    let (status, body) = h.call(Method::PATCH, &path, Some(json!({"CampaignId": camp}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_FIELD_FOR_INSERT_UPDATE");
    let (status, body) = h
        .call(
            Method::POST,
            &format!("{V}/sobjects/CampaignMember/"),
            Some(json!({"CampaignId": camp})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "REQUIRED_FIELD_MISSING");
    let ghost = super::store::make_id("00Q", 999_999);
    let (status, body) = h
        .call(
            Method::POST,
            &format!("{V}/sobjects/CampaignMember/"),
            Some(json!({"CampaignId": camp, "LeadId": ghost})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_CROSS_REFERENCE_KEY");

    // Conversion puts the new contact on the membership and moves its modstamp.
    let before = h.sim.get("CampaignMember", &m).unwrap()["SystemModstamp"].clone();
    let contact = h.sim.convert_lead(&lead).unwrap();
    let rec = h.sim.get("CampaignMember", &m).unwrap();
    assert_eq!(rec["ContactId"], contact.as_str());
    assert_eq!(rec["LeadId"], lead.as_str());
    assert_ne!(rec["SystemModstamp"], before);
}

#[tokio::test]
async fn contact_roles_need_live_records_and_deletes_show_in_query_all() {
    let h = H::new(SalesforceSimOptions::default()).await;
    let c = h.contact(1);
    let opp = h.sim.create_opportunity("O", None, "Prospecting", "2026-05-01", None).unwrap();
    let role = h.sim.add_contact_role(&opp, &c, true, Some("Decision Maker")).unwrap();
    assert!(role.starts_with("00K"));
    let lead = h.sim.insert("Lead", obj(json!({"LastName": "L", "Company": "Acme"}))).unwrap();
    let err = h.sim.add_contact_role(&opp, &lead, false, None).unwrap_err();
    assert!(err.starts_with("MALFORMED_ID"), "a lead is not a contact: {err}");
    let opp_stamp = h.sim.get("Opportunity", &opp).unwrap()["SystemModstamp"].clone();
    h.sim.ui_delete("OpportunityContactRole", &role).unwrap();
    assert_eq!(h.sim.get("Opportunity", &opp).unwrap()["SystemModstamp"], opp_stamp);
    let soql = format!(
        "SELECT Id, ContactId, IsPrimary, IsDeleted FROM OpportunityContactRole WHERE OpportunityId = '{opp}'"
    );
    let (_, live) = h.query(&soql).await;
    assert_eq!(live["totalSize"], 0);
    let (_, all) = h.query_all(&soql).await;
    assert_eq!(all["totalSize"], 1);
    assert_eq!(all["records"][0]["IsDeleted"], true);
    assert_eq!(all["records"][0]["IsPrimary"], true);
}

#[tokio::test]
async fn keyset_pages_with_cursors_auth_and_limits() {
    let h =
        H::new(SalesforceSimOptions { query_batch_size: 200, ..SalesforceSimOptions::default() })
            .await;
    let camp = h.sim.create_campaign("C").unwrap();
    let mut ids = Vec::new();
    for n in 0..450 {
        ids.push(
            h.sim
                .create_opportunity(
                    &format!("O{n}"),
                    Some(1.0),
                    "Prospecting",
                    "2026-01-01",
                    Some(&camp),
                )
                .unwrap(),
        );
    }
    let mut seen = Vec::new();
    let (status, mut page) = h
        .query("SELECT Id, SystemModstamp FROM Opportunity WHERE SystemModstamp > 2000-01-01T00:00:00Z ORDER BY SystemModstamp, Id")
        .await;
    assert_eq!(status, StatusCode::OK);
    loop {
        seen.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["Id"].as_str().unwrap().to_owned()),
        );
        if page["done"] == true {
            break;
        }
        let next = page["nextRecordsUrl"].as_str().unwrap().to_owned();
        page = h.call(Method::GET, &next, None).await.1;
    }
    assert_eq!(seen, ids);

    let resp = h
        .http
        .get(format!("{}{V}/query?q=SELECT+Id+FROM+Opportunity", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    h.sim.inject(Fault::RequestLimit { count: 1 });
    let (status, body) = h.query("SELECT Id FROM CampaignMember").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "REQUEST_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn seeding_is_deterministic_and_consistent() {
    let make = || {
        let sim = SalesforceSim::new(SalesforceSimOptions::default());
        for n in 0..200 {
            sim.insert("Lead", obj(json!({"LastName": format!("L{n}"), "Company": "Acme"})))
                .unwrap();
        }
        sim
    };
    let opts = ClosedLoopSeed { seed: 42, ..ClosedLoopSeed::default() };
    let (a, b) = (make(), make());
    let sa = a.seed_closed_loop(&opts).unwrap();
    let sb = b.seed_closed_loop(&opts).unwrap();
    assert_eq!(sa.members, sb.members);
    assert_eq!(sa.opportunities.len(), sb.opportunities.len());
    assert!(sa.members > 40 && !sa.opportunities.is_empty(), "{sa:?}");
    assert_eq!(sa.converted_leads, sa.opportunities.len());
    let roles = a.all("OpportunityContactRole");
    assert_eq!(roles.len(), sa.opportunities.len());
    for r in &roles {
        let contact = r["ContactId"].as_str().unwrap();
        assert!(a.get("Contact", contact).is_some());
    }
    let members = a.all("CampaignMember");
    assert_eq!(members.len(), sa.members);
    // Converted leads' memberships now carry the contact too.
    let with_contact = members.iter().filter(|m| m["ContactId"].is_string()).count();
    assert!(with_contact > 0);
    for o in a.all("Opportunity") {
        if let Some(c) = o["CampaignId"].as_str() {
            assert!(sa.campaigns.iter().any(|x| x == c));
        }
    }
}
