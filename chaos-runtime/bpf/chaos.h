/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Shared by every bpf/NAME.bpf.c: the ring-buffer record, the filter maps that keep events of
 * unwatched containers in the kernel, the histogram layout, and CO-RE helpers.
 *
 * Layouts here are mirrored in chaos-runtime/src/observe/bpf/record.rs (`RawEvent`, `RawHist`);
 * change both together.
 *
 * Portability rules: every kernel struct is read with BPF_CORE_READ (relocated against the
 * running kernel's BTF at load time); a field that moved or was renamed between kernels is
 * read through a minimal `___flavour` struct chosen with bpf_core_field_exists /
 * bpf_core_type_exists. No tracepoint offsets are copied by hand.
 */
#ifndef CHAOS_BPF_H
#define CHAOS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Containers watched at once; a slot is the container's index in user space. Power of two. */
#define CHAOS_MAX_SLOTS 64
/* Namespaces in the filter maps (a container has one pid ns and one net ns). */
#define CHAOS_MAX_NS 1024
/* log2 microsecond buckets: bucket 0 is [0, 2) us, bucket i is [2^i, 2^(i+1)) us. */
#define CHAOS_HIST_BUCKETS 32
/* Ring buffer size and the backlog after which a submit wakes the reader. */
#define CHAOS_RINGBUF_BYTES (256 * 1024)
#define CHAOS_WAKEUP_BYTES (16 * 1024)

#define CHAOS_AF_INET 2
#define CHAOS_AF_INET6 10
#define CHAOS_IPPROTO_TCP 6

enum chaos_event_kind {
	CHAOS_EV_EXIT = 1,
	CHAOS_EV_SIGNAL = 2,
	CHAOS_EV_OOM = 3,
	CHAOS_EV_TCP_RETRANSMIT = 4,
	CHAOS_EV_TCP_RESET_RECEIVED = 5,
	CHAOS_EV_TCP_RESET_SENT = 6,
	CHAOS_EV_TCP_STATE = 7,
};

/* chaos_event.flags */
#define CHAOS_F_COMM 1  /* comm is set */
#define CHAOS_F_PID 2   /* pid/tgid are set */
#define CHAOS_F_ADDR 4  /* family, addresses and ports are set */
#define CHAOS_F_NSPID 8 /* ns_pid is set */

/* One ring-buffer record, 104 bytes. Mirrored by `RawEvent` in bpf/record.rs. */
struct chaos_event {
	__u64 ts_ns;       /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 kind;        /* enum chaos_event_kind */
	__u32 slot;        /* watched container */
	__u32 pid;         /* host pid (thread id) */
	__u32 tgid;        /* host tgid */
	__u32 ns_pid;      /* pid inside the task's own pid namespace */
	__s32 exit_code;   /* raw task->exit_code: (status << 8) | signal */
	__s32 sig;         /* delivered signal */
	__u16 family;      /* AF_INET / AF_INET6 */
	__u16 sport;       /* host byte order */
	__u16 dport;       /* host byte order */
	__u16 flags;       /* CHAOS_F_* */
	__s32 old_state;   /* TCP states (TCP_ESTABLISHED = 1 ...) */
	__s32 new_state;
	char comm[16];
	__u8 saddr[16];    /* network byte order; IPv4 in the first 4 bytes */
	__u8 daddr[16];
};

_Static_assert(sizeof(struct chaos_event) == 104, "mirrored by RawEvent in bpf/record.rs");
_Static_assert(__builtin_offsetof(struct chaos_event, comm) == 52, "mirrored by RawEvent");
_Static_assert(__builtin_offsetof(struct chaos_event, daddr) == 84, "mirrored by RawEvent");

/* One container's histogram on one CPU. Mirrored by `RawHist` in bpf/record.rs. */
struct chaos_hist {
	__u64 buckets[CHAOS_HIST_BUCKETS];
	__u64 count;
	__u64 sum_ns;
	__u64 max_ns;
};

_Static_assert(sizeof(struct chaos_hist) == (CHAOS_HIST_BUCKETS + 3) * 8, "mirrored by RawHist");

/* --- CO-RE flavours for fields that moved ------------------------------------------------ */

/* task_struct.state became __state (and unsigned int) in 5.14. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));
struct task_struct___since514 {
	unsigned int __state;
} __attribute__((preserve_access_index));

/* Before 4.19 a task found its struct pid through pids[PIDTYPE_PID]. */
struct pid_link___pre419 {
	struct pid *pid;
} __attribute__((preserve_access_index));
struct task_struct___pre419 {
	struct pid_link___pre419 pids[4];
} __attribute__((preserve_access_index));
struct task_struct___since419 {
	struct pid *thread_pid;
} __attribute__((preserve_access_index));

static __always_inline long chaos_task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(struct task_struct___since514, __state))
		return BPF_CORE_READ((struct task_struct___since514 *)t, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

static __always_inline struct pid *chaos_task_pid(struct task_struct *t)
{
	if (bpf_core_field_exists(struct task_struct___since419, thread_pid))
		return BPF_CORE_READ((struct task_struct___since419 *)t, thread_pid);
	return BPF_CORE_READ((struct task_struct___pre419 *)t, pids[0].pid);
}

/*
 * The inode number of the task's active pid namespace (what /proc/<pid>/ns/pid shows):
 * task->thread_pid->numbers[level].ns->ns.inum; nsproxy->pid_ns_for_children as a last resort
 * (that is the namespace of the task's future children, equal for processes that did not
 * unshare, and NULL once the task has left its namespaces while exiting).
 */
static __always_inline __u32 chaos_task_pidns(struct task_struct *t, __u32 *ns_pid)
{
	struct pid *pid = chaos_task_pid(t);
	struct upid up = {};

	if (pid) {
		unsigned int level = BPF_CORE_READ(pid, level);

		if (level < 32 &&
		    bpf_core_read(&up, sizeof(up), &pid->numbers[level]) == 0 && up.ns) {
			if (ns_pid)
				*ns_pid = up.nr;
			return BPF_CORE_READ(up.ns, ns.inum);
		}
	}
	return BPF_CORE_READ(t, nsproxy, pid_ns_for_children, ns.inum);
}

static __always_inline __u32 chaos_sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* floor(log2(v)), 0 for v <= 1; branch-free for the verifier. */
static __always_inline __u32 chaos_log2(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

/* A .bpf.c defines CHAOS_WANT_* before including this header to get the maps it uses. */

#ifdef CHAOS_WANT_PIDNS
/* Watched pid namespaces: inum -> slot. Filled by user space (BpfObserver::watch). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CHAOS_MAX_NS);
	__type(key, __u32);
	__type(value, __u32);
} watched_pidns SEC(".maps");

/* The watched container `t` belongs to, by its pid namespace; 0 when it is not watched. */
static __always_inline int chaos_task_slot(struct task_struct *t, __u32 *slot, __u32 *ns_pid)
{
	__u32 inum = chaos_task_pidns(t, ns_pid);
	__u32 *s = bpf_map_lookup_elem(&watched_pidns, &inum);

	if (!s)
		return 0;
	*slot = *s;
	return 1;
}
#endif

#ifdef CHAOS_WANT_NETNS
/* Watched network namespaces: inum -> slot. TCP events fire in softirq context where
 * `current` is arbitrary, so they are attributed by the socket's namespace instead. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CHAOS_MAX_NS);
	__type(key, __u32);
	__type(value, __u32);
} watched_netns SEC(".maps");

static __always_inline int chaos_netns_slot(__u32 inum, __u32 *slot)
{
	__u32 *s = bpf_map_lookup_elem(&watched_netns, &inum);

	if (!s)
		return 0;
	*slot = *s;
	return 1;
}
#endif

#ifdef CHAOS_WANT_EVENTS
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, CHAOS_RINGBUF_BYTES);
} events SEC(".maps");

/* Records dropped because the ring buffer was full (bpf_ringbuf_reserve failed), one counter
 * per CPU. Read, summed over CPUs and objects, by BpfObserver::lost_events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

static __always_inline struct chaos_event *chaos_reserve(__u32 kind, __u32 slot)
{
	struct chaos_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);

		/* Atomic: a softirq program (tcp) may interrupt one running in process context. */
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->slot = slot;
	return e;
}

/* Submits without waking the reader until CHAOS_WAKEUP_BYTES are pending: a wakeup per event
 * costs ~20 us on small VMs. The reader also drains every ~100 ms, so nothing waits longer. */
static __always_inline void chaos_submit(struct chaos_event *e)
{
	__u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(e, pending >= CHAOS_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
							    : BPF_RB_NO_WAKEUP);
}
#endif

#ifdef CHAOS_WANT_HIST
/*
 * Histograms, double-buffered so user space can read and zero one half while the kernel
 * fills the other: index = (hist_epoch & 1) * CHAOS_MAX_SLOTS + slot. User space flips
 * hist_epoch, waits a moment for programs still running with the old value, then reads and
 * zeroes the idle half, so no sample is lost between reads.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * CHAOS_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct chaos_hist);
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} hist_epoch SEC(".maps");

static __always_inline void chaos_hist_add(__u32 slot, __u64 delta_ns)
{
	__u32 zero = 0, idx, b;
	__u32 *epoch = bpf_map_lookup_elem(&hist_epoch, &zero);
	struct chaos_hist *h;

	if (slot >= CHAOS_MAX_SLOTS)
		return;
	idx = ((epoch ? *epoch : 0) & 1) * CHAOS_MAX_SLOTS + slot;
	h = bpf_map_lookup_elem(&hist, &idx);
	if (!h)
		return;
	b = chaos_log2(delta_ns / 1000);
	if (b >= CHAOS_HIST_BUCKETS)
		b = CHAOS_HIST_BUCKETS - 1;
	h->buckets[b]++;
	h->count++;
	h->sum_ns += delta_ns;
	if (delta_ns > h->max_ns)
		h->max_ns = delta_ns;
}
#endif

#endif /* CHAOS_BPF_H */
