//! The bytes a qdisc sent, read from the kernel over rtnetlink (`RTM_GETQDISC`) rather than by
//! running `tc -s qdisc show`: a read takes microseconds, so a count can be taken at the
//! instant another is (a bulk transfer's receivers), which a `tc` run (10-100 ms under load)
//! cannot. The qdisc's own count is the one its limit charges: `tbf` counts a GSO packet's
//! segments' headers, which a device's `/proc/net/dev` bytes do not (2-3 % less under TCP).

/// `RTM_NEWQDISC`: one qdisc in a dump's answer.
const RTM_NEWQDISC: u16 = 36;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the dump's end.
const NLMSG_DONE: u16 = 3;
/// `TCA_KIND`: the qdisc's kind, a NUL-terminated string.
const TCA_KIND: u16 = 1;
/// `TCA_STATS`: the old `struct tc_stats`, whose first field is the bytes sent (u64).
const TCA_STATS: u16 = 3;
/// `TCA_STATS2`: nested statistics.
const TCA_STATS2: u16 = 7;
/// `TCA_STATS_BASIC` inside `TCA_STATS2`: `struct gnet_stats_basic { u64 bytes; u32 packets; }`.
const TCA_STATS_BASIC: u16 = 1;
/// `struct nlmsghdr`'s length.
const NLMSG_HDR: usize = 16;
/// `struct tcmsg`'s length.
const TCMSG: usize = 20;

/// What one received batch of a dump's answer held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The bytes sent by the first qdisc of that kind on that device, if this batch listed it.
    pub sent: Option<u64>,
    /// The batch ended the dump.
    pub done: bool,
    /// The kernel answered with this error number instead.
    pub error: Option<i32>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The attributes `(type, payload)` packed in `b` (each padded to 4 bytes).
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & 0x3fff; // without the nested / byte-order flags
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

/// Reads one batch of an `RTM_GETQDISC` dump's answer: the bytes the qdisc of `kind` on
/// device `ifindex` sent, when listed.
pub fn parse(mut b: &[u8], ifindex: i32, kind: &str) -> Batch {
    let mut batch = Batch::default();
    while let (Some(len), Some(ty)) = (u32_at(b, 0), u16_at(b, 4)) {
        let len = len as usize;
        if len < NLMSG_HDR || len > b.len() {
            break;
        }
        let body = &b[NLMSG_HDR..len];
        match ty {
            NLMSG_DONE => batch.done = true,
            NLMSG_ERROR => {
                batch.error = Some(u32_at(body, 0).map_or(0, |e| -(e as i32)));
                batch.done = true;
            }
            RTM_NEWQDISC if batch.sent.is_none() => {
                let on = u32_at(body, 4).map(|i| i as i32);
                if on == Some(ifindex) && body.len() >= TCMSG {
                    let mut this_kind = false;
                    let (mut basic, mut old) = (None, None);
                    for (t, p) in attributes(&body[TCMSG..]) {
                        match t {
                            TCA_KIND => {
                                this_kind = p.split(|c| *c == 0).next() == Some(kind.as_bytes())
                            }
                            TCA_STATS => old = u64_at(p, 0),
                            TCA_STATS2 => {
                                basic = attributes(p)
                                    .find(|(t, _)| *t == TCA_STATS_BASIC)
                                    .and_then(|(_, p)| u64_at(p, 0))
                            }
                            _ => {}
                        }
                    }
                    if this_kind {
                        batch.sent = basic.or(old);
                    }
                }
            }
            _ => {}
        }
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
    }
    batch
}

/// The request: dump the qdiscs (of device `ifindex`, a filter newer kernels apply).
pub fn request(ifindex: i32, seq: u32) -> Vec<u8> {
    const RTM_GETQDISC: u16 = 38;
    const NLM_F_REQUEST_DUMP: u16 = 0x1 | 0x300;
    let len = (NLMSG_HDR + TCMSG) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_GETQDISC.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST_DUMP.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // to the kernel
    m.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, padding
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&[0; 12]); // handle, parent, info
    m
}

/// A qdisc's sent-bytes counter, read over a netlink socket made inside its namespace.
#[cfg(target_os = "linux")]
pub struct Counter {
    socket: std::os::fd::OwnedFd,
    ifindex: i32,
    kind: String,
    seq: u32,
}

#[cfg(target_os = "linux")]
impl Counter {
    /// Opens the counter of the qdisc `kind` on `dev`; to be called on a thread inside the
    /// device's network namespace (the socket keeps it; the device's index is looked up there).
    pub fn open_here(dev: &str, kind: &str) -> std::io::Result<Counter> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(dev).map_err(std::io::Error::other)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::other(format!(
                "no device {dev} in the namespace"
            )));
        }
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Counter {
            // SAFETY: a new fd nothing else owns.
            socket: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            ifindex: ifindex as i32,
            kind: kind.to_string(),
            seq: 0,
        })
    }

    /// The bytes the qdisc has sent so far.
    pub fn read(&mut self) -> std::io::Result<u64> {
        use std::os::fd::AsRawFd;
        self.seq += 1;
        let req = request(self.ifindex, self.seq);
        let fd = self.socket.as_raw_fd();
        // SAFETY: sends `req`'s bytes on a socket this counter owns.
        if unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 32 * 1024];
        let mut sent = None;
        loop {
            // SAFETY: receives into `buf`, at most its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let batch = parse(&buf[..n as usize], self.ifindex, &self.kind);
            if let Some(e) = batch.error.filter(|e| *e != 0) {
                return Err(std::io::Error::from_raw_os_error(e));
            }
            sent = sent.or(batch.sent);
            if batch.done || n == 0 {
                break;
            }
        }
        sent.ok_or_else(|| {
            std::io::Error::other(format!("no {} qdisc on the device any more", self.kind))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(t: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&t.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn message(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m
    }

    fn qdisc(ifindex: i32, kind: &str, bytes: u64, nested: bool) -> Vec<u8> {
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&[0; 12]);
        body.extend(attr(TCA_KIND, format!("{kind}\0").as_bytes()));
        let mut stats = bytes.to_ne_bytes().to_vec();
        stats.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        if nested {
            body.extend(attr(TCA_STATS2, &attr(TCA_STATS_BASIC, &stats)));
        } else {
            body.extend(attr(TCA_STATS, &stats));
        }
        message(RTM_NEWQDISC, &body)
    }

    #[test]
    fn the_named_qdisc_of_the_named_device_and_the_dumps_end() {
        let mut b = qdisc(2, "ingress", 999, true);
        b.extend(qdisc(3, "tbf", 111, true));
        b.extend(qdisc(2, "tbf", 2_591_722, true));
        assert_eq!(
            parse(&b, 2, "tbf"),
            Batch {
                sent: Some(2_591_722),
                done: false,
                error: None
            }
        );
        assert_eq!(parse(&b, 4, "tbf").sent, None);
        // Older kernels' flat statistics.
        let mut b = qdisc(5, "tbf", 42, false);
        b.extend(message(NLMSG_DONE, &[0; 4]));
        assert_eq!(
            parse(&b, 5, "tbf"),
            Batch {
                sent: Some(42),
                done: true,
                error: None
            }
        );
        // An error answer, and a truncated message read as nothing.
        let e = message(NLMSG_ERROR, &(-1i32 as u32).to_ne_bytes());
        assert_eq!(parse(&e, 5, "tbf").error, Some(1));
        assert_eq!(parse(&b[..10], 5, "tbf"), Batch::default());
    }

    #[test]
    fn the_request_is_one_dump_message() {
        let r = request(7, 9);
        assert_eq!(r.len(), 36);
        assert_eq!(u32_at(&r, 0), Some(36));
        assert_eq!(u16_at(&r, 4), Some(38));
        assert_eq!(u32_at(&r, 8), Some(9));
        assert_eq!(u32_at(&r, 20), Some(7));
    }
}
