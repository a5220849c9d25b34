//! The fault proxy, built beside the suite so the runtime can mount it into its container.
fn main() {
    chaos_proxy::main();
}
