//! Project automation: `cargo xtask <command>`.

mod bench;
mod bench_uml;
mod cache;
mod disk;
mod ebpf;
mod iroh_suite;
mod matrix;
mod modgraph;
mod public_api;
mod test;
mod uml;
mod upstream;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "patchbay project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole test suite (installs missing Debian packages when root).
    Test(test::TestArgs),
    /// Run the benchmarks: lab build time, and with --scenarios the scenario suite.
    Bench(bench::BenchArgs),
    /// Run the kernel-sensitive tests on Debian 5.10/6.1/6.12 (QEMU) and the host kernel;
    /// writes docs/kernel-matrix.md.
    KernelMatrix(matrix::KernelMatrixArgs),
    /// Build the eBPF programs (nightly + bpf-linker) into patchbay/src/bpf/patchbay.bpf.o.
    BuildEbpf,
    /// Install the eBPF toolchain: nightly rust-src and bpf-linker built against nightly's LLVM.
    SetupEbpf,
    /// Rebuild the eBPF object into a temp dir and byte-compare it with the committed one.
    CheckEbpf,
    /// List the library's public API from rustdoc JSON (nightly) and compare it with
    /// patchbay/public-api.txt; --bless rewrites the listing.
    PublicApi(public_api::PublicApiArgs),
    /// Build the User-Mode-Linux kernel for the virtual-time backend (`--kernel 7.3`, 6.1, ...;
    /// cached in ~/.cache/patchbay/uml).
    BuildUml(uml::BuildUmlArgs),
    /// The library's module graph and its import cycles (`--check` fails on a cycle).
    ModuleGraph(modgraph::ModGraphArgs),
    /// Run iroh 1.4.1's patchbay tests against upstream patchbay 0.7 or this project's
    /// drop-in, in real or virtual time, or sweep seeds of chosen tests (docs/iroh.md).
    IrohSuite(iroh_suite::IrohSuiteArgs),
    /// Check patchbay-compat against upstream patchbay 0.7.0: its examples, unchanged, and
    /// the NAT scenarios of xtask/parity side by side (needs root; fetches upstream).
    UpstreamCheck(upstream::UpstreamArgs),
    /// Profile every cached UML kernel side by side (`patchbay vt --profile`).
    BenchUml {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Test(args) => test::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::KernelMatrix(args) => matrix::run(args),
        Cmd::BuildEbpf => ebpf::build_ebpf(),
        Cmd::SetupEbpf => ebpf::setup_ebpf(),
        Cmd::CheckEbpf => ebpf::check_ebpf(),
        Cmd::BuildUml(args) => uml::build_uml(args).map(drop),
        Cmd::BenchUml { json } => bench_uml::run(json),
        Cmd::IrohSuite(args) => iroh_suite::run(args),
        Cmd::UpstreamCheck(args) => upstream::run(&args),
        Cmd::ModuleGraph(args) => modgraph::run(&args),
        Cmd::PublicApi(args) => public_api::run(&args),
    }
}
