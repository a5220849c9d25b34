//! `cargo chaos ...`: the same command as `chaos`, as a cargo subcommand
//! (`cargo install --path chaos-cli`). Cargo runs it as `cargo-chaos chaos ...`.
fn main() {
    let args = chaos_cli::cli::cargo_subcommand_args(std::env::args_os().collect());
    std::process::exit(chaos_cli::main_as(args, "cargo chaos"));
}
