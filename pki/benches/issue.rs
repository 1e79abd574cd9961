//! Placeholder until the issuance benchmark lands.
fn main() {}
