//! The workspace's binaries, found next to the test executable.
//!
//! Cargo sets `CARGO_BIN_EXE_*` only for a package's own binaries, so tests here find
//! `autoprov-agent` and `autoprov` in `target/<profile>/` (the test executable runs from
//! `target/<profile>/deps/`). `AUTOPROV_BIN_DIR` points elsewhere, e.g. at a release build.

use std::path::PathBuf;

/// The path of workspace binary `name`; panics with what to do if it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("AUTOPROV_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("the test executable's path");
            let mut dir = exe.parent().expect("a directory").to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo nextest run --workspace` (or `cargo build -p {name}` first), or set AUTOPROV_BIN_DIR",
        path.display()
    );
    path
}
