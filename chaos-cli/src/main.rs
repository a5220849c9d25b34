//! `chaos`: the suite's command (`cargo run -p chaos-cli -- run`). See `chaos --help`.
fn main() {
    std::process::exit(chaos_cli::main(std::env::args_os().collect()));
}
