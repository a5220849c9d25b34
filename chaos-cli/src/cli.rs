//! The command line, one clap definition for both binaries (`chaos` and `cargo-chaos`):
//! flags and their environment variables side by side, did-you-mean on typos, completions.
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Run the chaos experiment suite with live progress, list it, check the host, rebuild the
/// reports, remove Docker leftovers.
#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    version,
    propagate_version = true,
    after_help = "Works from anywhere inside a Cargo workspace that uses chaos-runtime.\n\
                  As a cargo subcommand: `cargo install --path chaos-cli`, then `cargo chaos <COMMAND>`."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the experiments one test target after the other, with live progress and a summary.
    ///
    /// Experiments are the integration tests that use `#[chaos_test]` or `Experiment::new`,
    /// found through `cargo test --no-run` and each test binary's `--list`. Each target's test
    /// binary then runs as `cargo test` would run it (in its package directory, no second
    /// build). Exits non-zero when any fails.
    Run(RunArgs),
    /// List the experiments, their tests, declared faults and each test's last verdict.
    List(ListArgs),
    /// Rebuild every run's page and the index from the journals; print the index's path.
    Report(ReportArgs),
    /// Probe this host (Docker, cgroups, eBPF, netem, ...) and say which experiments can run.
    ///
    /// Exits non-zero only when an experiment cannot run.
    Doctor(DoctorArgs),
    /// List, and remove, the Docker containers, networks and volumes labelled `chaos.managed`.
    Clean(CleanArgs),
    /// Print a shell completion script (e.g. `chaos completions bash > /etc/bash_completion.d/chaos`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Which packages' integration tests to look at (cargo's own flags).
#[derive(Clone, Debug, Default, Args)]
pub struct Packages {
    /// Look at this package's tests (repeatable); default: what `cargo test` picks here.
    #[arg(short = 'p', long = "package", value_name = "SPEC")]
    pub package: Vec<String>,
    /// Look at every workspace member's tests.
    #[arg(long)]
    pub workspace: bool,
}

impl Packages {
    /// As cargo arguments.
    pub fn cargo_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.workspace {
            v.push("--workspace".to_string());
        }
        for p in &self.package {
            v.push("-p".to_string());
            v.push(p.clone());
        }
        v
    }
}

/// Observer modes (`CHAOS_OBSERVER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Observer {
    /// eBPF when the host allows it, else the fallback.
    Auto,
    /// eBPF only.
    Bpf,
    /// The Docker-events and polling fallback.
    Fallback,
}

impl Observer {
    /// The value the runtime reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Observer::Auto => "auto",
            Observer::Bpf => "bpf",
            Observer::Fallback => "fallback",
        }
    }
}

/// `run`'s arguments.
#[derive(Clone, Debug, Default, Args)]
pub struct RunArgs {
    /// Picks test targets by name (`01`, `partition`); when none matches, the tests whose
    /// name contains it.
    pub filter: Option<String>,
    /// Keep a failed test's containers for inspection.
    #[arg(long, env = "CHAOS_KEEP")]
    pub keep: bool,
    /// Force the observers.
    #[arg(long, value_enum, env = "CHAOS_OBSERVER")]
    pub observer: Option<Observer>,
    /// Stream cargo's and the tests' output as it comes, instead of the live display.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print the results as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Write a JUnit XML report here (failures carry the timeline and the report page).
    #[arg(long, value_name = "FILE", env = "CHAOS_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Packages.
    #[command(flatten)]
    pub packages: Packages,
    /// Passed to the test harness (e.g. `-- --include-ignored`).
    #[arg(last = true, value_name = "TEST_ARGS")]
    pub test_args: Vec<String>,
}

/// `list`'s arguments.
#[derive(Clone, Debug, Default, Args)]
pub struct ListArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also list integration test targets that are not experiments.
    #[arg(long)]
    pub all: bool,
    /// Packages.
    #[command(flatten)]
    pub packages: Packages,
}

/// `report`'s arguments.
#[derive(Clone, Debug, Default, Args)]
pub struct ReportArgs {
    /// Open the index in the browser afterwards (xdg-open / open).
    #[arg(long)]
    pub open: bool,
}

/// `doctor`'s arguments.
#[derive(Clone, Debug, Default, Args)]
pub struct DoctorArgs {
    /// Print the probes as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `clean`'s arguments.
#[derive(Clone, Debug, Default, Args)]
pub struct CleanArgs {
    /// Only list what would be removed.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The arguments `cargo-chaos` was started with, as `chaos` would get them: cargo runs
/// `cargo chaos run` as `cargo-chaos chaos run`, and the extra `chaos` goes.
pub fn cargo_subcommand_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).is_some_and(|a| a == "chaos") {
        args.remove(1);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(v: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chaos").chain(v.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_arguments() {
        let Command::Run(r) = parse(&[
            "run",
            "01",
            "--keep",
            "--observer",
            "fallback",
            "--junit",
            "j.xml",
            "--",
            "--nocapture",
        ])
        .unwrap()
        .command
        else {
            panic!("not run")
        };
        assert_eq!(r.filter.as_deref(), Some("01"));
        assert!(r.keep && !r.verbose && !r.json);
        assert_eq!(r.observer, Some(Observer::Fallback));
        assert_eq!(r.junit, Some(PathBuf::from("j.xml")));
        assert_eq!(r.test_args, ["--nocapture"]);
        assert!(parse(&["run", "--observer", "ebpf2"]).is_err());
        assert!(parse(&["run", "a", "b"]).is_err());
        assert!(parse(&["list", "extra"]).is_err());
        assert!(parse(&["doctor", "--yaml"]).is_err());
    }

    #[test]
    fn typos_get_a_suggestion() {
        let e = parse(&["lsit"]).unwrap_err().to_string();
        assert!(e.contains("similar") && e.contains("list"), "{e}");
        let e = parse(&["run", "--kep"]).unwrap_err().to_string();
        assert!(e.contains("--keep"), "{e}");
    }

    #[test]
    fn cargo_passes_the_subcommand_name_first() {
        let a = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            cargo_subcommand_args(a(&["cargo-chaos", "chaos", "run"])),
            a(&["cargo-chaos", "run"])
        );
        assert_eq!(
            cargo_subcommand_args(a(&["cargo-chaos", "list"])),
            a(&["cargo-chaos", "list"])
        );
    }
}
