//! Where the CA passphrase comes from: `AUTOPROV_CA_PASSPHRASE`, else a prompt on the terminal
//! without echo. Without either, commands that must sign fail with a message saying so.

use std::io::IsTerminal;
use std::path::Path;

use crate::keys::KeyError;
use crate::{Error, Passphrase};

/// The environment variable holding the passphrase for unattended use.
pub const ENV: &str = "AUTOPROV_CA_PASSPHRASE";

/// Gets the passphrase for the CA in `dir`; with `confirm` (a new CA) it is asked twice.
pub fn get(dir: &Path, confirm: bool) -> Result<Passphrase, Error> {
    if let Ok(p) = std::env::var(ENV) {
        if p.is_empty() {
            return Err(Error::Invalid(format!("{ENV} is set but empty")));
        }
        return Ok(Passphrase::new(p));
    }
    // Never block on a prompt nobody can answer (CI, cron, a pipe).
    if !std::io::stdin().is_terminal() {
        return Err(KeyError::PassphraseRequired.into());
    }
    let prompt = format!("Passphrase for the CA keys in {}: ", dir.display());
    let first = zeroize::Zeroizing::new(
        rpassword::prompt_password(&prompt).map_err(|_| KeyError::PassphraseRequired)?,
    );
    if first.is_empty() {
        return Err(Error::Invalid("the passphrase must not be empty".into()));
    }
    if confirm {
        let again = zeroize::Zeroizing::new(
            rpassword::prompt_password("Again, to confirm: ")
                .map_err(|_| KeyError::PassphraseRequired)?,
        );
        if *again != *first {
            return Err(Error::Invalid(
                "the two passphrases differ; nothing was created".into(),
            ));
        }
    }
    Ok(Passphrase::new(first.as_str()))
}
