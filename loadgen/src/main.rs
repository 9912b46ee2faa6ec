//! `loadgen`: the benchmark client for shardcast. See `loadgen --help`.

use clap::Parser;
use loadgen::cli::{Cli, Scenario};
use loadgen::report::Report;
use loadgen::scenario;
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let cli = Cli::parse();
    let (json, result) = match &cli.scenario {
        Scenario::Connections(a) if a.worker => {
            if let Err(e) = scenario::connections::worker(a) {
                eprintln!("loadgen worker: {e}");
                std::process::exit(1);
            }
            return;
        }
        Scenario::Connections(a) => (a.common.json, loadgen::run(&cli.scenario)),
        Scenario::Fanout(a) => (a.common.json, loadgen::run(&cli.scenario)),
        Scenario::Echo(a) => (a.common.json, loadgen::run(&cli.scenario)),
        Scenario::Broadcast(a) => (a.common.json, loadgen::run(&cli.scenario)),
        Scenario::Churn(a) => (a.common.json, loadgen::run(&cli.scenario)),
        Scenario::Plot(a) => {
            match loadgen::plot::plot_file(&a.input, &a.out, a.markdown.as_deref()) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                }
                Err(e) => {
                    eprintln!("loadgen plot: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    };
    match result {
        Ok(r) => {
            print(&r, json);
            // A scenario with a verdict (churn) fails the command.
            if r.map.get("pass") == Some(&serde_json::Value::Bool(false)) {
                std::process::exit(3);
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

fn print(r: &Report, json: bool) {
    if json {
        println!("{}", r.to_json());
    } else {
        println!("{}", r.to_table());
    }
    for w in &r.warnings {
        eprintln!("loadgen: WARNING: {w}");
    }
}
