//! The integration tests: one binary (`cargo test --test it`), one module per area. Every test
//! drives the real thing: the milter protocol against the real listener, DNS from a server on
//! loopback, the `mailseal` binary, real Postfix, PostgreSQL, OpenDKIM and python3-dkim.
//!
//! Tests run in parallel threads of this one process. Those that need something fixed and
//! shared (a Postfix instance, the PostgreSQL server, the process's memory figures) hold
//! [`common::exclusive`] for their duration; the others use ports and addresses of their own.

mod common;

mod bypass;
mod check_domain;
mod config_check;
mod conformance_sign;
mod conformance_verify;
mod daemon;
mod dashboard;
mod dns_cache;
mod e2e_postfix;
mod e2e_verify;
mod faults;
mod hostile;
mod hostile_messages;
mod intake;
mod migrate;
mod packaging;
mod reports;
mod rotation;
mod security;
mod signing;
mod tools;
mod verify;
