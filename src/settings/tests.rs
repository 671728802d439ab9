//! Settings: the shipped configs parse, overrides apply, errors name keys.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

fn example() -> String {
    // The example points at systemd credential files; use variables here instead.
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/leadsync.example.toml"))
        .expect("example config")
        .replace(
            "client_secret_file = \"/run/credentials/leadsync.service/salesforce_client_secret\"",
            "client_secret_env = \"SF\"",
        )
        .replace(
            "token_file = \"/run/credentials/leadsync.service/hubspot_token\"",
            "token_env = \"HS\"",
        )
        .replace(
            "client_secret_file = \"/run/credentials/leadsync.service/hubspot_app_secret\"",
            "client_secret_env = \"HS_APP\"",
        )
        .replace(
            "secret_file = \"/run/credentials/leadsync.service/salesforce_outbound_secret\"",
            "secret_env = \"SF_OUT\"",
        )
}

/// The secrets the example names, as variables.
fn example_env(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut e = env(&[
        ("SF", "x"),
        ("HS", "y"),
        ("HS_APP", "app-secret"),
        ("SF_OUT", "outbound-secret-0123456789"),
    ]);
    e.extend(env(extra));
    e
}

#[test]
fn example_config_parses_with_every_key() {
    let s =
        Settings::load(Source::Inline(&example()), &example_env(&[])).expect("example is valid");
    assert_eq!(s.systems.len(), 2);
    let crm = s.systems.iter().find(|s| s.name.as_str() == "crm").expect("crm");
    assert_eq!(crm.role, Role::Crm);
    assert_eq!(crm.create, CreatePolicy::FromStage(Stage::Mql));
    assert_eq!(s.sync.status_implies_stage.get("working"), Some(&Stage::Sql));
}

#[test]
fn demo_config_parses() {
    let s = Settings::load(
        Source::Inline(DEMO_TOML),
        &env(&[("LEADSYNC_DEMO_SALESFORCE_SECRET", "x"), ("LEADSYNC_DEMO_HUBSPOT_TOKEN", "y")]),
    )
    .expect("demo config is valid");
    assert_eq!(s.systems.len(), 2);
}

#[test]
fn environment_overrides_win() {
    let s = Settings::load(
        Source::Inline(&example()),
        &example_env(&[("LEADSYNC__LEDGER__PATH", "/tmp/other.db")]),
    )
    .expect("valid");
    assert_eq!(s.ledger_path, PathBuf::from("/tmp/other.db"));
}

#[test]
fn value_map_keys_keep_their_case() {
    // Vendor values such as ATTEMPTED_TO_CONTACT are keys in the TOML; they must survive.
    let s = Settings::load(Source::Inline(&example()), &example_env(&[])).expect("valid");
    let mkt = s.systems.iter().find(|s| s.name.as_str() == "marketing").expect("marketing");
    let ConnectorSettings::Hubspot(cfg) = &mkt.connector else { panic!("hubspot expected") };
    let props = [("hs_lead_status".to_string(), Some("ATTEMPTED_TO_CONTACT".to_string()))].into();
    let fields = cfg.map.to_canonical(&props);
    assert_eq!(
        fields.get(&crate::domain::Field::LeadStatus).map(String::as_str),
        Some("working"),
        "the alias key kept its case through the config crate"
    );
}

fn key_of(r: Result<Settings, SettingsError>) -> String {
    match r {
        Err(SettingsError::Key(k)) => k.key,
        Err(SettingsError::Load(m)) => format!("load: {m}"),
        Ok(_) => "ok".into(),
    }
}

#[test]
fn errors_name_the_key() {
    let e = example_env(&[]);
    let bad = example().replace(
        "status_implies_stage = { working = \"sql\"",
        "status_implies_stage = { working = \"sqll\"",
    );
    assert_eq!(
        key_of(Settings::load(Source::Inline(&bad), &e)),
        "sync.status_implies_stage.working"
    );
    let bad = example().replace("format = \"auto\"", "format = \"xml\"");
    assert_eq!(key_of(Settings::load(Source::Inline(&bad), &e)), "log.format");
    let bad = example().replace("create_when = \"mql\"", "create_when = \"sometimes\"");
    assert_eq!(key_of(Settings::load(Source::Inline(&bad), &e)), "systems.crm.create_when");
    let bad = example().replace("role = \"marketing\"", "role = \"crm\"");
    assert_eq!(key_of(Settings::load(Source::Inline(&bad), &e)), "systems");
    let bad =
        example().replace("organization_id = \"00D000000000001AAA\"", "organization_id = \"00D\"");
    assert_eq!(
        key_of(Settings::load(Source::Inline(&bad), &e)),
        "systems.crm.webhook.organization_id"
    );
    let on = |extra: &[(&str, &str)]| {
        let mut e = example_env(&[("LEADSYNC__WEBHOOKS__ENABLED", "true")]);
        e.extend(env(extra));
        key_of(Settings::load(Source::Inline(&example()), &e))
    };
    assert_eq!(on(&[("LEADSYNC__WEBHOOKS__LISTEN", "everywhere")]), "webhooks.listen");
    assert_eq!(on(&[("LEADSYNC__WEBHOOKS__PUBLIC_URL", "ftp://x")]), "webhooks.public_url");
    assert_eq!(
        on(&[("LEADSYNC__WEBHOOKS__SWEEP_INTERVAL_SECS", "3600")]),
        "webhooks.sweep_interval_secs",
        "a sweep rarer than the readiness age would flap /readyz"
    );
    assert_eq!(on(&[("SF_OUT", "short")]), "systems.crm.webhook.secret");
    let missing = example().replace("\nsecret_env = \"SF_OUT\"", "\n");
    assert_eq!(
        key_of(Settings::load(Source::Inline(&missing), &e)),
        "systems.crm.webhook.secret_env"
    );
}

#[test]
fn example_webhooks_parse_when_enabled() {
    let s = Settings::load(
        Source::Inline(&example()),
        &example_env(&[("LEADSYNC__WEBHOOKS__ENABLED", "true")]),
    )
    .expect("valid");
    assert_eq!(s.webhooks.listen, Some("0.0.0.0:8088".parse().expect("addr")));
    assert_eq!(
        s.webhooks.public_url.as_ref().map(url::Url::as_str),
        Some("https://leadsync.example.com/")
    );
    let crm = s.systems.iter().find(|s| s.name.as_str() == "crm").expect("crm");
    assert!(matches!(crm.webhook, Some(SystemWebhook::Salesforce { .. })));
    let mkt = s.systems.iter().find(|s| s.name.as_str() == "marketing").expect("marketing");
    assert!(matches!(&mkt.webhook, Some(SystemWebhook::Hubspot(c)) if c.client_secrets.len() == 1));
}

#[test]
fn field_rules_parse_and_bad_ones_name_the_field() {
    let e = example_env(&[]);
    let with = |rules: &str| example().replace("[fields]\n", &format!("[fields]\n{rules}\n"));
    let ok = Settings::load(
        Source::Inline(&with("company = \"prefer crm unless blank\"\ntitle = \"review\"")),
        &e,
    )
    .expect("valid rules");
    assert_eq!(
        ok.identity.field_rules.get(&Field::Company),
        Some(&FieldRule::Prefer { system: SystemName("crm".into()), unless_blank: true })
    );
    assert_eq!(ok.identity.field_rules.get(&Field::Title), Some(&FieldRule::Review));
    for (bad, key) in [
        ("company = \"newest\"", "fields.company"),
        ("lifecycle_stage = \"most recent\"", "fields.lifecycle_stage"),
        ("email_opt_out = \"prefer crm\"", "fields.email_opt_out"),
        ("title = \"prefer erp\"", "fields.title"),
        ("shoe_size = \"most recent\"", "fields.shoe_size"),
    ] {
        assert_eq!(key_of(Settings::load(Source::Inline(&with(bad)), &e)), key, "{bad}");
    }
}

#[test]
fn the_contract_is_off_unless_configured() {
    let s = Settings::load(Source::Inline(&example()), &example_env(&[])).expect("valid");
    assert!(s.contract.is_none());
    let with_contract = format!(
        "{}\n{}",
        example(),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/contract.example.toml"
        ))
        .expect("contract example")
    );
    let s = Settings::load(
        Source::Inline(&with_contract),
        &example_env(&[("LEADSYNC__CONTRACT__SLA__FIRST_TOUCH_BUSINESS_HOURS", "2")]),
    )
    .expect("example with the contract is valid");
    let contract = s.contract.expect("contract on");
    let sla = contract.sla.expect("sla on");
    assert_eq!(sla.first_touch, chrono::TimeDelta::hours(2), "environment overrides apply");
    assert_eq!(sla.grace, chrono::TimeDelta::hours(2));
    // The custom fields reach the connectors of the systems their keys name (kinds here).
    for sys in &s.systems {
        let props: Vec<(&str, &str)> = match &sys.connector {
            ConnectorSettings::Hubspot(c) => c.contract.custom().collect(),
            ConnectorSettings::Salesforce(c) => c.contract_props().custom().collect(),
        };
        let want: &[(&str, &str)] = match sys.kind {
            ConnectorKind::Hubspot => &[("country", "country"), ("score", "hubspotscore")],
            ConnectorKind::Salesforce => &[("country", "Country__c")],
        };
        assert_eq!(props, want, "{}", sys.name);
    }
}

#[test]
fn contract_custom_fields_name_systems_or_kinds_and_errors_name_the_key() {
    let e = example_env(&[]);
    let with =
        |t: &str| format!("{}\n[contract]\nfields = {{ score = \"number\" }}\n{t}", example());
    let by_name = with("[contract.mapping.custom_fields.marketing]\nscore = \"lead_score\"\n");
    let s = Settings::load(Source::Inline(&by_name), &e).expect("by name");
    let hs = s.systems.iter().find(|s| s.kind == ConnectorKind::Hubspot).expect("hubspot");
    let ConnectorSettings::Hubspot(c) = &hs.connector else { panic!("hubspot settings") };
    assert_eq!(c.contract.custom().collect::<Vec<_>>(), [("score", "lead_score")]);
    let cases = [
        (
            "[contract.mapping.custom_fields.erp]\nscore = \"x\"\n",
            "contract.mapping.custom_fields.erp",
        ),
        (
            "[contract.mapping.custom_fields.hubspot]\nregion = \"x\"\n",
            "contract.mapping.custom_fields.hubspot.region",
        ),
        (
            "[contract.mapping.custom_fields.crm]\nscore = \"Score; DROP\"\n",
            "contract.mapping.custom_fields.crm.score",
        ),
        (
            "[contract.mapping.custom_fields.crm]\nscore = \"SystemModstamp\"\n",
            "contract.mapping.custom_fields.crm.score",
        ),
        (
            "[contract.mapping.custom_fields.hubspot]\nscore = \"a\"\n[contract.mapping.custom_fields.marketing]\nscore = \"b\"\n",
            "contract.mapping.custom_fields.marketing",
        ),
    ];
    for (toml, key) in cases {
        assert_eq!(key_of(Settings::load(Source::Inline(&with(toml)), &e)), key, "{toml}");
    }
}

#[test]
fn contract_stage_dates_reach_the_connectors_by_system_name() {
    use crate::connectors::contract_props::{DateKind, StageDateProp};
    use crate::contract::lifecycle::LifecycleStage;
    let e = example_env(&[]);
    let with = |t: &str| format!("{}\n[contract]\n{t}", example());
    let ok = with(
        "[contract.mapping.stage_dates.hubspot]\nmql = \"leadsync_mql_date\"\n\
         [contract.mapping.stage_dates.crm]\nmql = { property = \"MQL_Date__c\", type = \"date\" }\n\
         sal = { property = \"SAL_At__c\" }\n",
    );
    let s = Settings::load(Source::Inline(&ok), &e).expect("valid");
    let c = s.contract.as_ref().expect("contract");
    let by_system: Vec<&str> = c.mapping.stage_dates.keys().map(String::as_str).collect();
    assert_eq!(by_system, ["crm", "marketing"], "kinds are resolved to system names");
    assert_eq!(
        c.mapping.stage_dates["crm"][&LifecycleStage::Mql],
        StageDateProp { property: "MQL_Date__c".into(), kind: DateKind::Date }
    );
    assert_eq!(c.mapping.stage_dates["crm"][&LifecycleStage::Sal].kind, DateKind::DateTime);
    for sys in &s.systems {
        let dates: Vec<(&str, String)> = match &sys.connector {
            ConnectorSettings::Hubspot(c) => {
                c.contract.stage_dates().map(|(s, p)| (s, p.property.clone())).collect()
            }
            ConnectorSettings::Salesforce(c) => {
                c.contract_props().stage_dates().map(|(s, p)| (s, p.property.clone())).collect()
            }
        };
        let want: Vec<(&str, String)> = match sys.kind {
            ConnectorKind::Hubspot => vec![("mql", "leadsync_mql_date".into())],
            ConnectorKind::Salesforce => {
                vec![("mql", "MQL_Date__c".into()), ("sal", "SAL_At__c".into())]
            }
        };
        assert_eq!(dates, want, "{}", sys.name);
    }
    let cases = [
        (
            "[contract.mapping.stage_dates.hubspot]\nmqll = \"x\"\n",
            "contract.mapping.stage_dates.hubspot.mqll",
        ),
        (
            "[contract.mapping.stage_dates.hubspot]\nmql = { property = \"x\", type = \"week\" }\n",
            "contract.mapping.stage_dates.hubspot.mql.type",
        ),
        (
            "[contract.mapping.stage_dates.hubspot]\nmql = \"x\"\nsql = \"x\"\n",
            "contract.mapping.stage_dates.hubspot.sql",
        ),
        (
            "[contract.mapping.stage_dates.crm]\nmql = \"Bad Name\"\n",
            "contract.mapping.stage_dates.crm.mql",
        ),
        ("[contract.mapping.stage_dates.erp]\nmql = \"x\"\n", "contract.mapping.stage_dates.erp"),
    ];
    for (toml, key) in cases {
        assert_eq!(key_of(Settings::load(Source::Inline(&with(toml)), &e)), key, "{toml}");
    }
}

#[test]
fn contract_errors_name_their_key() {
    let bad =
        format!("{}\n[contract.qualification.mql]\nall = [\"title is sett now\"]\n", example());
    let err = Settings::load(Source::Inline(&bad), &example_env(&[])).expect_err("invalid rule");
    assert!(err.to_string().starts_with("contract.qualification.mql.all[0]: "), "{err}");
}

#[test]
fn merge_at_vendor_is_off_by_default_takes_names_or_kinds_and_refuses_salesforce() {
    let e = example_env(&[]);
    let s = Settings::load(Source::Inline(&example()), &e).expect("valid");
    assert!(s.identity.merge_at_vendor.is_empty(), "off by default");
    assert_eq!(s.identity.merge_every, Duration::from_secs(60));
    let with =
        |v: &str| example().replace("merge_at_vendor = []", &format!("merge_at_vendor = {v}"));
    for v in ["[\"marketing\"]", "[\"hubspot\"]", "[\"hubspot\", \"marketing\"]"] {
        let s = Settings::load(Source::Inline(&with(v)), &e).expect(v);
        assert_eq!(s.identity.merge_at_vendor, [SystemName("marketing".into())], "{v}");
    }
    for v in ["[\"crm\"]", "[\"salesforce\"]"] {
        let s = Settings::load(Source::Inline(&with(v)), &e).expect(v);
        assert_eq!(s.identity.merge_at_vendor, [SystemName("crm".into())], "{v}");
    }
    let r = Settings::load(Source::Inline(&with("[\"erp\"]")), &e);
    let Err(SettingsError::Key(k)) = r else { panic!("erp must be refused") };
    assert_eq!(k.key, "identity.merge_at_vendor");
    assert!(k.problem.contains("no system is named \"erp\""), "{}", k.problem);
    let zero = example().replace("merge_every_secs = 60", "merge_every_secs = 0");
    assert_eq!(key_of(Settings::load(Source::Inline(&zero), &e)), "identity.merge_every_secs");
}

#[test]
fn contract_stage_reason_reaches_the_connectors_and_reassign_to_fits_the_crm() {
    let e = example_env(&[]);
    let with = |t: &str| format!("{}\n[contract]\n{t}", example());
    let ok = with(
        "[contract.mapping.stage_reason]\nhubspot = \"leadsync_reason\"\ncrm = \"LeadSync_Reason__c\"\n\
         [contract.sla]\nfirst_touch_business_hours = 4\nreassign_to = \"00G000000000001\"\n",
    );
    let s = Settings::load(Source::Inline(&ok), &e).expect("valid");
    let c = s.contract.as_ref().expect("contract");
    let by_system: Vec<(&str, &str)> =
        c.mapping.stage_reason.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        by_system,
        [("crm", "LeadSync_Reason__c"), ("marketing", "leadsync_reason")],
        "kinds are resolved to system names"
    );
    for sys in &s.systems {
        let (reason, owner) = match &sys.connector {
            ConnectorSettings::Hubspot(c) => {
                (c.contract.stage_reason(), c.contract.owner_value(Some("1")).is_some())
            }
            ConnectorSettings::Salesforce(c) => (
                c.contract_props().stage_reason(),
                c.contract_props().owner_value(Some("1")).is_some(),
            ),
        };
        match sys.kind {
            ConnectorKind::Hubspot => assert_eq!((reason, owner), (Some("leadsync_reason"), false)),
            ConnectorKind::Salesforce => {
                assert_eq!((reason, owner), (Some("LeadSync_Reason__c"), true), "the CRM owns");
            }
        }
    }
    let sla = |owner: &str| {
        format!("[contract.sla]\nfirst_touch_business_hours = 4\nreassign_to = \"{owner}\"\n")
    };
    for good in ["005000000000001", "005000000000001AAA", "00G5g0000000001XYZ"] {
        let toml = with(&sla(good));
        assert!(Settings::load(Source::Inline(&toml), &e).is_ok(), "{good}");
    }
    let cases = [
        (
            "[contract.mapping.stage_reason]\ncrm = \"Bad Name\"\n".to_string(),
            "contract.mapping.stage_reason.crm",
        ),
        (
            "[contract.mapping.stage_reason]\nhubspot = \"  \"\n".to_string(),
            "contract.mapping.stage_reason.hubspot",
        ),
        (
            "[contract.mapping.stage_reason]\nerp = \"x\"\n".to_string(),
            "contract.mapping.stage_reason.erp",
        ),
        (sla("70000001"), "contract.sla.reassign_to"),
        (sla("001000000000001"), "contract.sla.reassign_to"),
        (sla("00500000000001"), "contract.sla.reassign_to"),
        (sla("005000000000-01"), "contract.sla.reassign_to"),
    ];
    for (toml, key) in cases {
        assert_eq!(key_of(Settings::load(Source::Inline(&with(&toml)), &e)), key, "{toml}");
    }
}

#[test]
fn owner_ids_have_the_form_of_the_crm_vendor() {
    let sf = |o: &str| owner_id_problem(ConnectorKind::Salesforce, o).is_none();
    let hs = |o: &str| owner_id_problem(ConnectorKind::Hubspot, o).is_none();
    assert!(sf("005000000000001") && sf("005000000000001AAA") && sf("00G000000000001"));
    assert!(!sf("70000001") && !sf("003000000000001") && !sf("00500000000001"));
    assert!(!sf("005000000000001A") && !sf("005 00000000001"));
    assert!(hs("70000001") && hs("1"));
    assert!(!hs("") && !hs("00G000000000001") && !hs("7000-0001") && !hs(&"9".repeat(21)));
}
