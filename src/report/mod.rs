//! DMARC aggregate reports (RFC 9990).
//!
//! - [`evaluation`]: what one DMARC check of an inbound message contributes, built from its
//!   verdicts ([`crate::results::AuthResults`]) and the answer given.
//! - [`recorder`]: hands evaluations to a writer thread through a bounded queue. The milter
//!   never waits for the disk; a full queue or a failing store loses report data (logged and
//!   counted), never mail.
//! - [`store`]: the SQLite or PostgreSQL store, with the grouping queries.
//! - [`xml`]: the report document. [`send`]: report messages, destinations, submission.

pub mod destination;
pub mod evaluation;
pub mod failure;
pub mod recorder;
pub mod send;
pub mod smtp;
pub mod store;
pub mod xml;

pub use evaluation::{rank_dkim, DkimAuth, Evaluation, Published, Reason, ReasonKind};
pub use recorder::Recorder;

/// Is this message itself a DMARC report? Reports are never reported on (RFC 9990 loop
/// protection): an aggregate report's subject starts "Report Domain:" (§2.5.1), a failure
/// report is a `multipart/report` with `report-type=feedback-report` (RFC 9991).
pub fn is_report_message(subject: Option<&[u8]>, content_type: Option<&[u8]>) -> bool {
    let lower = |v: &[u8]| String::from_utf8_lossy(v).trim().to_ascii_lowercase();
    subject.is_some_and(|s| lower(s).starts_with("report domain:"))
        || content_type.is_some_and(|c| {
            let c = lower(c);
            c.starts_with("multipart/report") && c.contains("feedback-report")
        })
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Start of the UTC day containing `t`.
pub fn day_start(t: i64) -> i64 {
    t - t.rem_euclid(86_400)
}

/// RFC 5322 date-time in UTC ("Mon, 23 Nov 2026 09:30:00 +0000").
pub fn rfc5322_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        MON[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// "2026-11-23" for a Unix time.
pub fn iso_date(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_426_200),
            "Mon, 23 Nov 2026 09:30:00 +0000"
        );
        assert_eq!(iso_date(951_782_400), "2000-02-29");
        assert_eq!(day_start(1_795_426_200), 1_795_392_000);
    }

    #[test]
    fn report_messages_are_recognised() {
        assert!(is_report_message(
            Some(b" Report Domain: example.com Submitter: x.net"),
            None
        ));
        assert!(is_report_message(
            None,
            Some(b"multipart/report; report-type=feedback-report; boundary=x")
        ));
        assert!(!is_report_message(
            Some(b"Re: report domain"),
            Some(b"text/plain")
        ));
    }

    #[test]
    fn dkim_ranking() {
        let d = |domain: &str, result: &str| DkimAuth {
            domain: domain.into(),
            selector: "s".into(),
            result: result.parse().unwrap(),
            human: None,
        };
        let ranked = rank_dkim(
            vec![
                d("example.com", "fail"),
                d("esp.example", "pass"),
                d("mail.example.com", "pass"),
                d("example.com", "pass"),
            ],
            "example.com",
        );
        let order: Vec<_> = ranked
            .iter()
            .map(|r| (r.domain.as_str(), r.result.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("example.com", "pass"),
                ("mail.example.com", "pass"),
                ("esp.example", "pass"),
                ("example.com", "fail")
            ]
        );
    }
}
