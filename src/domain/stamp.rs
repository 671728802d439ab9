//! Reading back the instants the ledger stores in its JSON columns, quickly.
//!
//! chrono writes a `DateTime<Utc>` as RFC 3339 (`2026-11-18T14:00:00Z`, with 3, 6 or 9
//! fraction digits when there are any) and reads it back with a general, relaxed RFC 3339
//! parser. A person's lifecycle holds a dozen instants, and a re-evaluation after a rule
//! change decodes every person's: chrono's parser was a sixth of the sweep's read side.
//! [`read`] takes the shape chrono writes directly and hands anything else to chrono, so
//! what is accepted, and the instant read, are chrono's own; only the time taken differs.
//! The `de*` functions plug it into serde (`#[serde(deserialize_with = ...)]`); writing is
//! left to chrono.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// An RFC 3339 instant, as chrono's `FromStr` reads it (and with its error).
fn read(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match fast(s.as_bytes()) {
        Some(t) => Ok(t),
        None => s.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`, a fraction of 1 to 9 digits: what chrono
/// writes for a UTC instant. `None` for anything else (other offsets, a leap second, a
/// space for the `T`), which [`read`] leaves to chrono.
fn fast(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to]
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut at = 19;
    let mut nanos = 0u32;
    if b[at] == b'.' {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        nanos = num(at + 1, at + 1 + digits)? * 10u32.pow(9 - u32::try_from(digits).ok()?);
        at += 1 + digits;
    }
    match &b[at..] {
        b"Z" | b"+00:00" => {}
        _ => return None,
    }
    // A second of 60 (a leap second) is chrono's to read.
    if second > 59 {
        return None;
    }
    let year = i32::try_from(year).ok()?;
    let naive =
        NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(naive.and_utc())
}

struct StampVisitor;

impl Visitor<'_> for StampVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 date and time")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        read(s).map_err(E::custom)
    }
}

/// One instant, as [`read`] reads it.
struct Stamp(DateTime<Utc>);

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StampVisitor).map(Stamp)
    }
}

/// `#[serde(deserialize_with = "stamp::de")]` for a `DateTime<Utc>`.
///
/// # Errors
/// Not a string, or not an RFC 3339 date and time.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(StampVisitor)
}

/// `#[serde(deserialize_with = "stamp::de_map")]` for a `BTreeMap<K, DateTime<Utc>>`.
///
/// # Errors
/// Not a map, or a value that is not an RFC 3339 date and time.
pub fn de_map<'de, D, K>(d: D) -> Result<BTreeMap<K, DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
{
    let m = BTreeMap::<K, Stamp>::deserialize(d)?;
    Ok(m.into_iter().map(|(k, Stamp(t))| (k, t)).collect())
}

/// Instants by two keys (system, then stage).
pub type Nested<K1, K2> = BTreeMap<K1, BTreeMap<K2, DateTime<Utc>>>;

/// `#[serde(deserialize_with = "stamp::de_nested")]` for a
/// `BTreeMap<K1, BTreeMap<K2, DateTime<Utc>>>`.
///
/// # Errors
/// Not a map of maps, or a value that is not an RFC 3339 date and time.
pub fn de_nested<'de, D, K1, K2>(d: D) -> Result<Nested<K1, K2>, D::Error>
where
    D: Deserializer<'de>,
    K1: Deserialize<'de> + Ord,
    K2: Deserialize<'de> + Ord,
{
    let m = BTreeMap::<K1, BTreeMap<K2, Stamp>>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, inner)| (k, inner.into_iter().map(|(k2, Stamp(t))| (k2, t)).collect()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};
    use proptest::prelude::*;

    fn parse(s: &str) -> Option<DateTime<Utc>> {
        read(s).ok()
    }

    fn chrono_reads(s: &str) -> Option<DateTime<Utc>> {
        serde_json::from_value::<DateTime<Utc>>(serde_json::Value::String(s.into())).ok()
    }

    proptest! {
        /// Whatever chrono writes for an instant (any second since year 1, any nanosecond),
        /// the fast path reads, and reads as chrono does.
        #[test]
        fn reads_what_chrono_writes_as_chrono_reads_it(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|m| m * 1_000_000)],
        ) {
            let t = Utc.timestamp_opt(secs, nanos).single().expect("in range");
            let written = serde_json::to_value(t).expect("write");
            let s = written.as_str().expect("a string");
            prop_assert_eq!(fast(s.as_bytes()), Some(t), "{}", s);
            prop_assert_eq!(chrono_reads(s), Some(t));
        }

        /// Any text: the same answer as chrono's.
        #[test]
        fn any_text_reads_as_chrono_reads_it(s in "[0-9T:.Z+ -]{0,32}") {
            prop_assert_eq!(parse(&s), chrono_reads(&s));
        }

        /// Near misses of the fast shape: the same answer as chrono's.
        #[test]
        fn near_misses_read_as_chrono_reads_them(
            base in prop_oneof![
                Just("2026-11-18T14:00:00Z"),
                Just("2026-11-18T14:00:00.123Z"),
                Just("2026-11-18T14:00:00.123456789+00:00"),
            ],
            at in 0usize..40,
            with in "[0-9a-zT:.Z+ -]",
        ) {
            let mut s: String = base.into();
            let at = at.min(s.len());
            s.insert_str(at, &with);
            prop_assert_eq!(parse(&s), chrono_reads(&s), "{}", s);
            let mut cut: String = base.into();
            cut.truncate(at);
            prop_assert_eq!(parse(&cut), chrono_reads(&cut), "{}", cut);
        }
    }

    #[test]
    fn the_shapes_chrono_alone_reads_go_to_chrono() {
        for s in [
            "2026-11-18T15:00:00+01:00",
            "2026-11-18 14:00:00Z",
            "2026-11-18t14:00:00z",
            "2016-12-31T23:59:60Z",
            "2026-11-18T14:00:00.1234567891Z",
        ] {
            assert!(fast(s.as_bytes()).is_none(), "{s}");
            assert_eq!(parse(s), chrono_reads(s), "{s}");
        }
        let leap = parse("2016-12-31T23:59:60Z").expect("a leap second");
        assert_eq!(leap.nanosecond(), 1_000_000_000);
        assert_eq!(
            parse("2026-11-18T15:00:00+01:00"),
            Utc.with_ymd_and_hms(2026, 11, 18, 14, 0, 0).single()
        );
        for bad in ["", "2026-02-30T00:00:00Z", "2026-11-18T24:00:00Z", "2026-11-18T14:00:00"] {
            assert_eq!(parse(bad), chrono_reads(bad), "{bad}");
        }
    }

    #[test]
    fn serde_helpers_read_maps_and_nested_maps() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct S {
            #[serde(deserialize_with = "de")]
            one: DateTime<Utc>,
            #[serde(deserialize_with = "de_map")]
            map: BTreeMap<String, DateTime<Utc>>,
            #[serde(deserialize_with = "de_nested")]
            nested: BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
        }
        let t = Utc.with_ymd_and_hms(2026, 11, 18, 14, 0, 0).single().expect("t");
        let s: S = serde_json::from_str(
            r#"{"one":"2026-11-18T14:00:00Z","map":{"a":"2026-11-18T15:00:00+01:00"},
                "nested":{"crm":{"mql":"2026-11-18T14:00:00.000Z"}}}"#,
        )
        .expect("read");
        assert_eq!(s.one, t);
        assert_eq!(s.map["a"], t);
        assert_eq!(s.nested["crm"]["mql"], t);
        let bad = serde_json::from_str::<S>(r#"{"one":"yesterday","map":{},"nested":{}}"#);
        assert!(bad.is_err());
    }
}
