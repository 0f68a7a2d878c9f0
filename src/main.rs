//! `mailseal`: argv → config → the daemon or a tool. No milter, DKIM or DNS logic here.
//!
//! Every command returns its typed error boxed; it is printed once, here, with its chain of
//! causes.

use std::error::Error;
use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use mailseal::cli::{Cli, Command, KeysCommand, ReportsCommand};
use mailseal::config::Config;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// A failed command: what was being done, and why.
#[derive(Debug)]
struct Failed {
    what: String,
    source: Box<dyn Error>,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl Error for Failed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Wrap an error with what was being done.
fn doing<E: Error + 'static>(what: impl Into<String>) -> impl FnOnce(E) -> Box<dyn Error> {
    let what = what.into();
    move |e| {
        Box::new(Failed {
            what,
            source: Box::new(e),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match command(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

/// Run a future on a single-threaded runtime (the tools do one thing at a time).
fn block_on<F: Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(doing("cannot start the runtime"))?;
    Ok(rt.block_on(f))
}

fn success_if(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn command(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::CheckConfig { config } => {
            let c = load(&config)?;
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: OK ({} keys, {} signing rules, socket {})",
                config.display(),
                c.tables.keys.len(),
                c.tables.rows.len(),
                c.socket
            );
            match c.reports.store() {
                None => println!("DMARC reports: off (no [reports] store)"),
                Some(store) => println!(
                    "DMARC reports: store {store}, {} sending, as {} <{}>",
                    if c.reports.daily() { "daily" } else { "manual" },
                    c.reports.org(),
                    c.reports.from_address()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let cfg = load(&config)?;
            mailseal::daemon::init_logging(&cfg.log_level);
            // One thread by default: each message crosses two tasks per connection (indymilter's
            // reader and session), and on a multi-threaded runtime every hand-over between them
            // can be a futex wake-up of another thread — about 10% of the CPU per signed message
            // under Postfix (bench/run.sh). One thread signs some 1300 RSA-2048 messages/s.
            let mut rt = match cfg.threads {
                1 => tokio::runtime::Builder::new_current_thread(),
                n => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    if n > 1 {
                        b.worker_threads(n);
                    }
                    b
                }
            };
            let rt = rt
                .enable_all()
                .build()
                .map_err(doing("cannot start the runtime"))?;
            rt.block_on(mailseal::daemon::serve(config, cfg))
                .map_err(|e| {
                    tracing::error!("{e}");
                    e
                })
                .map_err(doing("mailseal"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            config,
            client_ip,
            helo,
            mail_from,
        } => message_tool(&config, |cfg, msg| async move {
            mailseal::tools::verify_message(cfg, &msg, client_ip, &helo, &mail_from).await
        }),
        Command::Sign { config } => message_tool(&config, |cfg, msg| async move {
            mailseal::tools::sign_message(cfg, &msg).await
        }),
        Command::Keygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        } => {
            let g = mailseal::tools::keygen::keygen(&domain, &selector, algorithm, bits, &out)
                .map_err(doing("mailseal keygen"))?;
            print!("{}", g.report);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate {
            opendkim,
            opendmarc,
            defaults_dir,
            out,
        } => {
            use mailseal::tools::migrate;
            let sources = std::iter::once(&opendkim)
                .chain(opendmarc.as_ref())
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ");
            let opts = migrate::Options {
                opendkim,
                opendmarc,
                defaults_dir,
                out: out.clone(),
            };
            let plan = migrate::plan(&opts)
                .map_err(|e| Box::<dyn Error>::from(format!("mailseal migrate: {e}")))?;
            print!("{}", plan.report());
            match out {
                None => println!(
                    "\nDry run: nothing written. --out DIR writes mailseal.toml and the files above into DIR."
                ),
                Some(dir) => {
                    let written = migrate::write(&plan, &dir, &sources)
                        .map_err(|e| Box::<dyn Error>::from(format!("mailseal migrate: {e}")))?;
                    println!("\nWritten:");
                    for p in written {
                        println!("  {}", p.display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Testkey { config } => {
            let cfg = load(&config)?;
            let (report, ok) = block_on(async {
                let auth = mailseal::dns::authenticator(&cfg.dns)?;
                Ok::<_, mailseal::dns::DnsError>(
                    mailseal::tools::testkey::testkey(&cfg, &auth).await,
                )
            })?
            .map_err(doing("mailseal testkey"))?;
            print!("{report}");
            Ok(success_if(ok))
        }
        Command::CheckDomain {
            domain,
            selectors,
            json,
            config,
            ca_file,
            https_port,
        } => {
            use mailseal::tools::check_domain::{self, Level, Options};
            use std::io::IsTerminal;
            let dns = match &config {
                Some(p) => load(p)?.dns.clone(),
                None => mailseal::config::Dns::default(),
            };
            let opts = Options {
                selectors,
                https_port,
                ca_file,
            };
            let findings = block_on(async {
                let auth = mailseal::dns::authenticator(&dns)?;
                Ok::<_, mailseal::dns::DnsError>(
                    check_domain::check_domain(&auth, &domain, &opts).await,
                )
            })?
            .map_err(doing("mailseal check-domain"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&findings)?);
            } else {
                let colour =
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                print!("{}", check_domain::render(&findings, colour));
            }
            Ok(success_if(!findings.iter().any(|f| f.level == Level::Fail)))
        }
        Command::Explain {
            config,
            address,
            client_ip,
            auth,
        } => {
            let cfg = load(&config)?;
            print!(
                "{}",
                mailseal::tools::explain::explain(&cfg, &address, client_ip, auth.as_deref())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Reports { action } => reports(action),
        Command::Keys { action } => keys(action),
        Command::Manpage { page } => {
            use mailseal::cli::Page;
            let text = match page {
                Page::Mailseal => mailseal::cli::manpage().map_err(doing("mailseal manpage"))?,
                Page::ConfigFormat => mailseal::config::docs::man_page().into_bytes(),
                Page::ExampleConfig => mailseal::config::docs::example_toml().into_bytes(),
            };
            let _ = std::io::stdout().write_all(&text);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn keys(action: KeysCommand) -> Result<ExitCode> {
    use mailseal::tools::keys;
    let failed = |e: String| Box::<dyn Error>::from(format!("mailseal keys: {e}"));
    let text = match action {
        KeysCommand::Status { config, json } => {
            let cfg = load(&config)?;
            block_on(async {
                let auth = mailseal::dns::authenticator(&cfg.dns).map_err(|e| e.to_string())?;
                keys::status(&cfg, &auth, json).await
            })?
            .map_err(failed)?
        }
        KeysCommand::Rotate {
            config,
            domain,
            algorithm,
        } => {
            let cfg = load(&config)?;
            let alg = algorithm.map(|a| match a {
                mailseal::tools::keygen::Algorithm::Rsa => "rsa",
                mailseal::tools::keygen::Algorithm::Ed25519 => "ed25519",
            });
            block_on(async {
                let auth = mailseal::dns::authenticator(&cfg.dns).map_err(|e| e.to_string())?;
                keys::rotate(&cfg, &auth, domain.as_deref(), alg).await
            })?
            .map_err(failed)?
        }
        KeysCommand::Advance { config } => {
            let cfg = load(&config)?;
            block_on(async {
                let auth = mailseal::dns::authenticator(&cfg.dns).map_err(|e| e.to_string())?;
                keys::advance(&cfg, &auth).await
            })?
            .map_err(failed)?
        }
        KeysCommand::Hosts { config } => keys::hosts(&load(&config)?).map_err(failed)?,
        KeysCommand::Forget { host, config } => {
            keys::forget(&load(&config)?, &host).map_err(failed)?
        }
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

fn reports(action: ReportsCommand) -> Result<ExitCode> {
    use mailseal::tools::reports;
    match action {
        ReportsCommand::Send {
            config,
            dry_run,
            out,
            since,
            until,
        } => {
            let cfg = load(&config)?;
            mailseal::daemon::init_logging(&cfg.log_level);
            let now = mailseal::report::now();
            let opts = mailseal::report::send::SendOptions {
                dry_run,
                out,
                since: since
                    .map(|s| reports::parse_time(&s, now))
                    .transpose()?
                    .unwrap_or(0),
                until: until
                    .map(|s| reports::parse_time(&s, now))
                    .transpose()?
                    .unwrap_or_else(|| mailseal::report::day_start(now)),
                metrics: Default::default(),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(doing("cannot start the runtime"))?;
            let sent = mailseal::report::send::run(&cfg, &opts, rt.handle())
                .map_err(doing("mailseal reports send"))?;
            print!("{}", reports::render_sent(&sent, dry_run));
            Ok(success_if(!sent.iter().any(|s| s.retry)))
        }
        ReportsCommand::Show { config, domain } => {
            let cfg = load(&config)?;
            let text =
                reports::show(&cfg, domain.as_deref()).map_err(doing("mailseal reports show"))?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        ReportsCommand::Import { config, inputs } => {
            let cfg = load(&config)?;
            let (text, all_ok) = mailseal::tools::intake::import(&cfg, &inputs)
                .map_err(|e| format!("mailseal reports import: {e}"))?;
            print!("{text}");
            Ok(success_if(all_ok))
        }
        ReportsCommand::Rejected {
            config,
            limit,
            show,
        } => {
            let cfg = load(&config)?;
            let text = mailseal::tools::intake::rejected(&cfg, limit, show)
                .map_err(|e| format!("mailseal reports rejected: {e}"))?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        ReportsCommand::Summary {
            config,
            domain,
            days,
        } => {
            let cfg = load(&config)?;
            let text = mailseal::tools::intake::summary(&cfg, domain.as_deref(), days)
                .map_err(|e| format!("mailseal reports summary: {e}"))?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Load the config, read a message from stdin, run `f` and print its output.
fn message_tool<F, Fut>(path: &Path, f: F) -> Result<ExitCode>
where
    F: FnOnce(Config, Vec<u8>) -> Fut,
    Fut: Future<Output = std::result::Result<Vec<u8>, mailseal::tools::ToolError>>,
{
    let cfg = load(path)?;
    mailseal::daemon::init_logging("warn");
    let mut msg = Vec::new();
    std::io::stdin()
        .read_to_end(&mut msg)
        .map_err(doing("cannot read the message from stdin"))?;
    let out = block_on(f(cfg, msg))?.map_err(doing("mailseal"))?;
    let _ = std::io::stdout().write_all(&out);
    Ok(ExitCode::SUCCESS)
}
