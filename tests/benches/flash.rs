//! Placeholder until the flash benchmark lands.
fn main() {}
