//! The `triad` binary: a thin entry point into [`triad::cli`].

fn main() -> std::process::ExitCode {
    triad::cli::main()
}
