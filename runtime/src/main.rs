//! `edgeseg`: the on-device runtime binary.
//!
//! Model execution (`segment`, `run`, `bench`) arrives with the CPU-runtime and
//! streaming work; today the binary reports its version and build features.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgeseg",
    version,
    about = "edgeseg on-device segmentation runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the runtime version and what this build contains.
    Info,
    /// Stream frames through the model: overlays, masks and a per-frame log.
    Run(edgeseg_runtime::stream::cli::RunArgs),
    /// Run the default model on the committed sample sequence.
    Demo(edgeseg_runtime::stream::cli::DemoArgs),
    /// Measure streaming pass-through and annotation latency.
    BenchStream(edgeseg_runtime::stream::cli::BenchStreamArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => edgeseg_runtime::stream::cli::run(a)?,
        Command::Demo(a) => edgeseg_runtime::stream::cli::demo(a)?,
        Command::BenchStream(a) => edgeseg_runtime::stream::cli::bench_stream(a)?,
        Command::Info => {
            println!("edgeseg {}", env!("CARGO_PKG_VERSION"));
            println!("backends: none yet (tract CPU backend and CUDA backend are not built yet)");
        }
    }
    Ok(())
}
