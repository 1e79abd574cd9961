//! The agent's use of glibc's allocator: one arena, and free pages handed back after bursts.
//!
//! The agent's own heap is small (a few hundred KiB), but glibc gives every thread that
//! allocates an arena of its own (the sensor thread, tokio's DNS thread), and keeps pages freed
//! by start-up (configuration, certificate parsing, the TLS handshake) and by a drained backlog
//! resident until something asks for them back. A daemon that wakes every ten seconds on a
//! 512 MB board has no use for either: [`one_arena`] before any thread starts, [`give_back`]
//! once connected and after each drain. Both are no-ops on other C libraries.

/// Makes every thread allocate from the main arena (glibc's `M_ARENA_MAX`).
#[allow(unsafe_code)]
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the agent starts threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the heap's free pages to the system (glibc's `malloc_trim`).
#[allow(unsafe_code)]
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own lock and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
