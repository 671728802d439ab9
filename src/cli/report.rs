//! `leadsync report <kind>`: numbers computed from the ledger alone, read-only, reproducible
//! (sorted rows, integer cents). The ledger computes; this file parses the window and formats.
//!
//! Kinds: `attribution`, `funnel` and `sla`, sharing [`ReportCommon`] (config, window, format)
//! and [`Window`].

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};

use super::{exit, load_settings};
use crate::ledger::LedgerReader;
use crate::ledger::closed_loop::attribution::{
    AttributionQuery, AttributionReport, AttributionRow, CreditSource, TouchModel,
};
use crate::ledger::funnel::{FunnelReport, FunnelRow};
use crate::ledger::sla_report::SlaReport;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub report: Report,
}

#[derive(Debug, Subcommand)]
pub enum Report {
    /// Won revenue (closed won, close date in the window) and pipeline (open, created in the
    /// window) by first-touch and last-touch campaign of the opportunity's primary contact.
    Attribution(AttributionArgs),
    /// Per lifecycle stage: persons who entered it in the window, the share of them that went
    /// on to a later stage, median time in stage of those who left it, and how many were
    /// later recycled or disqualified (README "Reports" has the exact definitions).
    Funnel(FunnelArgs),
    /// Of the MQLs handed to the CRM in the window: touched by the deadline, median and p90
    /// time to first touch, breaches, escalations, recycles, and contact attempts before a
    /// disqualification (README "Reports" has the exact definitions).
    Sla(SlaArgs),
}

#[derive(Debug, Args)]
pub struct SlaArgs {
    #[command(flatten)]
    pub common: ReportCommon,
}

#[derive(Debug, Args)]
pub struct FunnelArgs {
    #[command(flatten)]
    pub common: ReportCommon,
}

/// What every report takes.
#[derive(Debug, Args)]
pub struct ReportCommon {
    #[arg(long, short)]
    pub config: PathBuf,
    /// The window: a length back from now (`30d`, `12h`, `6w`) or a start date
    /// (`2026-01-01`, UTC).
    #[arg(long, default_value = "30d")]
    pub since: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct AttributionArgs {
    #[command(flatten)]
    pub common: ReportCommon,
    /// Count every campaign membership as a touch, not only those the person responded to.
    #[arg(long)]
    pub include_unresponded: bool,
    /// Count only the opportunities of this system (repeatable; default every system), e.g.
    /// when HubSpot deals mirror Salesforce opportunities and would count twice.
    #[arg(long = "opportunities-from", value_name = "SYSTEM")]
    pub opportunities_from: Vec<String>,
}

/// A report window, `[from, to]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// Parse `--since` relative to `now`.
    ///
    /// # Errors
    /// A message for the operator when it is neither `<n>h|d|w` nor a `YYYY-MM-DD` date, or
    /// lies in the future.
    pub fn parse(since: &str, now: DateTime<Utc>) -> Result<Window, String> {
        let s = since.trim();
        let bad = || format!("--since {since:?}: expected e.g. 30d, 12h, 6w or 2026-01-01");
        let from = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            d.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc()
        } else {
            let unit = s.chars().last().ok_or_else(bad)?;
            let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
            let len = match unit {
                'h' => Duration::try_hours(n),
                'd' => Duration::try_days(n),
                'w' => Duration::try_weeks(n),
                _ => None,
            }
            .filter(|_| n > 0)
            .ok_or_else(bad)?;
            now.checked_sub_signed(len).ok_or_else(bad)?
        };
        if from > now {
            return Err(format!("--since {since:?} is in the future"));
        }
        Ok(Window { from, to: now })
    }
}

pub fn run(args: ReportArgs, env: &HashMap<String, String>) -> u8 {
    match args.report {
        Report::Attribution(a) => attribution(&a, env),
        Report::Funnel(a) => funnel(&a, env),
        Report::Sla(a) => sla(&a, env),
    }
}

/// Parse the window, load the settings and open the ledger a report reads, or say why not.
fn open(
    common: &ReportCommon,
    env: &HashMap<String, String>,
) -> Result<(Window, Settings, LedgerReader), u8> {
    let window = Window::parse(&common.since, Utc::now()).map_err(|msg| {
        eprintln!("leadsync: {msg}");
        exit::FAILURE
    })?;
    let (settings, reader) = open_reader(&common.config, env)?;
    Ok((window, settings, reader))
}

/// Load the settings and open the ledger a report reads, or say why not.
fn open_reader(
    config: &Path,
    env: &HashMap<String, String>,
) -> Result<(Settings, LedgerReader), u8> {
    let settings = load_settings(config, env)?;
    let reader = LedgerReader::open(&settings.ledger_path).map_err(|e| {
        eprintln!("leadsync: cannot read ledger {}: {e}", settings.ledger_path.display());
        exit::IOERR
    })?;
    Ok((settings, reader))
}

fn attribution(args: &AttributionArgs, env: &HashMap<String, String>) -> u8 {
    let (window, settings, reader) = match open(&args.common, env) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(unknown) = args
        .opportunities_from
        .iter()
        .find(|n| !settings.systems.iter().any(|s| s.name.as_str() == n.as_str()))
    {
        eprintln!("leadsync: --opportunities-from {unknown:?}: no system has that name");
        return exit::FAILURE;
    }
    let q = AttributionQuery {
        from: window.from,
        to: window.to,
        responded_only: !args.include_unresponded,
        opportunity_systems: (!args.opportunities_from.is_empty())
            .then(|| args.opportunities_from.iter().cloned().collect()),
    };
    let report = match reader.attribution(&q) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    let text = match args.common.format {
        Format::Table => attribution_table(&report),
        Format::Csv => attribution_csv(&report),
        Format::Json => {
            serde_json::to_string_pretty(&report).map(|s| s + "\n").map_err(|e| e.to_string())
        }
    };
    emit(text)
}

/// Write a formatted report to stdout, or say why it could not be formatted.
fn emit(text: Result<String, String>) -> u8 {
    match text {
        Ok(t) => {
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::stdout().write_all(t.as_bytes());
            exit::OK
        }
        Err(e) => {
            eprintln!("leadsync: cannot format the report: {e}");
            exit::SOFTWARE
        }
    }
}

fn funnel(args: &FunnelArgs, env: &HashMap<String, String>) -> u8 {
    let (window, _, reader) = match open(&args.common, env) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = match reader.funnel(window.from, window.to) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    emit(match args.common.format {
        Format::Table => funnel_table(&report),
        Format::Csv => funnel_csv(&report),
        Format::Json => {
            serde_json::to_string_pretty(&report).map(|s| s + "\n").map_err(|e| e.to_string())
        }
    })
}

fn sla(args: &SlaArgs, env: &HashMap<String, String>) -> u8 {
    let (window, settings, reader) = match open(&args.common, env) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if settings.contract.as_ref().is_none_or(|c| c.sla.is_none()) {
        // Not an error: a ledger may hold clocks from an earlier config. Say why it may be empty.
        eprintln!("leadsync: note: no [contract.sla] in this config; clocks only run with it");
    }
    let report = match reader.sla_report(window.from, window.to) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    emit(match args.common.format {
        Format::Table => Ok(sla_table(&report)),
        Format::Csv => sla_csv(&report),
        Format::Json => {
            serde_json::to_string_pretty(&report).map(|s| s + "\n").map_err(|e| e.to_string())
        }
    })
}

/// The SLA report's figures as `(name, value)` pairs, in display order; `None` where a figure
/// has no data. Seconds and basis points stay integers here.
fn sla_figures(r: &SlaReport) -> Vec<(&'static str, Option<i64>)> {
    let n = |v: u64| Some(i64::try_from(v).unwrap_or(i64::MAX));
    vec![
        ("handed_over", n(r.handed_over)),
        ("met", n(r.met)),
        ("touched_late", n(r.touched_late)),
        ("overdue", n(r.overdue)),
        ("not_yet_due", n(r.not_yet_due)),
        ("left_before_deadline", n(r.left_before_deadline)),
        ("within_deadline_bp", r.within_deadline_bp.and_then(n)),
        ("median_secs_to_first_touch", r.median_secs_to_first_touch),
        ("p90_secs_to_first_touch", r.p90_secs_to_first_touch),
        ("breached", n(r.breached)),
        ("escalated", n(r.escalated)),
        ("recycled", n(r.recycled)),
        ("disqualified", n(r.disqualified)),
        ("median_attempts_before_disqualification", r.median_attempts_before_disqualification),
        ("min_attempts_before_disqualification", r.min_attempts_before_disqualification),
        ("max_attempts_before_disqualification", r.max_attempts_before_disqualification),
        ("disqualifications_refused", n(r.disqualifications_refused)),
    ]
}

/// The SLA report as text for people: one figure a line.
pub fn sla_table(r: &SlaReport) -> String {
    let dash = || "-".to_string();
    let share = r.within_deadline_bp.map_or_else(dash, percent);
    let secs = |v: Option<i64>| v.map_or_else(dash, span);
    let lines = [
        ("MQLs handed over", r.handed_over.to_string()),
        ("  touched by the deadline", r.met.to_string()),
        ("  touched late", r.touched_late.to_string()),
        ("  overdue, untouched", r.overdue.to_string()),
        ("  not due yet", r.not_yet_due.to_string()),
        ("  left before the deadline", r.left_before_deadline.to_string()),
        ("touched within the deadline", share),
        ("time to first touch, median", secs(r.median_secs_to_first_touch)),
        ("time to first touch, p90", secs(r.p90_secs_to_first_touch)),
        ("breached", r.breached.to_string()),
        ("escalated", r.escalated.to_string()),
        ("recycled by the SLA", r.recycled.to_string()),
        ("disqualified", r.disqualified.to_string()),
        (
            "  attempts before, median (min-max)",
            match (
                r.median_attempts_before_disqualification,
                r.min_attempts_before_disqualification,
                r.max_attempts_before_disqualification,
            ) {
                (Some(m), Some(lo), Some(hi)) => format!("{m} ({lo}-{hi})"),
                _ => dash(),
            },
        ),
        ("disqualifications refused (recycled)", r.disqualifications_refused.to_string()),
    ];
    let width = lines.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = format!(
        "sla {} .. {} (MQL clocks started in the window; outcomes as of now)\n\n",
        r.from.format("%Y-%m-%d %H:%M UTC"),
        r.to.format("%Y-%m-%d %H:%M UTC"),
    );
    for (k, v) in lines {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    out
}

/// The SLA report as CSV: `metric,value` rows, empty where a figure has no data.
///
/// # Errors
/// The CSV writer failed (it writes to memory, so in practice never).
pub fn sla_csv(r: &SlaReport) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| e.to_string();
    w.write_record(["metric", "value"]).map_err(err)?;
    w.write_record(["from", &r.from.to_rfc3339()]).map_err(err)?;
    w.write_record(["to", &r.to.to_rfc3339()]).map_err(err)?;
    for (name, v) in sla_figures(r) {
        w.write_record([name.to_string(), v.map(|n| n.to_string()).unwrap_or_default()])
            .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// Basis points as a percentage with two decimals: `3333` → `33.33%`.
pub fn percent(bp: u64) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
}

/// Whole seconds as a short duration: days and hours (`3d 4h`), hours and minutes below a
/// day (`5h 12m`), seconds below a minute.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

fn funnel_cells(row: &FunnelRow) -> [String; 8] {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |n| n.to_string());
    [
        row.stage.as_str().to_string(),
        row.entered.to_string(),
        opt(row.converted),
        row.conversion_bp.map_or_else(|| "-".into(), percent),
        row.left.to_string(),
        row.median_secs_in_stage.map_or_else(|| "-".into(), span),
        row.recycled.to_string(),
        row.disqualified.to_string(),
    ]
}

/// The funnel report as an aligned text table, one line per stage.
///
/// # Errors
/// None in practice (writing to a `String`); the signature matches the other formats.
pub fn funnel_table(r: &FunnelReport) -> Result<String, String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let fmt_err = |e: std::fmt::Error| e.to_string();
    writeln!(
        out,
        "funnel {} .. {} ({} persons with a lifecycle)\nentered: an entry into the stage in the \
         window; converted: later entered a stage further on; time in stage: lower median, of \
         those who left",
        r.from.format("%Y-%m-%d %H:%M UTC"),
        r.to.format("%Y-%m-%d %H:%M UTC"),
        r.persons
    )
    .map_err(fmt_err)?;
    let header = [
        "stage",
        "entered",
        "converted",
        "rate",
        "left",
        "median in stage",
        "recycled",
        "disqualified",
    ];
    let mut lines: Vec<[String; 8]> = vec![header.map(str::to_string)];
    lines.extend(r.rows.iter().map(funnel_cells));
    let mut widths = [0usize; 8];
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    writeln!(out).map_err(fmt_err)?;
    for l in &lines {
        let mut line = String::from(" ");
        for (i, (cell, w)) in l.iter().zip(widths).enumerate() {
            if i == 0 {
                write!(line, " {cell:<w$}").map_err(fmt_err)?;
            } else {
                write!(line, " {cell:>w$}").map_err(fmt_err)?;
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(fmt_err)?;
    }
    Ok(out)
}

/// The funnel report as CSV, one row per stage; empty cells where a figure does not apply.
///
/// # Errors
/// The CSV writer failed (it writes to memory, so in practice never).
pub fn funnel_csv(r: &FunnelReport) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| e.to_string();
    w.write_record([
        "stage",
        "entered",
        "converted",
        "conversion_bp",
        "left",
        "median_secs_in_stage",
        "recycled",
        "disqualified",
    ])
    .map_err(err)?;
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    for row in &r.rows {
        w.write_record([
            row.stage.as_str().to_string(),
            row.entered.to_string(),
            opt(row.converted),
            opt(row.conversion_bp),
            row.left.to_string(),
            row.median_secs_in_stage.map(|n| n.to_string()).unwrap_or_default(),
            row.recycled.to_string(),
            row.disqualified.to_string(),
        ])
        .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// Integer cents as a decimal amount, `-1234.5` cents never arising: `123456` → `1234.56`.
pub fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Like [`decimal`], with thousands separators for tables: `1,234.56`.
pub fn grouped(cents: i64) -> String {
    let plain = decimal(cents);
    let (sign, rest) = plain.split_at(usize::from(plain.starts_with('-')));
    let (whole, frac) = rest.split_once('.').unwrap_or((rest, "00"));
    let mut out = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}.{frac}")
}

fn label(row: &AttributionRow) -> String {
    match row.source {
        CreditSource::Campaign => {
            let id = row.campaign_id.as_deref().unwrap_or("?");
            match row.campaign_name.as_deref() {
                Some(name) if name != id => format!("{name} ({id})"),
                _ => id.to_string(),
            }
        }
        CreditSource::NoTouch => "(no touch before the opportunity)".into(),
        CreditSource::NoPerson => "(no linked person)".into(),
    }
}

fn model_title(m: TouchModel) -> &'static str {
    match m {
        TouchModel::FirstTouch => "first touch",
        TouchModel::LastTouch => "last touch",
    }
}

/// The report as an aligned text table per model.
///
/// # Errors
/// None in practice (writing to a `String`); the signature matches the other formats.
pub fn attribution_table(r: &AttributionReport) -> Result<String, String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let fmt_err = |e: std::fmt::Error| e.to_string();
    writeln!(
        out,
        "attribution {} .. {}\nwon: closed won, close date in the window; pipeline: open, created \
         in the window; touches: {}",
        r.from.format("%Y-%m-%d %H:%M UTC"),
        r.to.format("%Y-%m-%d %H:%M UTC"),
        if r.responded_only { "responded only" } else { "all memberships" }
    )
    .map_err(fmt_err)?;
    let header = ["campaign", "system", "currency", "won", "won amount", "pipeline", "pipe amount"];
    for model in TouchModel::ALL {
        writeln!(out, "\n{}", model_title(model)).map_err(fmt_err)?;
        let mut lines: Vec<[String; 7]> = vec![header.map(str::to_string)];
        for row in r.rows.iter().filter(|x| x.model == model) {
            lines.push([
                label(row),
                row.system.clone().unwrap_or_else(|| "-".into()),
                row.currency.clone().unwrap_or_else(|| "-".into()),
                row.won_count.to_string(),
                grouped(row.won_cents),
                row.pipeline_count.to_string(),
                grouped(row.pipeline_cents),
            ]);
        }
        for t in &r.totals {
            lines.push([
                "total".into(),
                String::new(),
                t.currency.clone().unwrap_or_else(|| "-".into()),
                t.won_count.to_string(),
                grouped(t.won_cents),
                t.pipeline_count.to_string(),
                grouped(t.pipeline_cents),
            ]);
        }
        let mut widths = [0usize; 7];
        for l in &lines {
            for (w, cell) in widths.iter_mut().zip(l) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for l in &lines {
            let mut line = String::from(" ");
            for (i, (cell, w)) in l.iter().zip(widths).enumerate() {
                // Text columns left, numbers right.
                if i < 3 {
                    write!(line, " {cell:<w$}").map_err(fmt_err)?;
                } else {
                    write!(line, " {cell:>w$}").map_err(fmt_err)?;
                }
            }
            writeln!(out, "{}", line.trim_end()).map_err(fmt_err)?;
        }
    }
    if r.rows.is_empty() {
        writeln!(out, "\nno won or open opportunities in the window").map_err(fmt_err)?;
    }
    Ok(out)
}

/// The report as CSV, one row per model and campaign and currency; amounts as decimals.
///
/// # Errors
/// The CSV writer failed (it writes to memory, so in practice never).
pub fn attribution_csv(r: &AttributionReport) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| e.to_string();
    w.write_record([
        "model",
        "source",
        "system",
        "campaign_id",
        "campaign_name",
        "currency",
        "won_count",
        "won_amount",
        "pipeline_count",
        "pipeline_amount",
    ])
    .map_err(err)?;
    for row in &r.rows {
        w.write_record([
            row.model.as_str(),
            row.source.as_str(),
            row.system.as_deref().unwrap_or(""),
            row.campaign_id.as_deref().unwrap_or(""),
            row.campaign_name.as_deref().unwrap_or(""),
            row.currency.as_deref().unwrap_or(""),
            &row.won_count.to_string(),
            &decimal(row.won_cents),
            &row.pipeline_count.to_string(),
            &decimal(row.pipeline_cents),
        ])
        .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts read as units_cents: 1_000_00 is 1,000.00"
)]
mod tests {
    use super::*;
    use crate::ledger::closed_loop::attribution::AttributionTotal;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).single().expect("valid")
    }

    #[test]
    fn windows_parse_lengths_and_dates() {
        let w = Window::parse("30d", now()).expect("30d");
        assert_eq!(w.from, Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("t"));
        assert_eq!(w.to, now());
        assert_eq!(Window::parse("12h", now()).expect("h").from, now() - Duration::hours(12));
        assert_eq!(Window::parse("2w", now()).expect("w").from, now() - Duration::days(14));
        let d = Window::parse("2026-01-01", now()).expect("date");
        assert_eq!(d.from, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("t"));
        for bad in ["", "d", "30", "30m", "-3d", "0d", "2026-13-01", "2027-01-01", "x30d"] {
            assert!(Window::parse(bad, now()).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn amounts_format_from_integer_cents() {
        assert_eq!(decimal(0), "0.00");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(123_456), "1234.56");
        assert_eq!(decimal(-250), "-2.50");
        assert_eq!(decimal(i64::MIN), "-92233720368547758.08");
        assert_eq!(grouped(123_456_789), "1,234,567.89");
        assert_eq!(grouped(100_000), "1,000.00");
        assert_eq!(grouped(99_999), "999.99");
        assert_eq!(grouped(-123_456_700), "-1,234,567.00");
    }

    fn report() -> AttributionReport {
        let row =
            |model, source, campaign: Option<(&str, &str)>, won: i64, pipe: i64| AttributionRow {
                model,
                source,
                system: campaign.map(|_| "crm".to_string()),
                campaign_id: campaign.map(|c| c.0.to_string()),
                campaign_name: campaign.map(|c| c.1.to_string()),
                currency: None,
                won_count: u64::from(won > 0),
                won_cents: won,
                pipeline_count: u64::from(pipe > 0),
                pipeline_cents: pipe,
            };
        AttributionReport {
            from: now() - Duration::days(30),
            to: now(),
            responded_only: true,
            opportunity_systems: None,
            rows: vec![
                row(
                    TouchModel::FirstTouch,
                    CreditSource::Campaign,
                    Some(("701A", "Expo, Berlin")),
                    1_000_00,
                    0,
                ),
                row(TouchModel::FirstTouch, CreditSource::NoPerson, None, 0, 5_00),
                row(
                    TouchModel::LastTouch,
                    CreditSource::Campaign,
                    Some(("701B", "Webinar")),
                    1_000_00,
                    5_00,
                ),
            ],
            totals: vec![AttributionTotal {
                currency: None,
                won_count: 1,
                won_cents: 1_000_00,
                pipeline_count: 1,
                pipeline_cents: 5_00,
            }],
            opportunities: vec![],
        }
    }

    #[test]
    fn csv_has_one_row_per_model_and_campaign_with_decimal_amounts() {
        let text = attribution_csv(&report()).expect("csv");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "model,source,system,campaign_id,campaign_name,currency,won_count,won_amount,pipeline_count,pipeline_amount",
                "first_touch,campaign,crm,701A,\"Expo, Berlin\",,1,1000.00,0,0.00",
                "first_touch,no_person,,,,,0,0.00,1,5.00",
                "last_touch,campaign,crm,701B,Webinar,,1,1000.00,1,5.00",
            ]
        );
    }

    fn funnel_report() -> FunnelReport {
        use crate::contract::lifecycle::LifecycleStage;
        let rows = LifecycleStage::ALL
            .into_iter()
            .map(|stage| FunnelRow {
                stage,
                entered: if stage == LifecycleStage::Mql { 3 } else { 0 },
                converted: (stage != LifecycleStage::Disqualified)
                    .then_some(u64::from(stage == LifecycleStage::Mql)),
                conversion_bp: (stage == LifecycleStage::Mql).then_some(3333),
                left: u64::from(stage == LifecycleStage::Mql) * 2,
                median_secs_in_stage: (stage == LifecycleStage::Mql).then_some(3 * 86_400 + 7200),
                recycled: u64::from(stage == LifecycleStage::Mql),
                disqualified: 0,
            })
            .collect();
        FunnelReport { from: now() - Duration::days(30), to: now(), persons: 4, rows }
    }

    #[test]
    fn funnel_formats_rates_and_spans_from_integers() {
        assert_eq!(percent(3333), "33.33%");
        assert_eq!(percent(10_000), "100.00%");
        assert_eq!(percent(5), "0.05%");
        assert_eq!(span(3 * 86_400 + 7200 + 59), "3d 2h");
        assert_eq!(span(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(span(59), "59s");
        let csv = funnel_csv(&funnel_report()).expect("csv");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 10, "header and nine stages:\n{csv}");
        assert_eq!(lines[3], "mql,3,1,3333,2,266400,1,0");
        assert_eq!(lines[9], "disqualified,0,,,0,,0,0");
        let table = funnel_table(&funnel_report()).expect("table");
        let mql = table.lines().find(|l| l.trim_start().starts_with("mql")).expect("mql line");
        assert!(mql.contains("33.33%") && mql.contains("3d 2h"), "{table}");
    }

    #[test]
    fn table_shows_each_model_with_its_totals() {
        let text = attribution_table(&report()).expect("table");
        let first = text.find("first touch").expect("first touch section");
        let last = text.find("last touch").expect("last touch section");
        assert!(first < last);
        assert!(text.contains("Expo, Berlin (701A)"), "{text}");
        assert!(text.contains("(no linked person)"), "{text}");
        assert_eq!(text.matches("1,000.00").count(), 4, "two rows and two totals:\n{text}");
        assert_eq!(text.matches("\n  total").count(), 2, "{text}");
    }
}
