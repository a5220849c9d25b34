//! Zero-copy forwarding for the fast path on Linux: `splice(2)` moves bytes
//! from the source socket into a pipe and from the pipe into the destination
//! socket, so they never enter user space (on loopback the pages are passed by
//! reference, no memcpy in the proxy).
//!
//! Every operation is non-blocking and driven by tokio's readiness, so the
//! sockets stay ordinary tokio `TcpStream`s. A fill is cancel-safe (readiness
//! wait, then one syscall), and the pump always drains the pipe completely
//! before it waits again, so dropping the fast path between two fills never
//! strands bytes in the pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for (the kernel's default maximum for unprivileged
/// processes is 1 MiB); fewer, larger moves per chunk of a bulk transfer.
const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// One direction's pipe.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Capacity, i.e. the most one fill may move.
    size: usize,
}

impl Pipe {
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array on success.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on a pipe we own; failure leaves the default size.
        let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // SAFETY: F_GETPIPE_SZ on a pipe we own.
        let size = if set > 0 {
            set
        } else {
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        Ok(Pipe {
            read,
            write,
            size: usize::try_from(size).unwrap_or(0).max(4096),
        })
    }

    /// Moves what the socket has (up to the pipe's capacity) into the empty
    /// pipe; 0 means the source closed.
    pub(crate) async fn fill(&self, src: &TcpStream) -> io::Result<usize> {
        loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src.as_raw_fd(), self.write.as_raw_fd(), self.size)
            }) {
                // A short move does not clear the readiness here: a second
                // `try_io` would clear whatever readiness the driver holds by
                // then, including an edge for bytes that arrived after the
                // splice, and edge-triggered epoll never repeats it (a sender
                // blocked on a full window would wait forever). The next fill's
                // splice fails with EAGAIN instead, and `try_io` clears only
                // the readiness it was given.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Moves `n` bytes from the pipe into the socket.
    pub(crate) async fn drain(&self, dst: &TcpStream, mut n: usize) -> io::Result<()> {
        while n > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(self.read.as_raw_fd(), dst.as_raw_fd(), n)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(moved) => n -= moved,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors, no offsets (both ends are a socket or a pipe).
    let r = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
