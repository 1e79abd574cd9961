//! `autoprov-agent`: see the library documentation.

fn main() -> std::process::ExitCode {
    autoprov_agent::cli::main()
}
