//! Which program in which object observes which signal, and where it attaches.
//!
//! Every hook has two programs in its object: a `tp_btf` one (typed arguments, no tracefs)
//! and a classic `tracepoint` twin. The loader attaches the first the kernel accepts, in the
//! order [`Attach`] asks for.

use super::Attach;

/// One `bpf/<object>.bpf.c`, compiled by build.rs and embedded.
pub(crate) struct Family {
    /// The signal it serves (`process`, `oom`, `tcp`, `runq`, `block_io`).
    pub signal: &'static str,
    /// The file stem (`bpf/<object>.bpf.c`).
    pub object: &'static str,
    pub bytes: fn() -> &'static [u8],
    pub hooks: &'static [Hook],
    pub output: Output,
}

/// How a family reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Records in the `events` ring buffer.
    Events,
    /// Histograms in `hist`/`hist_epoch`, reported as observations of this kind.
    Histogram(&'static str),
}

/// One kernel hook and its two programs.
pub(crate) struct Hook {
    /// Tracepoint category and name (`sched`, `sched_switch`); the tp_btf name is the same.
    pub category: &'static str,
    pub name: &'static str,
    /// The `tp_btf/<name>` program.
    pub btf_prog: &'static str,
    /// The `tracepoint/<category>/<name>` program.
    pub tp_prog: &'static str,
    /// Whether the signal is lost without this hook.
    pub required: bool,
}

/// One way to attach a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    TpBtf,
    Tracepoint,
}

impl Hook {
    /// The ways to try, best first.
    pub(crate) fn ways(&self, attach: Attach) -> &'static [Way] {
        match attach {
            Attach::Auto => &[Way::TpBtf, Way::Tracepoint],
            Attach::TpBtf => &[Way::TpBtf],
            Attach::Tracepoint => &[Way::Tracepoint],
        }
    }

    /// `tp_btf/sched_switch` or `tracepoint/sched/sched_switch`.
    pub(crate) fn section(&self, way: Way) -> String {
        match way {
            Way::TpBtf => format!("tp_btf/{}", self.name),
            Way::Tracepoint => format!("tracepoint/{}/{}", self.category, self.name),
        }
    }
}

const fn hook(
    category: &'static str,
    name: &'static str,
    btf_prog: &'static str,
    tp_prog: &'static str,
    required: bool,
) -> Hook {
    Hook {
        category,
        name,
        btf_prog,
        tp_prog,
        required,
    }
}

macro_rules! object {
    ($name:literal) => {{
        fn bytes() -> &'static [u8] {
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name, ".bpf.o"))
        }
        bytes
    }};
}

/// The signals, in the order `signals()` reports them.
pub(crate) const FAMILIES: &[Family] = &[
    Family {
        signal: "process",
        object: "process",
        bytes: object!("process"),
        hooks: &[
            hook("sched", "sched_process_exit", "exit_btf", "exit_tp", true),
            hook("signal", "signal_deliver", "signal_btf", "signal_tp", false),
        ],
        output: Output::Events,
    },
    Family {
        signal: "oom",
        object: "oom",
        bytes: object!("oom"),
        hooks: &[hook("oom", "mark_victim", "oom_btf", "oom_tp", true)],
        output: Output::Events,
    },
    Family {
        signal: "tcp",
        object: "tcp",
        bytes: object!("tcp"),
        hooks: &[
            hook(
                "tcp",
                "tcp_retransmit_skb",
                "retransmit_btf",
                "retransmit_tp",
                true,
            ),
            hook(
                "tcp",
                "tcp_receive_reset",
                "reset_recv_btf",
                "reset_recv_tp",
                true,
            ),
            hook(
                "tcp",
                "tcp_send_reset",
                "reset_sent_btf",
                "reset_sent_tp",
                false,
            ),
            hook("sock", "inet_sock_set_state", "state_btf", "state_tp", true),
        ],
        output: Output::Events,
    },
    Family {
        signal: "runq",
        object: "sched",
        bytes: object!("sched"),
        hooks: &[
            hook("sched", "sched_wakeup", "wakeup_btf", "wakeup_tp", true),
            hook(
                "sched",
                "sched_wakeup_new",
                "wakeup_new_btf",
                "wakeup_new_tp",
                false,
            ),
            hook("sched", "sched_switch", "switch_btf", "switch_tp", true),
        ],
        output: Output::Histogram(crate::observe::kind::RUNQ_DELAY),
    },
    Family {
        signal: "block_io",
        object: "block",
        bytes: object!("block"),
        hooks: &[
            hook("block", "block_rq_issue", "issue_btf", "issue_tp", true),
            hook(
                "block",
                "block_rq_complete",
                "complete_btf",
                "complete_tp",
                true,
            ),
        ],
        output: Output::Histogram(crate::observe::kind::BLOCK_IO_LATENCY),
    },
];

/// The doctor's probe object and its hook.
pub(crate) const PROBE: (fn() -> &'static [u8], Hook) = (
    object!("probe"),
    hook("sched", "sched_process_free", "probe_btf", "probe_tp", true),
);
