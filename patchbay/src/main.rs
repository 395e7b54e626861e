//! The `patchbay` command-line tool: a thin wrapper around
//! [`patchbay::cli::main`] (the library's feature `cli`, on by default).

fn main() -> std::process::ExitCode {
    patchbay::cli::main()
}
