//! `autoprov`: the operator CLI. Everything lives in the library; see `autoprov --help`.

fn main() -> std::process::ExitCode {
    autoprov::cli::main()
}
