use std::process::ExitCode;

use clap::Parser as _;
use kengine_gateway::cli::{Cli, Command, LogFormat};
use kengine_gateway::providers::files;
use kengine_gateway::{controller, echo, render, standalone};

/// Translate allocates many small values; see the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kengine_gateway::kengine::admin::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("kengine-gateway: {}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("kengine-gateway: invalid --log-level: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Render(args) => match render::render(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kengine-gateway: {e}");
                ExitCode::from(2)
            }
        },
        Command::Standalone(args) => run_async(standalone::run(args, shutdown_signal())),
        Command::Controller(args) => run_async(controller::run(*args, shutdown_signal())),
        Command::AdminProxy(args) => {
            run_async(kengine_gateway::admin_proxy::run(args, shutdown_signal()))
        }
        Command::Crd => {
            print!("{}", kengine_gateway::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Echo(args) => {
            let identity = echo::Identity {
                name: args.name,
                namespace: args.namespace,
            };
            let options = echo::Options::default().h2c_only(args.h2c_only);
            run_async(echo::run_with(
                args.listen,
                identity,
                options,
                shutdown_signal(),
            ))
        }
    }
}

fn run_async(job: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("kengine-gateway: {}", files::one_line(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// clap's multi-line usage errors, folded into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .map(|l| l.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    // Colour codes only for a terminal: in a file or a pipe they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
