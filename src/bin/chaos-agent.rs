//! The host agent, built beside the suite so the runtime can copy it into its container.
fn main() {
    chaos_agent::main();
}
