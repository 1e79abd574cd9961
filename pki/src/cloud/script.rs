//! The `setup.sh` scripts: bash that an operator can read before running it.
//!
//! Each script starts with what it does and what it needs, stops at the first failing command
//! (`set -euo pipefail`), runs from its own directory so that `file://` arguments resolve, and
//! numbers its steps in the order the cloud needs them. Every value that came from the operator
//! is quoted with [`quote`], so a name can never become shell syntax.

use std::fmt::Write;

/// Quotes `s` for bash: as is when it is made only of characters the shell never interprets,
/// in single quotes otherwise.
pub fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@+,%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A script under construction.
#[derive(Debug)]
pub struct Script {
    text: String,
    step: u32,
}

impl Script {
    /// A script whose header comment is `header` (one comment line per line).
    pub fn new(header: &str) -> Self {
        let mut text = String::from("#!/usr/bin/env bash\n");
        for line in header.lines() {
            if line.is_empty() {
                text.push_str("#\n");
            } else {
                let _ = writeln!(text, "# {line}");
            }
        }
        text.push_str("set -euo pipefail\ncd \"$(dirname \"$0\")\"\n");
        Script { text, step: 0 }
    }

    /// Starts the next numbered step; `title` is echoed when the script runs.
    pub fn step(&mut self, title: &str) -> &mut Self {
        self.step += 1;
        let _ = write!(
            self.text,
            "\n# {n}. {title}\necho {q}\n",
            n = self.step,
            q = quote(&format!("== {}. {title}", self.step))
        );
        self
    }

    /// A comment line.
    pub fn comment(&mut self, line: &str) -> &mut Self {
        let _ = writeln!(self.text, "# {line}");
        self
    }

    /// A line of bash, as is.
    pub fn line(&mut self, line: &str) -> &mut Self {
        self.text.push_str(line);
        self.text.push('\n');
        self
    }

    /// The finished script.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_names_and_neutralises_shell_syntax() {
        assert_eq!(quote("my-dps"), "my-dps");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
