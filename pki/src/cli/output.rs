//! Small formatting helpers shared by the commands.

use time::OffsetDateTime;

/// Whole days from now until `t` (negative once past).
pub fn days_left(t: OffsetDateTime) -> i64 {
    (t - OffsetDateTime::now_utc()).whole_days()
}

/// Days left until an RFC 3339 date, or `None` if it does not parse.
pub fn days_left_rfc3339(s: &str) -> Option<i64> {
    crate::profile::parse_rfc3339(s).map(days_left)
}

/// Writes command output to stdout; a reader that went away (`autoprov list | head`) ends the
/// output quietly instead of a panic. The command's work is done whether or not anyone reads.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `println!` for command output, through [`emit`]: `autoprov revoke … | head -1` must not panic
/// after the revocation has been made.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// `print!` for command output, through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!($($arg)*))
    };
}
pub(crate) use out;
