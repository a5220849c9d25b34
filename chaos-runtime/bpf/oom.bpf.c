// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * OOM-killer victims inside watched containers (oom/mark_victim).
 *
 * The tracepoint changed during 6.x: its prototype went from (int pid) to
 * (struct task_struct *task, uid_t uid) and, in the same change, its record gained `uid`, a
 * `__data_loc` comm and rss fields. Both programs test for that with bpf_core_field_exists on
 * the record type.
 */
#define CHAOS_WANT_PIDNS
#define CHAOS_WANT_EVENTS
#include "chaos.h"

/* The old record: just the pid. */
struct trace_event_raw_mark_victim___old {
	int pid;
} __attribute__((preserve_access_index));

/* The new record (only the fields read here). */
struct trace_event_raw_mark_victim___new {
	int pid;
	__u32 __data_loc_comm;
	uid_t uid;
} __attribute__((preserve_access_index));

#define MARK_VICTIM_HAS_TASK bpf_core_field_exists(struct trace_event_raw_mark_victim___new, uid)

static __always_inline int emit(struct task_struct *attrib, struct task_struct *victim, __u32 pid,
				void *comm_src)
{
	__u32 slot, ns_pid = 0;
	struct chaos_event *e;

	if (!chaos_task_slot(attrib, &slot, &ns_pid))
		return 0;
	e = chaos_reserve(CHAOS_EV_OOM, slot);
	if (!e)
		return 0;
	e->pid = pid;
	e->flags = CHAOS_F_PID;
	if (victim) {
		e->tgid = BPF_CORE_READ(victim, tgid);
		e->ns_pid = ns_pid;
		e->flags |= CHAOS_F_NSPID;
		BPF_CORE_READ_STR_INTO(&e->comm, victim, comm);
		e->flags |= CHAOS_F_COMM;
	} else {
		e->tgid = pid;
		if (comm_src && bpf_probe_read_kernel_str(&e->comm, sizeof(e->comm), comm_src) > 0)
			e->flags |= CHAOS_F_COMM;
	}
	chaos_submit(e);
	return 0;
}

SEC("tp_btf/mark_victim")
int oom_btf(__u64 *ctx)
{
	struct task_struct *victim;

	if (!MARK_VICTIM_HAS_TASK) {
		/*
		 * Old prototype: only the victim's pid. Attribute by the task that ran the OOM
		 * killer; for a memory-cgroup OOM that is a task charging the same cgroup, usually
		 * of the same container.
		 */
		return emit((struct task_struct *)bpf_get_current_task(), 0, (__u32)ctx[0], 0);
	}
	victim = (struct task_struct *)ctx[0];
	return emit(victim, victim, BPF_CORE_READ(victim, pid), 0);
}

SEC("tracepoint/oom/mark_victim")
int oom_tp(void *ctx)
{
	struct task_struct *cur = (struct task_struct *)bpf_get_current_task();
	void *comm = 0;
	__u32 pid;

	if (MARK_VICTIM_HAS_TASK) {
		struct trace_event_raw_mark_victim___new *rec = ctx;
		__u32 loc = BPF_CORE_READ(rec, __data_loc_comm);

		pid = BPF_CORE_READ(rec, pid);
		/* __data_loc: low 16 bits = offset of the string from the record start. */
		comm = (void *)((__u64)ctx + (loc & 0xffff));
	} else {
		pid = BPF_CORE_READ((struct trace_event_raw_mark_victim___old *)ctx, pid);
	}
	/* Attributed by the task running the OOM killer (see oom_btf); the pid is the victim's. */
	return emit(cur, 0, pid, comm);
}
