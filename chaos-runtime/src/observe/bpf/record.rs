//! What the eBPF programs hand to user space, and how it becomes [`Observation`]s.
//!
//! Pure code: bytes in, observations out. The layouts mirror `bpf/chaos.h`
//! (`struct chaos_event`, `struct chaos_hist`), which asserts the same sizes and offsets.

use crate::observe::{Observation, Source, kind};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// `enum chaos_event_kind` in `bpf/chaos.h`.
pub(crate) mod ev {
    pub const EXIT: u32 = 1;
    pub const SIGNAL: u32 = 2;
    pub const OOM: u32 = 3;
    pub const TCP_RETRANSMIT: u32 = 4;
    pub const TCP_RESET_RECEIVED: u32 = 5;
    pub const TCP_RESET_SENT: u32 = 6;
    pub const TCP_STATE: u32 = 7;
}

/// `CHAOS_F_*` in `bpf/chaos.h`: which fields of a record are set.
pub(crate) mod flag {
    pub const COMM: u16 = 1;
    pub const PID: u16 = 2;
    pub const ADDR: u16 = 4;
    pub const NS_PID: u16 = 8;
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Number of log2 buckets (`CHAOS_HIST_BUCKETS`).
pub(crate) const HIST_BUCKETS: usize = 32;
/// Containers watched at once (`CHAOS_MAX_SLOTS`).
pub(crate) const MAX_SLOTS: u32 = 64;

/// `struct chaos_event`: one ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawEvent {
    pub ts_ns: u64,
    pub kind: u32,
    pub slot: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ns_pid: u32,
    pub exit_code: i32,
    pub sig: i32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub flags: u16,
    pub old_state: i32,
    pub new_state: i32,
    pub comm: [u8; 16],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

const _: () = assert!(size_of::<RawEvent>() == 104);
const _: () = assert!(std::mem::offset_of!(RawEvent, comm) == 52);
const _: () = assert!(std::mem::offset_of!(RawEvent, daddr) == 84);

impl RawEvent {
    /// Reads a record; `None` when it is shorter than a `struct chaos_event`.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, the read is unaligned, and every bit pattern is
        // a valid RawEvent (integers and byte arrays only).
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// `struct chaos_hist`: one container's histogram on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawHist {
    /// Bucket 0 is [0, 2) us, bucket i is [2^i, 2^(i+1)) us.
    pub buckets: [u64; HIST_BUCKETS],
    pub count: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
}

const _: () = assert!(size_of::<RawHist>() == (HIST_BUCKETS + 3) * 8);

impl Default for RawHist {
    fn default() -> Self {
        Self {
            buckets: [0; HIST_BUCKETS],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

// SAFETY: repr(C), integers only, no padding; any bit pattern is valid.
unsafe impl aya::Pod for RawHist {}

impl RawHist {
    /// Adds another CPU's (or interval's) counts.
    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Upper bound of the bucket holding the `q`-quantile, in us, capped at the exact maximum.
    fn quantile_us(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        let max_us = self.max_ns.div_ceil(1000);
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (1u64 << (i + 1)).min(max_us);
            }
        }
        max_us
    }

    /// Detail of a RUNQ_DELAY / BLOCK_IO_LATENCY observation: `p50_us`, `p99_us`, `max_us`,
    /// `samples`, `mean_us`. Percentiles are the upper bound of their log2 bucket (capped at the
    /// exact maximum). `None` when there were no samples.
    pub(crate) fn summary(&self) -> Option<BTreeMap<String, String>> {
        if self.count == 0 {
            return None;
        }
        let mut d = BTreeMap::new();
        d.insert("samples".into(), self.count.to_string());
        d.insert("p50_us".into(), self.quantile_us(0.50).to_string());
        d.insert("p99_us".into(), self.quantile_us(0.99).to_string());
        d.insert("max_us".into(), self.max_ns.div_ceil(1000).to_string());
        d.insert(
            "mean_us".into(),
            (self.sum_ns / self.count / 1000).to_string(),
        );
        Some(d)
    }
}

/// A histogram as an observation of `kind` for `role`, stamped `at_ns`; `None` without samples.
pub(crate) fn hist_observation(
    h: &RawHist,
    kind: &str,
    role: &str,
    at_ns: u64,
) -> Option<Observation> {
    Some(Observation {
        at_ns,
        kind: kind.into(),
        source: Source::Bpf,
        container: Some(role.into()),
        detail: h.summary()?,
    })
}

/// `comm` up to its first NUL.
fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn addr(family: u16, raw: &[u8; 16]) -> String {
    match family {
        AF_INET => Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string(),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*raw);
            v6.to_ipv4_mapped()
                .map_or_else(|| v6.to_string(), |v4| v4.to_string())
        }
        other => format!("family {other}"),
    }
}

/// The name of a kernel TCP state (`include/net/tcp_states.h`).
pub(crate) fn tcp_state(state: i32) -> String {
    let name = match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        other => return other.to_string(),
    };
    name.into()
}

/// Turns a record into an observation attributed to `role`; `None` for an unknown kind.
pub(crate) fn observation(raw: &RawEvent, role: &str) -> Option<Observation> {
    let mut d = BTreeMap::new();
    let has = |f: u16| raw.flags & f != 0;
    if has(flag::PID) {
        d.insert("pid".into(), raw.pid.to_string());
        d.insert("tgid".into(), raw.tgid.to_string());
    }
    if has(flag::NS_PID) && raw.ns_pid != 0 {
        d.insert("ns_pid".into(), raw.ns_pid.to_string());
    }
    if has(flag::COMM) {
        d.insert("comm".into(), comm(&raw.comm));
    }
    if has(flag::ADDR) {
        d.insert("saddr".into(), addr(raw.family, &raw.saddr));
        d.insert("daddr".into(), addr(raw.family, &raw.daddr));
        d.insert("sport".into(), raw.sport.to_string());
        d.insert("dport".into(), raw.dport.to_string());
    }
    let kind = match raw.kind {
        ev::EXIT => {
            // task->exit_code: (status << 8) | terminating signal, 0x80 = core dumped.
            let sig = raw.exit_code & 0x7f;
            if sig != 0 {
                d.insert("signal".into(), sig.to_string());
                if raw.exit_code & 0x80 != 0 {
                    d.insert("core_dumped".into(), "true".into());
                }
            } else {
                d.insert(
                    "exit_code".into(),
                    ((raw.exit_code >> 8) & 0xff).to_string(),
                );
            }
            kind::PROCESS_EXIT
        }
        ev::SIGNAL => {
            d.insert("signal".into(), raw.sig.to_string());
            kind::SIGNAL
        }
        ev::OOM => kind::OOM_KILL,
        ev::TCP_RETRANSMIT => {
            d.insert("state".into(), tcp_state(raw.new_state));
            kind::TCP_RETRANSMIT
        }
        ev::TCP_RESET_RECEIVED | ev::TCP_RESET_SENT => {
            let dir = if raw.kind == ev::TCP_RESET_SENT {
                "sent"
            } else {
                "received"
            };
            d.insert("direction".into(), dir.into());
            if raw.new_state != 0 {
                d.insert("state".into(), tcp_state(raw.new_state));
            }
            kind::TCP_RESET
        }
        ev::TCP_STATE => {
            d.insert("old_state".into(), tcp_state(raw.old_state));
            d.insert("new_state".into(), tcp_state(raw.new_state));
            kind::TCP_STATE
        }
        _ => return None,
    };
    Some(Observation {
        at_ns: raw.ts_ns,
        kind: kind.into(),
        source: Source::Bpf,
        container: Some(role.into()),
        detail: d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds record bytes field by field at the offsets of `struct chaos_event`, so a layout
    /// mismatch between C and Rust fails here rather than in the kernel.
    fn record(fill: impl FnOnce(&mut [u8; 104])) -> Vec<u8> {
        let mut b = [0u8; 104];
        fill(&mut b);
        b.to_vec()
    }

    fn put<const N: usize>(b: &mut [u8], at: usize, v: [u8; N]) {
        b[at..at + N].copy_from_slice(&v);
    }

    fn detail<'a>(o: &'a Observation, k: &str) -> Option<&'a str> {
        o.detail.get(k).map(String::as_str)
    }

    #[test]
    fn a_process_killed_by_sigkill_decodes_to_process_exit_with_signal_9() {
        let bytes = record(|b| {
            put(b, 0, 123_456_789u64.to_ne_bytes());
            put(b, 8, ev::EXIT.to_ne_bytes());
            put(b, 12, 3u32.to_ne_bytes());
            put(b, 16, 4242u32.to_ne_bytes());
            put(b, 20, 4242u32.to_ne_bytes());
            put(b, 24, 7u32.to_ne_bytes());
            put(b, 28, 9i32.to_ne_bytes());
            put(b, 42, (flag::PID | flag::COMM | flag::NS_PID).to_ne_bytes());
            b[52..52 + 6].copy_from_slice(b"victim");
        });
        let raw = RawEvent::parse(&bytes).unwrap();
        assert_eq!(raw.slot, 3);
        let o = observation(&raw, "postgres").unwrap();
        assert_eq!(o.kind, kind::PROCESS_EXIT);
        assert_eq!(o.at_ns, 123_456_789);
        assert_eq!(o.source, Source::Bpf);
        assert_eq!(o.container.as_deref(), Some("postgres"));
        assert_eq!(detail(&o, "signal"), Some("9"));
        assert_eq!(detail(&o, "exit_code"), None);
        assert_eq!(detail(&o, "pid"), Some("4242"));
        assert_eq!(detail(&o, "ns_pid"), Some("7"));
        assert_eq!(detail(&o, "comm"), Some("victim"));
    }

    #[test]
    fn a_normal_exit_reports_the_status_not_a_signal() {
        let raw = RawEvent {
            kind: ev::EXIT,
            exit_code: 3 << 8,
            flags: flag::PID,
            ..Default::default()
        };
        let o = observation(&raw, "orders").unwrap();
        assert_eq!(detail(&o, "exit_code"), Some("3"));
        assert_eq!(detail(&o, "signal"), None);
        assert_eq!(detail(&o, "comm"), None, "comm flag not set");
    }

    #[test]
    fn a_core_dump_is_flagged() {
        let raw = RawEvent {
            kind: ev::EXIT,
            exit_code: 0x80 | 11,
            ..Default::default()
        };
        let o = observation(&raw, "orders").unwrap();
        assert_eq!(detail(&o, "signal"), Some("11"));
        assert_eq!(detail(&o, "core_dumped"), Some("true"));
    }

    #[test]
    fn a_tcp_state_change_decodes_addresses_ports_and_state_names() {
        let bytes = record(|b| {
            put(b, 8, ev::TCP_STATE.to_ne_bytes());
            put(b, 36, AF_INET.to_ne_bytes());
            put(b, 38, 40000u16.to_ne_bytes());
            put(b, 40, 5432u16.to_ne_bytes());
            put(b, 42, flag::ADDR.to_ne_bytes());
            put(b, 44, 2i32.to_ne_bytes());
            put(b, 48, 7i32.to_ne_bytes());
            put(b, 68, [10, 0, 0, 2]);
            put(b, 84, [10, 0, 0, 3]);
        });
        let o = observation(&RawEvent::parse(&bytes).unwrap(), "orders").unwrap();
        assert_eq!(o.kind, kind::TCP_STATE);
        assert_eq!(detail(&o, "saddr"), Some("10.0.0.2"));
        assert_eq!(detail(&o, "daddr"), Some("10.0.0.3"));
        assert_eq!(detail(&o, "sport"), Some("40000"));
        assert_eq!(detail(&o, "dport"), Some("5432"));
        assert_eq!(detail(&o, "old_state"), Some("SYN_SENT"));
        assert_eq!(detail(&o, "new_state"), Some("CLOSE"));
        assert_eq!(detail(&o, "pid"), None);
    }

    #[test]
    fn ipv6_and_v4_mapped_addresses_are_readable() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr(AF_INET6, &mapped), "127.0.0.1");
        assert_eq!(addr(AF_INET6, &Ipv6Addr::LOCALHOST.octets()), "::1");
    }

    #[test]
    fn resets_say_which_way_they_went() {
        let sent = RawEvent {
            kind: ev::TCP_RESET_SENT,
            ..Default::default()
        };
        let recv = RawEvent {
            kind: ev::TCP_RESET_RECEIVED,
            new_state: 2,
            ..Default::default()
        };
        let o = observation(&sent, "redis").unwrap();
        assert_eq!(
            (o.kind.as_str(), detail(&o, "direction")),
            (kind::TCP_RESET, Some("sent"))
        );
        assert_eq!(detail(&o, "state"), None);
        let o = observation(&recv, "redis").unwrap();
        assert_eq!(detail(&o, "direction"), Some("received"));
        assert_eq!(detail(&o, "state"), Some("SYN_SENT"));
    }

    #[test]
    fn oom_and_signal_records_decode() {
        let mut raw = RawEvent {
            kind: ev::OOM,
            pid: 99,
            tgid: 99,
            flags: flag::PID,
            ..Default::default()
        };
        let o = observation(&raw, "postgres").unwrap();
        assert_eq!(
            (o.kind.as_str(), detail(&o, "pid"), detail(&o, "comm")),
            (kind::OOM_KILL, Some("99"), None)
        );
        raw.kind = ev::SIGNAL;
        raw.sig = 15;
        let o = observation(&raw, "postgres").unwrap();
        assert_eq!(
            (o.kind.as_str(), detail(&o, "signal")),
            (kind::SIGNAL, Some("15"))
        );
    }

    #[test]
    fn short_or_unknown_records_are_rejected() {
        assert_eq!(RawEvent::parse(&[0u8; 103]), None);
        let raw = RawEvent {
            kind: 99,
            ..Default::default()
        };
        assert_eq!(observation(&raw, "x"), None);
    }

    #[test]
    fn a_full_comm_without_nul_is_kept_whole() {
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
        assert_eq!(comm(b"sh\0garbage\0\0\0\0\0\0"), "sh");
    }

    #[test]
    fn histogram_percentiles_are_bucket_upper_bounds_capped_at_the_max() {
        let mut h = RawHist::default();
        // 90 samples in [2,4) us, 10 samples in [64,128) us, max 100 us.
        h.buckets[1] = 90;
        h.buckets[6] = 10;
        h.count = 100;
        h.sum_ns = 90 * 3_000 + 10 * 100_000;
        h.max_ns = 100_000;
        let d = h.summary().unwrap();
        assert_eq!(d["samples"], "100");
        assert_eq!(d["p50_us"], "4");
        assert_eq!(d["p99_us"], "100", "128 capped at the exact max");
        assert_eq!(d["max_us"], "100");
        assert_eq!(d["mean_us"], "12");
        let o = hist_observation(&h, kind::RUNQ_DELAY, "orders", 5).unwrap();
        assert_eq!((o.kind.as_str(), o.at_ns), (kind::RUNQ_DELAY, 5));
    }

    #[test]
    fn an_empty_histogram_is_skipped_and_merging_sums_cpus() {
        let empty = RawHist::default();
        assert_eq!(empty.summary(), None);
        assert!(hist_observation(&empty, kind::BLOCK_IO_LATENCY, "pg", 0).is_none());
        let mut a = RawHist {
            count: 1,
            max_ns: 500,
            ..Default::default()
        };
        a.buckets[0] = 1;
        let mut b = RawHist {
            count: 2,
            max_ns: 9_000,
            ..Default::default()
        };
        b.buckets[3] = 2;
        a.merge(&b);
        assert_eq!(
            (a.count, a.max_ns, a.buckets[0], a.buckets[3]),
            (3, 9_000, 1, 2)
        );
        assert_eq!(
            a.summary().unwrap()["p50_us"],
            "9",
            "bucket 3 ends at 16 us, capped at 9"
        );
    }

    #[test]
    fn tcp_states_have_kernel_names() {
        assert_eq!(tcp_state(1), "ESTABLISHED");
        assert_eq!(tcp_state(10), "LISTEN");
        assert_eq!(tcp_state(42), "42");
    }
}
