//! The `chaos` command.
fn main() {}
