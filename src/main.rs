//! `mailseal`: argv → config → the daemon or a tool. No milter, DKIM or DNS logic here.

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use mailseal::cli::{Cli, Command};
use mailseal::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                for w in c.unsafe_file_warnings() {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: OK ({} keys, {} signing rules, socket {})",
                    config.display(),
                    c.signing.tables.keys.len(),
                    c.signing.tables.rows.len(),
                    c.socket
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            mailseal::daemon::init_logging(&cfg.log_level);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(mailseal::daemon::serve(config, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("mailseal: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify {
            config,
            client_ip,
            helo,
            mail_from,
        } => tool(&config, |cfg, msg| async move {
            mailseal::tools::verify_message(cfg, &msg, client_ip, &helo, &mail_from).await
        }),
        Command::Keygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        } => match mailseal::tools::keygen::keygen(&domain, &selector, algorithm, bits, &out) {
            Ok(g) => {
                print!("{}", g.report);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mailseal keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Testkey { config } => testkey(&config),
        Command::CheckDomain {
            domain,
            selectors,
            json,
            config,
            ca_file,
            https_port,
        } => {
            let opts = mailseal::tools::check_domain::Options {
                selectors,
                https_port,
                ca_file,
            };
            check_domain(&domain, config.as_deref(), &opts, json)
        }
        Command::Manpage => match mailseal::cli::manpage() {
            Ok(page) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(&page);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mailseal manpage: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Explain {
            config,
            address,
            client_ip,
            auth,
        } => match Config::load(&config) {
            Ok(cfg) => {
                print!(
                    "{}",
                    mailseal::tools::explain::explain(&cfg, &address, client_ip, auth.as_deref())
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Sign { config } => tool(&config, |cfg, msg| async move {
            mailseal::tools::sign_message(cfg, &msg).await
        }),
    }
}

/// Load the config, read a message from stdin, run `f` and print its output.
fn tool<F, Fut>(path: &std::path::Path, f: F) -> ExitCode
where
    F: FnOnce(Config, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, String>>,
{
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    mailseal::daemon::init_logging("warn");
    let mut msg = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut msg) {
        eprintln!("cannot read the message from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f(cfg, msg)) {
        Ok(out) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mailseal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mailseal testkey`: exit 1 when any key has a problem.
fn testkey(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let auth = mailseal::pipeline::dns::authenticator(&cfg.dns)?;
        Ok::<_, String>(mailseal::tools::testkey::testkey(&cfg, &auth).await)
    });
    match result {
        Ok((report, ok)) => {
            print!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mailseal testkey: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mailseal check-domain`: exit 1 when any check fails.
fn check_domain(
    domain: &str,
    config: Option<&std::path::Path>,
    opts: &mailseal::tools::check_domain::Options,
    json: bool,
) -> ExitCode {
    use mailseal::tools::check_domain::{self, Level};
    use std::io::IsTerminal;
    let dns = match config {
        Some(p) => match Config::load(p) {
            Ok(c) => c.dns,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => match Config::from_toml(std::path::Path::new("(defaults)"), "") {
            Ok(c) => c.dns,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let findings = match rt.block_on(async {
        let auth = mailseal::pipeline::dns::authenticator(&dns)?;
        Ok::<_, String>(check_domain::check_domain(&auth, domain, opts).await)
    }) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mailseal check-domain: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&findings) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("mailseal check-domain: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", check_domain::render(&findings, colour));
    }
    if findings.iter().any(|f| f.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
