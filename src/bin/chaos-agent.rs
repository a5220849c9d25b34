//! The host agent, built beside the suite so the runtime can copy it into its container: the
//! agent crate's server with the runtime's eBPF observers.
fn main() {
    chaos_runtime::agent_main();
}
