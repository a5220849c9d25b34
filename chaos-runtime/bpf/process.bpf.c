// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Process exits and signal deliveries inside watched containers.
 *
 * Each hook has a tp_btf program (typed arguments, no tracefs needed) and a classic tracepoint
 * twin; user space attaches the first one the kernel accepts. Both run in the context of the
 * task concerned (the exiting task, the task receiving the signal), so `current` attributes
 * them through its pid namespace.
 */
#define CHAOS_WANT_PIDNS
#define CHAOS_WANT_EVENTS
#include "chaos.h"

static __always_inline int on_exit(struct task_struct *task)
{
	__u32 slot, ns_pid = 0;
	struct chaos_event *e;
	__u32 pid = BPF_CORE_READ(task, pid);
	__u32 tgid = BPF_CORE_READ(task, tgid);

	/* One event per process: threads other than the leader exit silently. */
	if (pid != tgid)
		return 0;
	if (!chaos_task_slot(task, &slot, &ns_pid))
		return 0;
	e = chaos_reserve(CHAOS_EV_EXIT, slot);
	if (!e)
		return 0;
	e->pid = pid;
	e->tgid = tgid;
	e->ns_pid = ns_pid;
	/* Set by do_exit() before the tracepoint: (status << 8) | terminating signal. */
	e->exit_code = BPF_CORE_READ(task, exit_code);
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	e->flags = CHAOS_F_PID | CHAOS_F_COMM | CHAOS_F_NSPID;
	chaos_submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_btf, struct task_struct *task)
{
	return on_exit(task);
}

/* The classic record has only pid/comm; the exit code lives in the task, which is current. */
SEC("tracepoint/sched/sched_process_exit")
int exit_tp(void *ctx)
{
	return on_exit((struct task_struct *)bpf_get_current_task());
}

static __always_inline int on_signal(int sig)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 slot, ns_pid = 0;
	struct chaos_event *e;

	if (!chaos_task_slot(task, &slot, &ns_pid))
		return 0;
	e = chaos_reserve(CHAOS_EV_SIGNAL, slot);
	if (!e)
		return 0;
	e->pid = BPF_CORE_READ(task, pid);
	e->tgid = BPF_CORE_READ(task, tgid);
	e->ns_pid = ns_pid;
	e->sig = sig;
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	e->flags = CHAOS_F_PID | CHAOS_F_COMM | CHAOS_F_NSPID;
	chaos_submit(e);
	return 0;
}

SEC("tp_btf/signal_deliver")
int BPF_PROG(signal_btf, int sig)
{
	return on_signal(sig);
}

SEC("tracepoint/signal/signal_deliver")
int signal_tp(struct trace_event_raw_signal_deliver *ctx)
{
	return on_signal(BPF_CORE_READ(ctx, sig));
}
