//! Shared helpers: a temporary fleet directory, running the binary, third-party verification.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// A temporary directory with a PKI directory inside (`pki/`).
pub struct Fleet {
    pub tmp: TempDir,
}

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Fleet {
    pub fn new() -> Self {
        Fleet {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// A fleet in memory (tmpfs) where the machine has one: for tests about concurrency rather
    /// than durability, where thousands of fsyncs would only measure the disk.
    pub fn in_memory() -> Self {
        let shm = Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        Fleet { tmp }
    }

    /// A fleet with a CA made by `ca init` plus `extra` arguments.
    pub fn with_ca(extra: &[&str]) -> Self {
        let f = Fleet::new();
        let mut args = vec!["ca", "init"];
        args.extend_from_slice(extra);
        f.ok(&args);
        f
    }

    pub fn pki(&self) -> PathBuf {
        self.tmp.path().join("pki")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// The binary with `--pki-dir` set, no passphrase in the environment, stdin closed.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_autoprov"));
        c.arg("--pki-dir")
            .arg(self.pki())
            .args(args)
            .current_dir(self.tmp.path())
            .env_remove("AUTOPROV_CA_PASSPHRASE")
            .env_remove("AUTOPROV_PKI_DIR")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().unwrap().into()
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "autoprov {args:?} failed: {r:#?}");
        r.stdout
    }

    /// Runs, asserts the exit code is `code` and stderr says `says`; returns the run.
    pub fn fails(&self, args: &[&str], code: i32, says: &str) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, code, "autoprov {args:?}: {r:#?}");
        assert!(r.stderr.contains(says), "autoprov {args:?}: {r:#?}");
        r
    }

    /// Issues a device into `bundles/<id>` and returns the bundle directory.
    pub fn issue(&self, id: &str) -> PathBuf {
        let out = self.path(&format!("bundles/{id}"));
        self.ok(&["issue", id, "--out", out.to_str().unwrap()]);
        out
    }

    /// `list --json` parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["list", "--json"])).unwrap()
    }

    /// (serial, status) of a device's certificates in issue order.
    pub fn statuses(&self, id: &str) -> Vec<(String, String)> {
        self.list()
            .into_iter()
            .filter(|r| r["id"] == id)
            .map(|r| {
                (
                    r["serial"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// Every file under `dir` with its content, to prove a command changed nothing.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(snapshot(&p));
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The certificates of a PEM file, DER, in order.
pub fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    pem::parse_many(std::fs::read(path).unwrap())
        .unwrap()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}

/// `openssl verify -CAfile root [-untrusted issuing] [extra…] cert`.
pub fn openssl_verify(pki: &Path, cert: &Path, extra: &[&str]) -> Result<(), String> {
    let mut c = Command::new("openssl");
    c.arg("verify").arg("-CAfile").arg(pki.join("root.crt"));
    if pki.join("issuing.crt").exists() {
        c.arg("-untrusted").arg(pki.join("issuing.crt"));
    }
    c.args(extra).arg(cert);
    let o = c
        .output()
        .expect("openssl is installed (scripts/install-deps)");
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// Verifies a chain file (leaf first) as a TLS client certificate with rustls-webpki, anchored
/// at `root`, optionally checking `crl`.
pub fn webpki_client(root: &Path, chain: &Path, crl: Option<&Path>) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let root_der = pem_certs(root).remove(0);
    let root_der = CertificateDer::from(root_der);
    let anchor = webpki::anchor_from_trusted_cert(&root_der).map_err(|e| e.to_string())?;
    let mut chain = pem_certs(chain).into_iter().map(CertificateDer::from);
    let leaf = chain.next().ok_or("empty chain")?;
    let intermediates: Vec<CertificateDer<'_>> = chain.collect();
    let cert = webpki::EndEntityCert::try_from(&leaf).map_err(|e| e.to_string())?;
    let crl_der = crl.map(|p| {
        pem::parse(std::fs::read(p).unwrap())
            .unwrap()
            .into_contents()
    });
    let parsed = crl_der
        .as_ref()
        .map(|d| webpki::OwnedCertRevocationList::from_der(d).unwrap());
    let crls: Vec<webpki::CertRevocationList<'_>> = parsed
        .into_iter()
        .map(webpki::CertRevocationList::from)
        .collect();
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    let revocation = if crl_refs.is_empty() {
        None
    } else {
        Some(
            webpki::RevocationOptionsBuilder::new(&crl_refs)
                .unwrap()
                .with_depth(webpki::RevocationCheckDepth::EndEntity)
                .build(),
        )
    };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

/// The leaf of a chain file, parsed.
pub fn with_leaf<T>(
    chain: &Path,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> T {
    let der = pem_certs(chain).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    f(&cert)
}

/// The common name of the leaf of a chain file.
pub fn common_name(chain: &Path) -> String {
    with_leaf(chain, |c| {
        c.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    })
}
