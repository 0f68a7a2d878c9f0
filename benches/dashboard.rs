//! The dashboard on real volumes (#22): a year of aggregate reports for 50 domains, 20
//! reporters a day, 20 rows a report (365,000 reports, 7.3 million rows), imported through
//! the store as `reports import` stores them, then the page for one domain over the year
//! (and over 30 days) built as the daemon builds it; prints the import rate and the server
//! time (target: under 500 ms).
//!   cargo bench --ignore-rust-version --bench dashboard
//! MAILSEAL_BENCH_DOMAINS (default 50) scales it down for a quick look. Run by `cargo test`
//! (without `--bench`) it only checks itself on one domain and a week.

use std::time::Instant;

use mailseal::config::{Config, StoreSpec};
use mailseal::intake::aggregate::{Aggregate, DkimResult, Policy, Row, SpfResult};
use mailseal::pipeline::context::Context;
use mailseal::report::store::Store;

const REPORTERS: usize = 20;
const ROWS: usize = 20;
const DAYS: i64 = 365;

fn report(domain: &str, reporter: usize, day: i64, seq: usize) -> Aggregate {
    let rows = (0..ROWS)
        .map(|i| {
            let pass = i % 10 != 0;
            Row {
                // The same sources day after day, as real senders are.
                source_ip: format!("192.0.{}.{}", reporter % 200, (i * 7 + seq % 3) % 250 + 1),
                count: (i as i64 % 5 + 1) * 3,
                disposition: if pass { "none" } else { "quarantine" }.into(),
                dkim_aligned: if pass { "pass" } else { "fail" }.into(),
                spf_aligned: if i % 4 == 0 { "fail" } else { "pass" }.into(),
                reasons: Vec::new(),
                header_from: domain.into(),
                envelope_from: domain.into(),
                dkim: vec![DkimResult {
                    domain: domain.into(),
                    selector: if day % 180 < 90 { "r2026a" } else { "r2026b" }.into(),
                    result: if pass { "pass" } else { "fail" }.into(),
                }],
                spf: vec![SpfResult {
                    domain: domain.into(),
                    scope: "mfrom".into(),
                    result: "pass".into(),
                }],
            }
        })
        .collect();
    Aggregate {
        org: format!("reporter{reporter}.example"),
        email: format!("dmarc@reporter{reporter}.example"),
        report_id: format!("{domain}-{reporter}-{day}"),
        begin: day,
        end: day + 86_399,
        domain: domain.into(),
        policy: Policy {
            p: "none".into(),
            ..Default::default()
        },
        rows,
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let domains: usize = std::env::var("MAILSEAL_BENCH_DOMAINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 50 } else { 1 });
    let days = if benching { DAYS } else { 7 };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.sqlite");
    let mut store = Store::open(&StoreSpec::Sqlite(db.clone())).unwrap();
    let today = mailseal::report::day_start(mailseal::report::now());
    let started = Instant::now();
    let mut n = 0;
    for d in 0..domains {
        let domain = format!("domain{d}.example");
        for k in 0..days {
            let day = today - k * 86_400;
            for r in 0..REPORTERS {
                store
                    .intake_aggregate(&report(&domain, r, day, n), "bench", today)
                    .unwrap();
                n += 1;
            }
        }
    }
    let took = started.elapsed();
    println!(
        "imported {n} reports ({} rows) for {domains} domains in {:.1} s: {:.0} reports/s",
        n * ROWS,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    drop(store);
    let cfg_path = dir.path().join("m.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[reports]\nstore = \"{}\"\norg_name = \"example.net\"\nemail = \"dmarc@example.net\"\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"100ms\"\nattempts = 1\n",
            db.display()
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Config::load(&cfg_path).unwrap();
        let ctx = Context::new(config, Default::default()).unwrap();
        for days in [365, 30].into_iter().filter(|d| benching || *d == 30) {
            let q = mailseal::dashboard::page::Query {
                domain: Some("domain7.example".into()),
                days,
            };
            let spec = StoreSpec::Sqlite(db.clone());
            let t = Instant::now();
            let mut store = Store::open(&spec).unwrap();
            mailseal::dashboard::page::read(&mut store, &q, &[], mailseal::report::now()).unwrap();
            println!(
                "store reads for one domain, last {days} days: {:.1} ms",
                t.elapsed().as_secs_f64() * 1000.0
            );
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let html = mailseal::dashboard::page::build(&ctx, &q).await.unwrap();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                assert!(html.contains("id=\"messages\""));
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "page for one domain, last {days} days, {domains} domains in the store: median {:.1} ms, worst {:.1} ms (target < 500 ms)",
                times[2], times[4]
            );
        }
    });
}
