// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Run-queue delay per watched container: time from a task becoming runnable (woken up, newly
 * created, or preempted while still runnable) to it running, as a log2 histogram.
 *
 * tp_btf programs get the tasks themselves and attribute by their pid namespace. The classic
 * tracepoints only carry pids: the fallback learns pid -> container from tasks seen switching
 * out in a watched namespace (`current` at sched_switch is the outgoing task), so a task is
 * counted from its second time on the CPU after watch() -- approximate, by design.
 */
#define CHAOS_WANT_PIDNS
#define CHAOS_WANT_HIST
#include "chaos.h"

#define CHAOS_TASK_RUNNING 0

struct runq_start {
	__u64 ts;
	__u32 slot;
	__u32 _pad;
};

/* pid -> when it became runnable, and its container. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct runq_start);
} runq_start SEC(".maps");

/* Classic fallback only: pid -> container, learned at sched_switch. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} task_slot SEC(".maps");

static __always_inline void runnable(__u32 pid, __u32 slot)
{
	struct runq_start s = { .ts = bpf_ktime_get_ns(), .slot = slot };

	if (pid)
		bpf_map_update_elem(&runq_start, &pid, &s, BPF_ANY);
}

static __always_inline void runnable_task(struct task_struct *p)
{
	__u32 slot;

	if (chaos_task_slot(p, &slot, 0))
		runnable(BPF_CORE_READ(p, pid), slot);
}

static __always_inline void running(__u32 pid)
{
	struct runq_start *s = bpf_map_lookup_elem(&runq_start, &pid);
	__u64 now;

	if (!s)
		return;
	now = bpf_ktime_get_ns();
	if (now > s->ts)
		chaos_hist_add(s->slot, now - s->ts);
	bpf_map_delete_elem(&runq_start, &pid);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_btf, struct task_struct *p)
{
	runnable_task(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_btf, struct task_struct *p)
{
	runnable_task(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	/* Preempted (still runnable): it waits on the run queue from now on. */
	if (chaos_task_state(prev) == CHAOS_TASK_RUNNING)
		runnable_task(prev);
	running(BPF_CORE_READ(next, pid));
	return 0;
}

static __always_inline int wakeup_pid(__u32 pid)
{
	__u32 *slot = bpf_map_lookup_elem(&task_slot, &pid);

	if (slot)
		runnable(pid, *slot);
	return 0;
}

SEC("tracepoint/sched/sched_wakeup")
int wakeup_tp(struct trace_event_raw_sched_wakeup_template *ctx)
{
	return wakeup_pid(BPF_CORE_READ(ctx, pid));
}

SEC("tracepoint/sched/sched_wakeup_new")
int wakeup_new_tp(struct trace_event_raw_sched_wakeup_template *ctx)
{
	return wakeup_pid(BPF_CORE_READ(ctx, pid));
}

SEC("tracepoint/sched/sched_switch")
int switch_tp(struct trace_event_raw_sched_switch *ctx)
{
	struct task_struct *prev = (struct task_struct *)bpf_get_current_task();
	__u32 prev_pid = BPF_CORE_READ(ctx, prev_pid);
	__u32 slot;

	if (prev_pid) {
		if (chaos_task_slot(prev, &slot, 0)) {
			bpf_map_update_elem(&task_slot, &prev_pid, &slot, BPF_ANY);
			if (chaos_task_state(prev) == CHAOS_TASK_RUNNING)
				runnable(prev_pid, slot);
		} else if (bpf_map_lookup_elem(&task_slot, &prev_pid)) {
			/* The pid was reused outside the watched namespaces. */
			bpf_map_delete_elem(&task_slot, &prev_pid);
		}
	}
	running(BPF_CORE_READ(ctx, next_pid));
	return 0;
}
