//! The workspace's binaries, found next to the test executable.
//!
//! Cargo sets `CARGO_BIN_EXE_*` only for a package's own binaries, so tests here find
//! `autoprov-agent` and `autoprov` in `target/<profile>/` (the test executable runs from
//! `target/<profile>/deps/`). `AUTOPROV_BIN_DIR` points elsewhere, e.g. at a release build.
//!
//! A [`Runner`] runs a binary natively or, for the end-to-end rehearsal, the aarch64 build of it
//! under `qemu-aarch64-static` when `AUTOPROV_AARCH64_BIN_DIR` names the directory that
//! `scripts/build-aarch64` filled.

use std::path::PathBuf;
use std::process::Command;

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
        "{} is not built: build it first (`cargo build --workspace --bins`; scripts/test does), or set AUTOPROV_BIN_DIR",
        path.display()
    );
    path
}

/// Where the aarch64 binaries are, for [`Runner::from_env`].
pub const AARCH64_BIN_DIR: &str = "AUTOPROV_AARCH64_BIN_DIR";
/// The aarch64 glibc and loader Debian's cross packages install, for qemu-user's `-L`.
pub const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";
/// Where that glibc is. The loader must find its own libc there: with `-L` alone it falls back
/// to the multiarch `/lib/aarch64-linux-gnu/libc.so.6` of `libc6:arm64` (which the Rust cross
/// toolchain pulls in) when that is installed, a different Debian revision than the cross
/// loader, and the first `pthread_create` then loops forever in the mismatched stack cache.
pub const AARCH64_LIBS: &str = "/usr/aarch64-linux-gnu/lib";

/// How a workspace binary is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The host build, from [`bin`].
    Native,
    /// The aarch64 build in this directory, under `qemu-aarch64-static -L` [`AARCH64_SYSROOT`]
    /// with the guest's `LD_LIBRARY_PATH` at [`AARCH64_LIBS`].
    Qemu(PathBuf),
}

impl Runner {
    /// [`Runner::Qemu`] when `AUTOPROV_AARCH64_BIN_DIR` is set (it must hold the binaries),
    /// [`Runner::Native`] otherwise.
    pub fn from_env() -> Self {
        match std::env::var_os(AARCH64_BIN_DIR) {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                assert!(
                    dir.join("autoprov-agent").exists(),
                    "{AARCH64_BIN_DIR}={} holds no autoprov-agent: run scripts/build-aarch64 first",
                    dir.display()
                );
                Self::Qemu(dir)
            }
            _ => Self::Native,
        }
    }

    /// A command running binary `name`.
    pub fn command(&self, name: &str) -> Command {
        match self {
            Self::Native => Command::new(bin(name)),
            Self::Qemu(dir) => {
                let mut c = Command::new("qemu-aarch64-static");
                c.arg("-L")
                    .arg(AARCH64_SYSROOT)
                    .arg("-E")
                    .arg(format!("LD_LIBRARY_PATH={AARCH64_LIBS}"))
                    .arg(dir.join(name));
                c
            }
        }
    }

    /// In words, for the test output.
    pub fn describe(&self) -> String {
        match self {
            Self::Native => format!(
                "native binaries ({}; set {AARCH64_BIN_DIR} to run the aarch64 build under qemu-aarch64-static)",
                bin("autoprov-agent").display()
            ),
            Self::Qemu(dir) => format!(
                "aarch64 binaries under qemu-aarch64-static ({})",
                dir.join("autoprov-agent").display()
            ),
        }
    }
}
