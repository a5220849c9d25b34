//! The host agent of the chaos test framework.
//!
//! A fault sometimes has to act on the Docker engine's host rather than through the Docker API:
//! run `iptables`, `nft` or `tc` inside a target's network namespace, or read and write the
//! host's cgroup files. The test process need not be on that host (a CI job container with
//! only the Docker socket, a remote `DOCKER_HOST`, Docker Desktop's VM), nor be root. So the
//! runtime starts this agent in a privileged container on the engine (`--pid=host`, host
//! cgroup namespace), and talks to it over the container's attached standard streams: the
//! one stream the Docker API gives wherever the engine is.
//!
//! The protocol is one JSON object per line each way: a [`Request`] with an id, answered by a
//! [`Response`] with the same id. Requests are served concurrently, so a slow command (an
//! `iptables` waiting for the xtables lock) does not hold up the others.
//!
//! Paths in [`Op::Read`], [`Op::ReadDir`] and [`Op::Write`] are the host's: the agent resolves
//! them under `/proc/1/root`, the root of the host's first process, which it sees with
//! `--pid=host` (or under its parent's, the container runtime's shim, when the host hides its
//! pid 1). `/proc/<pid>/...` is read as it is (the agent shares the host's pids) and
//! `/proc/self/...` means that first process: `/proc/self/mountinfo` is the host's mount table.
//!
//! The eBPF observers ([`Op::BpfLoad`] and the other `Bpf*` operations) live in the runtime,
//! which hands them to [`main_with`]; the suite's `chaos-agent` binary is
//! `chaos_runtime::agent_main`. An agent of this crate alone serves everything else:
//!
//! ```no_run
//! chaos_agent::main();
//! ```
use serde::{Deserialize, Serialize};

pub mod dns;
mod qdisc;
mod server;

/// Runs a command inside a network namespace; the agent's `netns_run`, for callers that hold
/// the namespace themselves.
#[cfg(target_os = "linux")]
pub use server::netns::run_in;
pub use server::{host_pid, main, main_with, main_with_args, pid_ns};

/// The protocol's version: the runtime refuses an agent that answers [`Op::Hello`] with another.
pub const PROTOCOL: u32 = 5;

/// A request: what to do, and the id its [`Response`] carries back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client; answered with the same.
    pub id: u64,
    /// The operation.
    pub op: Op,
}

/// An operation on the engine's host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    /// The agent's protocol version and kernel: answered with [`Reply::Hello`].
    Hello,
    /// Opens the network namespace of host pid `pid` and holds it until [`Op::NetnsClose`]: a
    /// heal runs in the namespace the injection ran in, even if the pid was recycled. Refused
    /// when it is the host's own namespace. Answered with [`Reply::Handle`].
    NetnsOpen {
        /// A pid in the engine host's pid namespace (`State.Pid` of a container).
        pid: u32,
    },
    /// Runs `argv` (a binary of the agent's image and its arguments) inside a held namespace,
    /// with `stdin` as its input; answered with [`Reply::Ran`]. Bounded to 10 s.
    NetnsRun {
        /// From [`Reply::Handle`].
        handle: u64,
        /// The command.
        argv: Vec<String>,
        /// Its standard input, if any.
        stdin: Option<String>,
    },
    /// Lets go of a held namespace; answered with [`Reply::Done`].
    NetnsClose {
        /// From [`Reply::Handle`].
        handle: u64,
    },
    /// Starts a stream of UDP datagrams (to the discard port of each flow's `to`), each flow
    /// from a socket made inside a held namespace, `rate` a second per flow; answered with
    /// [`Reply::Handle`]. Measures realised packet loss whatever the workload's TCP does.
    UdpStart {
        /// The flows.
        flows: Vec<UdpFlow>,
        /// Datagrams a second, per flow.
        rate: u64,
    },
    /// Stops a [`Op::UdpStart`] stream; answered with [`Reply::Count`] (datagrams sent).
    UdpStop {
        /// From [`Reply::Handle`].
        handle: u64,
    },
    /// A bulk transfer for `millis` over `streams` TCP connections from a socket in namespace
    /// `from` to a listener made in namespace `to` at `to_ip`; answered with
    /// [`Reply::Samples`]: the bytes received so far every 50 ms and, when `count` names a
    /// qdisc, the bytes it had sent at the same instants.
    Transfer {
        /// The sending namespace's handle.
        from: u64,
        /// The receiving namespace's handle.
        to: u64,
        /// The receiver's address (on the stack network).
        to_ip: String,
        /// Parallel connections.
        streams: u32,
        /// How long to send.
        millis: u64,
        /// A held namespace's handle, one of its devices and the kind of a qdisc on it (say
        /// the limit being measured: `tbf`) whose sent bytes to sample with the receivers'
        /// (read over rtnetlink, so both counts share one instant).
        #[serde(default)]
        count: Option<(u64, String, String)>,
        /// Paces the connections to this many bytes a second together, split evenly
        /// (`SO_MAX_PACING_RATE`; 0: unpaced), so a limit a little below it stays busy
        /// without its queue overflowing.
        #[serde(default)]
        pace: u64,
    },
    /// Asks the DNS server `server` (`ip:port`) for `name`'s IPv4 addresses from a socket made
    /// inside a held namespace (Docker's embedded DNS at 127.0.0.11 answers only there);
    /// answered with [`Reply::Names`] (the addresses), or an error when no answer came within
    /// `timeout_ms` or the server refused the name.
    DnsQuery {
        /// The namespace's handle.
        handle: u64,
        /// `ip:port` of the server.
        server: String,
        /// The name asked for.
        name: String,
        /// How long to wait for the answer.
        timeout_ms: u64,
    },
    /// Sends signal `signal` to host pid `pid`, only if that process belongs to container
    /// `container` (its `/proc/<pid>/cgroup` names the id): a recycled pid is never signalled.
    /// Answered with [`Reply::Done`].
    Signal {
        /// A pid in the engine host's pid namespace.
        pid: u32,
        /// The signal's number (`9` SIGKILL, `19` SIGSTOP, `18` SIGCONT on Linux).
        signal: i32,
        /// The full id of the container it must belong to.
        container: String,
    },
    /// Creates `path` (it must not exist) and writes zeros into it until its filesystem is
    /// full (ENOSPC), at most `max_bytes`; answered with [`Reply::Count`] (bytes written).
    /// The path is resolved like [`Op::Write`]'s: a container's file is
    /// `/proc/<pid>/root/...`.
    Fill {
        /// The file to create.
        path: String,
        /// A bound, so a filesystem without a limit is not filled for ever.
        max_bytes: u64,
    },
    /// Removes a file made by [`Op::Fill`]; answered with [`Reply::Done`].
    Remove {
        /// The file.
        path: String,
    },
    /// Reads a host file; answered with [`Reply::Text`].
    Read {
        /// An absolute path on the engine's host.
        path: String,
    },
    /// Lists a host directory's entry names; answered with [`Reply::Names`].
    ReadDir {
        /// An absolute path on the engine's host.
        path: String,
    },
    /// Opens the host's kernel log (`/dev/kmsg`) at its end; answered with [`Reply::Handle`].
    KmsgOpen,
    /// The kernel log records logged since the last read of a held `/dev/kmsg` (at most 256);
    /// answered with [`Reply::Names`], one record each.
    KmsgRead {
        /// From [`Reply::Handle`].
        handle: u64,
    },
    /// Writes `data` to a host file (a cgroup control file: one `write(2)`); answered with
    /// [`Reply::Done`].
    Write {
        /// An absolute path on the engine's host.
        path: String,
        /// What to write.
        data: String,
    },
    /// Loads the run's eBPF observers into the engine's kernel and starts reading them;
    /// answered with [`Reply::Bpf`]. Served only by an agent built with observers (the suite's
    /// `chaos-agent` binary is `chaos_runtime::agent_main`, which passes them to
    /// [`main_with`]); this crate alone answers with an error saying so.
    BpfLoad {
        /// `auto`, `tp_btf` or `tracepoint` (`CHAOS_BPF_ATTACH` of the test process).
        attach: String,
    },
    /// Attributes what the loaded programs see in host pid `pid`'s pid and network namespaces
    /// to `role` (again after every restart); answered with [`Reply::Done`].
    BpfWatch {
        /// The role in the stack.
        role: String,
        /// `State.Pid` of its container; 0 when it is not running.
        pid: u32,
    },
    /// What the observers saw since the last take; answered with [`Reply::Observed`].
    BpfTake,
    /// Flushes the histograms, detaches the programs and hands back the rest; answered with
    /// [`Reply::Observed`].
    BpfStop,
}

/// One flow of [`Op::UdpStart`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UdpFlow {
    /// The namespace the socket is made in.
    pub handle: u64,
    /// `ip:port` it sends to.
    pub to: String,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// What happened: `Err` holds why it could not be done, in words for the user.
    pub result: Result<Reply, String>,
}

/// A successful answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "reply")]
pub enum Reply {
    /// To [`Op::Hello`].
    Hello {
        /// [`PROTOCOL`] of the agent.
        protocol: u32,
        /// The host's kernel release.
        kernel: String,
        /// The inode of the agent's pid namespace (the engine host's): a client in the same one
        /// can also open the namespaces itself, one in another must not trust its own `/proc`.
        pid_ns: u64,
    },
    /// To [`Op::NetnsOpen`].
    Handle {
        /// Names the held namespace in later requests.
        handle: u64,
    },
    /// To [`Op::NetnsRun`]: the command's exit and output.
    Ran {
        /// Exit status 0.
        ok: bool,
        /// Its standard output.
        stdout: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// To [`Op::Read`].
    Text {
        /// The file's content.
        text: String,
    },
    /// To [`Op::ReadDir`] and [`Op::KmsgRead`].
    Names {
        /// Entry names or records.
        names: Vec<String>,
    },
    /// To [`Op::UdpStop`] and [`Op::Fill`].
    Count {
        /// How many.
        n: u64,
    },
    /// To [`Op::Transfer`]: (milliseconds since its start, bytes received by then).
    Samples {
        /// In time order.
        samples: Vec<(u64, u64)>,
        /// The bytes the `count` qdisc had sent at each sample's instant (empty without
        /// `count`).
        #[serde(default)]
        sent: Vec<u64>,
    },
    /// To [`Op::NetnsClose`], [`Op::Write`] and [`Op::BpfWatch`].
    Done,
    /// To [`Op::BpfLoad`].
    Bpf {
        /// Per signal (`process`, `oom`, `tcp`, `runq`, `block_io`): `None` when its programs
        /// attached, else why not.
        signals: Vec<(String, Option<String>)>,
        /// What attached where, one line per hook (`runq: tp_btf/sched_switch`).
        attached: Vec<String>,
        /// How long loading and attaching took, in microseconds.
        load_us: u64,
        /// The agent's CLOCK_MONOTONIC when it answered, in ns: a client on another kernel
        /// shifts the observations' times by the difference to its own clock.
        mono_ns: u64,
    },
    /// To [`Op::BpfTake`] and [`Op::BpfStop`].
    Observed {
        /// One observation each, as JSON (the runtime's `Observation`).
        observations: Vec<String>,
        /// Records dropped in the kernel since loading because a ring buffer was full.
        lost: u64,
    },
}

/// Serves the operations this crate does not implement itself ([`Op::BpfLoad`] and the other
/// `Bpf*` operations): given to [`main_with`] by a binary that links the observers.
pub type Extension = fn(Op) -> Result<Reply, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_one_json_line_each() {
        let r = Request {
            id: 7,
            op: Op::NetnsRun {
                handle: 1,
                argv: vec!["iptables".into(), "-S".into()],
                stdin: None,
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        let a = Response {
            id: 7,
            result: Err("no such\nnamespace".into()),
        };
        let line = serde_json::to_string(&a).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), a);
    }
}
