//! The fixture's order service, built beside the suite so the runtime can mount it into its container.
fn main() {
    order_service::main();
}
