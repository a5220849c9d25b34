// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Block I/O latency per watched container: block_rq_issue -> block_rq_complete, as a log2
 * histogram.
 *
 * Attribution is by the task that issues the request, at issue time, and is approximate:
 * blk-mq usually dispatches in the context of the submitting task (direct I/O, fsync, a
 * plug being flushed), but requests dispatched later by kblockd workers, and buffered writes
 * flushed by the writeback threads, run in kernel threads outside any container and are
 * not counted. Requests are keyed by their pointer (tp_btf) or by dev+sector (classic).
 */
#define CHAOS_WANT_PIDNS
#define CHAOS_WANT_HIST
#include "chaos.h"

struct io_start {
	__u64 ts;
	__u32 slot;
	__u32 _pad;
};

struct io_key {
	__u64 sector;
	__u32 dev;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct io_start);
} start_by_rq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct io_key);
	__type(value, struct io_start);
} start_by_sector SEC(".maps");

/* Classic records, only the fields read here. block_rq_complete had a record of its own until
 * it was made a block_rq_completion event (shared with block_rq_error). */
struct trace_event_raw_block_rq___any {
	dev_t dev;
	sector_t sector;
} __attribute__((preserve_access_index));
struct trace_event_raw_block_rq_completion___class {
	dev_t dev;
	sector_t sector;
} __attribute__((preserve_access_index));
struct trace_event_raw_block_rq_complete___own {
	dev_t dev;
	sector_t sector;
} __attribute__((preserve_access_index));

static __always_inline int issue_current(struct io_start *s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (!chaos_task_slot(task, &s->slot, 0))
		return 0;
	s->ts = bpf_ktime_get_ns();
	return 1;
}

static __always_inline void complete(struct io_start *s)
{
	__u64 now = bpf_ktime_get_ns();

	if (now > s->ts)
		chaos_hist_add(s->slot, now - s->ts);
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(issue_btf, struct request *rq)
{
	struct io_start s = {};
	__u64 key = (__u64)rq;

	if (issue_current(&s))
		bpf_map_update_elem(&start_by_rq, &key, &s, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(complete_btf, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct io_start *s = bpf_map_lookup_elem(&start_by_rq, &key);

	if (s) {
		complete(s);
		bpf_map_delete_elem(&start_by_rq, &key);
	}
	return 0;
}

SEC("tracepoint/block/block_rq_issue")
int issue_tp(struct trace_event_raw_block_rq___any *ctx)
{
	struct io_key key = {
		.sector = BPF_CORE_READ(ctx, sector),
		.dev = BPF_CORE_READ(ctx, dev),
	};
	struct io_start s = {};

	if (issue_current(&s))
		bpf_map_update_elem(&start_by_sector, &key, &s, BPF_ANY);
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int complete_tp(void *ctx)
{
	struct io_key key = {};
	struct io_start *s;

	if (bpf_core_type_exists(struct trace_event_raw_block_rq_completion___class)) {
		key.sector = BPF_CORE_READ((struct trace_event_raw_block_rq_completion___class *)ctx,
					   sector);
		key.dev = BPF_CORE_READ((struct trace_event_raw_block_rq_completion___class *)ctx, dev);
	} else {
		key.sector = BPF_CORE_READ((struct trace_event_raw_block_rq_complete___own *)ctx, sector);
		key.dev = BPF_CORE_READ((struct trace_event_raw_block_rq_complete___own *)ctx, dev);
	}
	s = bpf_map_lookup_elem(&start_by_sector, &key);
	if (s) {
		complete(s);
		bpf_map_delete_elem(&start_by_sector, &key);
	}
	return 0;
}
