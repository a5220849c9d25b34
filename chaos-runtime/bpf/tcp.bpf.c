// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * TCP retransmits, resets and state changes in watched containers.
 *
 * These fire in softirq context as often as in the socket owner's, so `current` says nothing
 * about the container: events are attributed by the network namespace of the socket
 * (sk->__sk_common.skc_net) or, for a reset sent without a socket, of the receiving device.
 * Addresses and ports are read from the socket, not from the tracepoint record, whose layout
 * has changed several times (the tcp_event_sk_skb class was split up during 6.x).
 */
#define CHAOS_WANT_NETNS
#define CHAOS_WANT_EVENTS
#include "chaos.h"

/* include/net/tcp_states.h */
#define CHAOS_TCP_TIME_WAIT 6
#define CHAOS_TCP_NEW_SYN_RECV 12

/* Classic records, only the fields read here. tcp_send_reset and tcp_retransmit_skb used to
 * share the tcp_event_sk_skb class; 6.x kernels gave each its own record (6.18 has both). */
struct trace_event_raw_tcp_event_sk_skb___shared {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));
struct trace_event_raw_tcp_retransmit_skb___own {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));
struct trace_event_raw_tcp_send_reset___own {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));
struct trace_event_raw_tcp_event_sk___any {
	const void *skaddr;
} __attribute__((preserve_access_index));
struct trace_event_raw_inet_sock_set_state___any {
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 protocol;
} __attribute__((preserve_access_index));

static __always_inline void fill_from_sock(struct chaos_event *e, const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	__u16 sport = 0;

	/* Full sockets keep their source port in inet_sport while the bound port (skc_num) is
	 * already released on the way to CLOSE; time-wait and request socks have no inet_sock. */
	if (state != CHAOS_TCP_TIME_WAIT && state != CHAOS_TCP_NEW_SYN_RECV)
		sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (!sport)
		sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->family = family;
	e->sport = sport;
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == CHAOS_AF_INET) {
		__be32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memcpy(e->saddr, &s, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	} else if (family == CHAOS_AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr);
	}
	e->flags |= CHAOS_F_ADDR;
}

static __always_inline int emit_sock(const struct sock *sk, __u32 kind, int old_state,
				     int new_state)
{
	struct chaos_event *e;
	__u32 slot;

	if (!sk || !chaos_netns_slot(chaos_sock_netns(sk), &slot))
		return 0;
	e = chaos_reserve(kind, slot);
	if (!e)
		return 0;
	fill_from_sock(e, sk);
	e->old_state = old_state;
	e->new_state = new_state;
	chaos_submit(e);
	return 0;
}

/* A reset sent with no socket (a segment to a closed port): addresses come from the segment
 * being answered, swapped so that saddr is the side sending the reset. */
static __always_inline int emit_reset_from_skb(const struct sk_buff *skb)
{
	struct net_device *dev;
	struct chaos_event *e;
	unsigned char *head;
	__u16 nh, th, ports[2] = {};
	__u8 version = 0;
	__u32 slot;

	if (!skb)
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	if (!dev || !chaos_netns_slot(BPF_CORE_READ(dev, nd_net.net, ns.inum), &slot))
		return 0;
	e = chaos_reserve(CHAOS_EV_TCP_RESET_SENT, slot);
	if (!e)
		return 0;
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	th = BPF_CORE_READ(skb, transport_header);
	bpf_probe_read_kernel(&version, 1, head + nh);
	version >>= 4;
	/* Wire formats (RFC 791 / 8200 / 9293), not kernel layouts. */
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + th) == 0) {
		e->sport = bpf_ntohs(ports[1]);
		e->dport = bpf_ntohs(ports[0]);
	}
	if (version == 4) {
		e->family = CHAOS_AF_INET;
		bpf_probe_read_kernel(e->daddr, 4, head + nh + 12);
		bpf_probe_read_kernel(e->saddr, 4, head + nh + 16);
		e->flags |= CHAOS_F_ADDR;
	} else if (version == 6) {
		e->family = CHAOS_AF_INET6;
		bpf_probe_read_kernel(e->daddr, 16, head + nh + 8);
		bpf_probe_read_kernel(e->saddr, 16, head + nh + 24);
		e->flags |= CHAOS_F_ADDR;
	}
	chaos_submit(e);
	return 0;
}

static __always_inline int on_reset_sent(const struct sock *sk, const struct sk_buff *skb)
{
	if (sk)
		return emit_sock(sk, CHAOS_EV_TCP_RESET_SENT, 0,
				 BPF_CORE_READ(sk, __sk_common.skc_state));
	return emit_reset_from_skb(skb);
}

static __always_inline int on_state(const struct sock *sk, int protocol, int old_state,
				    int new_state)
{
	if (protocol != CHAOS_IPPROTO_TCP)
		return 0;
	return emit_sock(sk, CHAOS_EV_TCP_STATE, old_state, new_state);
}

/* --- tp_btf: typed arguments, no tracefs ------------------------------------------------ */

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retransmit_btf, const struct sock *sk)
{
	return emit_sock(sk, CHAOS_EV_TCP_RETRANSMIT, 0, BPF_CORE_READ(sk, __sk_common.skc_state));
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(reset_recv_btf, struct sock *sk)
{
	return emit_sock(sk, CHAOS_EV_TCP_RESET_RECEIVED, 0,
			 BPF_CORE_READ(sk, __sk_common.skc_state));
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(reset_sent_btf, const struct sock *sk, const struct sk_buff *skb)
{
	return on_reset_sent(sk, skb);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(state_btf, const struct sock *sk, int old_state, int new_state)
{
	/* sk_protocol was a bitfield before 5.6; the probed read handles both. */
	int protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);

	return on_state(sk, protocol, old_state, new_state);
}

/* --- classic tracepoints: the socket pointer from the record -------------------------------- */

SEC("tracepoint/tcp/tcp_retransmit_skb")
int retransmit_tp(void *ctx)
{
	const struct sock *sk;

	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb___own))
		sk = BPF_CORE_READ((struct trace_event_raw_tcp_retransmit_skb___own *)ctx, skaddr);
	else
		sk = BPF_CORE_READ((struct trace_event_raw_tcp_event_sk_skb___shared *)ctx, skaddr);
	return emit_sock(sk, CHAOS_EV_TCP_RETRANSMIT, 0, BPF_CORE_READ(sk, __sk_common.skc_state));
}

SEC("tracepoint/tcp/tcp_receive_reset")
int reset_recv_tp(struct trace_event_raw_tcp_event_sk___any *ctx)
{
	const struct sock *sk = BPF_CORE_READ(ctx, skaddr);

	return emit_sock(sk, CHAOS_EV_TCP_RESET_RECEIVED, 0,
			 BPF_CORE_READ(sk, __sk_common.skc_state));
}

SEC("tracepoint/tcp/tcp_send_reset")
int reset_sent_tp(void *ctx)
{
	const struct sock *sk;
	const struct sk_buff *skb;

	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset___own)) {
		struct trace_event_raw_tcp_send_reset___own *rec = ctx;

		sk = BPF_CORE_READ(rec, skaddr);
		skb = BPF_CORE_READ(rec, skbaddr);
	} else {
		struct trace_event_raw_tcp_event_sk_skb___shared *rec = ctx;

		sk = BPF_CORE_READ(rec, skaddr);
		skb = BPF_CORE_READ(rec, skbaddr);
	}
	return on_reset_sent(sk, skb);
}

SEC("tracepoint/sock/inet_sock_set_state")
int state_tp(struct trace_event_raw_inet_sock_set_state___any *ctx)
{
	return on_state(BPF_CORE_READ(ctx, skaddr), BPF_CORE_READ(ctx, protocol),
			BPF_CORE_READ(ctx, oldstate), BPF_CORE_READ(ctx, newstate));
}
