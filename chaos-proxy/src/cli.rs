//! Command line and environment of the `chaos-proxy` binary.

use crate::model::NewProxy;
use crate::server::ServerConfig;

/// Default API address: Toxiproxy's port, on all interfaces (inside a container).
pub const DEFAULT_API: &str = "0.0.0.0:8474";

/// Usage text of the binary.
pub const USAGE: &str = "\
chaos-proxy: TCP fault proxy with a Toxiproxy-compatible HTTP API

USAGE:
    chaos-proxy [--api ADDR] [--proxy NAME=LISTEN=UPSTREAM]... [--config FILE]
    chaos-proxy reap (--owner ID | --shared [--linger SECS]) [--listen ADDR] [--socket PATH]

OPTIONS:
    --api ADDR            API listen address [env CHAOS_PROXY_API, default 0.0.0.0:8474]
    --proxy SPEC          a proxy NAME=LISTEN=UPSTREAM, e.g. postgres=0.0.0.0:15432=postgres:5432;
                          repeatable [env CHAOS_PROXY_PROXIES: specs separated by ',' or spaces]
    --config FILE         JSON array of proxies as Toxiproxy's -config / POST /populate
                          [env CHAOS_PROXY_CONFIG]
    -h, --help            this text
    -V, --version         version

Prints `chaos-proxy ready` on stdout once the API and every listener are bound.

`reap` is the reaper a test process starts: it holds one connection on ADDR [default
0.0.0.0:7070] and, once that connection ends, removes every container, network and volume
labelled chaos.owner=ID through the Docker socket PATH [default /var/run/docker.sock].
With --shared it is the reaper of a whole suite (`chaos run`): every process that connects
names its owner ID in a first line `owner ID`, and its resources go when its connection ends;
it exits once no connection has been left for SECS [default 0] (a `cargo nextest` run's
reaper lingers, for the run's next test process).
";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Serve.
    Run(ServerConfig),
    /// Print [`USAGE`].
    Help,
    /// Print the version.
    Version,
    /// Be a test process's reaper, or a suite's (see [`crate::reaper`]).
    Reap {
        /// The owner identity whose resources are removed; `None` (`--shared`): each
        /// connection names its own.
        owner: Option<String>,
        /// Where the test process connects.
        listen: String,
        /// The Docker socket.
        socket: String,
        /// How long a shared reaper stays once no connection is left.
        linger: std::time::Duration,
    },
}

fn parse_reap(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let (mut owner, mut shared, mut listen, mut socket, mut linger) = (
        None,
        false,
        "0.0.0.0:7070".to_string(),
        "/var/run/docker.sock".to_string(),
        None,
    );
    let mut args = args;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--owner" => owner = Some(value()?),
            "--shared" => shared = true,
            "--listen" => listen = value()?,
            "--socket" => socket = value()?,
            "--linger" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--linger takes whole seconds, not {v:?}"))?;
                linger = Some(std::time::Duration::from_secs(secs));
            }
            other => return Err(format!("unknown argument {other:?} of reap\n\n{USAGE}")),
        }
    }
    let owner = match (owner.filter(|o| !o.is_empty()), shared) {
        (Some(_), true) => return Err("reap takes --owner ID or --shared, not both".into()),
        (None, false) => return Err("reap needs --owner ID (or --shared)".into()),
        (owner, _) => owner,
    };
    if owner.is_some() && linger.is_some() {
        return Err("--linger is for a shared reaper (--shared)".into());
    }
    Ok(Command::Reap {
        owner,
        listen,
        socket,
        linger: linger.unwrap_or_default(),
    })
}

/// Parses `NAME=LISTEN=UPSTREAM`.
pub fn parse_proxy_spec(spec: &str) -> Result<NewProxy, String> {
    let parts: Vec<&str> = spec.split('=').collect();
    match parts.as_slice() {
        [name, listen, upstream]
            if !name.is_empty() && !listen.is_empty() && !upstream.is_empty() =>
        {
            Ok(NewProxy::new(*name, *listen, *upstream))
        }
        _ => Err(format!(
            "bad proxy spec {spec:?}: expected NAME=LISTEN=UPSTREAM, e.g. postgres=0.0.0.0:15432=postgres:5432"
        )),
    }
}

/// Parses the arguments (without the program name); `env` looks up variables.
pub fn parse_args(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut api = env("CHAOS_PROXY_API").filter(|s| !s.is_empty());
    let mut config_file = env("CHAOS_PROXY_CONFIG").filter(|s| !s.is_empty());
    let mut proxies = Vec::new();
    if let Some(list) = env("CHAOS_PROXY_PROXIES") {
        for spec in list.split([',', ' ', '\n', '\t']).filter(|s| !s.is_empty()) {
            proxies.push(parse_proxy_spec(spec)?);
        }
    }
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "reap") {
        args.next();
        return parse_reap(args);
    }
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--api" => api = Some(value("--api")?),
            "--proxy" => proxies.push(parse_proxy_spec(&value("--proxy")?)?),
            "--config" => config_file = Some(value("--config")?),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if let Some(path) = config_file {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("--config {path}: {e}"))?;
        let mut from_file: Vec<NewProxy> =
            serde_json::from_str(&text).map_err(|e| format!("--config {path}: {e}"))?;
        from_file.append(&mut proxies);
        proxies = from_file;
    }
    Ok(Command::Run(ServerConfig {
        api: api.unwrap_or_else(|| DEFAULT_API.to_owned()),
        proxies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags_and_env() {
        let cmd = parse_args(
            args(&[
                "--api",
                "127.0.0.1:9000",
                "--proxy",
                "postgres=0.0.0.0:15432=postgres:5432",
                "--proxy=redis=0.0.0.0:16379=redis:6379",
            ]),
            |k| (k == "CHAOS_PROXY_PROXIES").then(|| "a=127.0.0.1:1=b:2".to_owned()),
        )
        .unwrap();
        let Command::Run(cfg) = cmd else { panic!() };
        assert_eq!(cfg.api, "127.0.0.1:9000");
        let names: Vec<_> = cfg.proxies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "postgres", "redis"]);
        assert_eq!(cfg.proxies[2].listen, "0.0.0.0:16379");
        assert_eq!(cfg.proxies[2].upstream, "redis:6379");
        assert!(cfg.proxies[2].enabled);
    }

    #[test]
    fn defaults_and_errors() {
        let Command::Run(cfg) = parse_args(args(&[]), |_| None).unwrap() else {
            panic!()
        };
        assert_eq!(cfg.api, DEFAULT_API);
        assert!(cfg.proxies.is_empty());
        assert_eq!(parse_args(args(&["-h"]), |_| None).unwrap(), Command::Help);
        assert!(parse_args(args(&["--proxy", "x=1"]), |_| None).is_err());
        assert!(parse_args(args(&["--api"]), |_| None).is_err());
        assert!(parse_args(args(&["--bogus"]), |_| None).is_err());
        assert_eq!(
            parse_args(args(&["reap", "--owner", "b/1/2/3"]), |_| None).unwrap(),
            Command::Reap {
                owner: Some("b/1/2/3".into()),
                listen: "0.0.0.0:7070".into(),
                socket: "/var/run/docker.sock".into(),
                linger: std::time::Duration::ZERO,
            }
        );
        assert_eq!(
            parse_args(args(&["reap", "--shared"]), |_| None).unwrap(),
            Command::Reap {
                owner: None,
                listen: "0.0.0.0:7070".into(),
                socket: "/var/run/docker.sock".into(),
                linger: std::time::Duration::ZERO,
            }
        );
        assert_eq!(
            parse_args(args(&["reap", "--shared", "--linger", "10"]), |_| None).unwrap(),
            Command::Reap {
                owner: None,
                listen: "0.0.0.0:7070".into(),
                socket: "/var/run/docker.sock".into(),
                linger: std::time::Duration::from_secs(10),
            }
        );
        assert!(parse_args(args(&["reap", "--shared", "--linger", "1.5"]), |_| None).is_err());
        assert!(
            parse_args(
                args(&["reap", "--owner", "b/1/2/3", "--linger", "1"]),
                |_| None
            )
            .is_err()
        );
        assert!(parse_args(args(&["reap"]), |_| None).is_err());
        assert!(parse_args(args(&["reap", "--shared", "--owner", "b/1/2/3"]), |_| None).is_err());
    }
}
