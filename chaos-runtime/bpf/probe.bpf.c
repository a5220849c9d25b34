// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The doctor's capability probe: a program that does nothing but one CO-RE read, so loading
 * it proves BTF relocation, the verifier and attachment work on this host.
 */
#include "chaos.h"

static __always_inline int touch(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, pid) < 0;
}

SEC("tp_btf/sched_process_free")
int probe_btf(void *ctx)
{
	return touch();
}

SEC("tracepoint/sched/sched_process_free")
int probe_tp(void *ctx)
{
	return touch();
}
