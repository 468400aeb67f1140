//! kengine-gateway-bench: measures the translator and the data plane on one
//! machine and prints the figures, each subcommand ending with one
//! machine-readable JSON line. BENCHMARKS.md records the results.
//!
//! Everything runs on loopback addresses and every loop is bounded. The live
//! scenarios start Caddy 2.8.4 (the code Kengine forked):
//! `$KENGINE_GATEWAY_TEST_CADDY`, else the repo's `.venv/bin/caddy`, else
//! `caddy` on `PATH`. Build with `--release` for figures.

mod attached;
mod churn;
mod dispatch;
mod live;
mod load;
mod naive;
mod objects;
mod propagation;
mod reload;
mod route_cost;
mod translate;
mod util;

use clap::{Parser, Subcommand};

/// The product's allocator (src/main.rs), so translate costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "kengine-gateway-bench", about = "kengine-gateway benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Translate cost: time, peak RSS and config size per number of routes
    /// (100 routes per namespace, 2 rules and 2 backendRefs each).
    Translate {
        /// Sizes to run, each in a fresh child process.
        #[arg(long, value_delimiter = ',', default_values_t = [100, 1_000, 5_000, 10_000, 20_000])]
        routes: Vec<usize>,
        /// Translations per size (default: 15 up to 5,000 routes, fewer above).
        #[arg(long)]
        iterations: Option<usize>,
        /// Every other route a GRPCRoute of the same shape (a service split
        /// 80/20, a method matched with a header).
        #[arg(long)]
        mixed: bool,
    },
    /// One size of `translate`, in this process (what `translate` runs per size).
    #[command(hide = true)]
    TranslateOne {
        #[arg(long)]
        routes: usize,
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        #[arg(long)]
        mixed: bool,
    },
    /// An echo backend (what the live scenarios start as child processes).
    #[command(hide = true)]
    EchoChild {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        name: String,
    },
    /// Data-plane dispatch: first route, last route and a one-route config.
    Dispatch {
        /// Routes loaded, each with its own hostname.
        #[arg(long, default_value_t = 5_000)]
        hosts: usize,
        /// Seconds per load run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Keep-alive connections of the load generator.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Rounds of (first, last, one-route), interleaved.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Also measure with `wrk` when it is installed.
        #[arg(long)]
        wrk: bool,
        /// Give each route its own Service (its own proxy) instead of one
        /// shared by all; the Services' ClusterIPs are loopback aliases.
        #[arg(long)]
        distinct_backends: bool,
        /// Give each route two rules (the translate shape's paths) and
        /// request one of them, instead of one catch-all rule.
        #[arg(long)]
        two_rules: bool,
    },
    /// Where dispatch cost goes: Caddy's CPU per request for hand-written
    /// servers that each add one kind of work, and the translated tree's
    /// path counted in those units, predicted against measured.
    RouteCost {
        /// Hosts of the translated tree.
        #[arg(long, default_value_t = 5_000)]
        hosts: usize,
        /// Seconds per load run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Rounds over every server, interleaved.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Propagation: add routes one at a time into a real Caddy, time each until it answers 200.
    Propagation {
        #[arg(long, default_value_t = 3_000)]
        routes: usize,
        /// Load this many routes in one untimed push first, then add the
        /// rest one at a time (figures near a size without all the reloads).
        #[arg(long, default_value_t = 0)]
        preload: usize,
        /// Print a line every this many routes.
        #[arg(long, default_value_t = 100)]
        report_every: usize,
    },
    /// Attached-routes convergence: the controller against a real control
    /// plane (root: it runs in a network namespace of its own); N HTTPRoutes
    /// created, then deleted, in a burst.
    Attached {
        #[arg(long, default_value_t = 1_000)]
        routes: usize,
    },
    /// Reload cost: Kengine's load time per config size, and reloads caused
    /// by EndpointSlice changes.
    Reload {
        #[arg(long, value_delimiter = ',', default_values_t = [1_000, 5_000, 20_000])]
        routes: Vec<usize>,
        #[arg(long, default_value_t = 100)]
        endpoint_changes: usize,
        /// Loads of each config in the side-by-side comparison with the
        /// naive config.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Changes under traffic: modify routes while a load generator runs.
    Churn {
        /// Changes of the other route (the loaded route's weights change as often).
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// Further routes in the config, so that each reload has work to do.
        #[arg(long, default_value_t = 1_000)]
        filler: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Pause after each push, in milliseconds.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// Re-send a request once when a reload closed its keep-alive
        /// connection under it (what Go's Transport and browsers do).
        #[arg(long)]
        retry: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Translate {
            routes,
            iterations,
            mixed,
        } => translate::run(&routes, iterations, mixed),
        Command::TranslateOne {
            routes,
            iterations,
            mixed,
        } => translate::one(routes, iterations, mixed),
        Command::EchoChild { listen, name } => live::echo_child(listen, name),
        Command::Attached { routes } => {
            kengine_gateway::kengine::admin::install_crypto_provider();
            attached::main(routes)
        }
        command => {
            kengine_gateway::kengine::admin::install_crypto_provider();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(live(command))
        }
    }
}

async fn live(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dispatch {
            hosts,
            seconds,
            connections,
            rounds,
            wrk,
            distinct_backends,
            two_rules,
        } => {
            dispatch::run(dispatch::Args {
                hosts,
                seconds,
                connections,
                rounds,
                wrk,
                distinct_backends,
                two_rules,
            })
            .await
        }
        Command::RouteCost {
            hosts,
            seconds,
            connections,
            rounds,
        } => {
            route_cost::run(route_cost::Args {
                hosts,
                seconds,
                connections,
                rounds,
            })
            .await
        }
        Command::Propagation {
            routes,
            preload,
            report_every,
        } => propagation::run(routes, preload, report_every.max(1)).await,
        Command::Reload {
            routes,
            endpoint_changes,
            rounds,
        } => reload::run(&routes, endpoint_changes, rounds.max(1)).await,
        Command::Churn {
            changes,
            filler,
            connections,
            interval_ms,
            retry,
        } => {
            churn::run(churn::Args {
                changes,
                filler,
                connections,
                interval_ms,
                retry,
            })
            .await
        }
        Command::Translate { .. }
        | Command::TranslateOne { .. }
        | Command::EchoChild { .. }
        | Command::Attached { .. } => {
            unreachable!("handled in main")
        }
    }
}
