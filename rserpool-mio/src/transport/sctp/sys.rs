//! Kernel SCTP FFI (Linux lksctp, RFC 6458), declared by hand where libc lacks it.
//!
//! This is the only module of the project with `unsafe`; the few process-level calls the
//! registrar needs live here too ([`raise_nofile_limit`], [`program_break`],
//! [`populate_write`], [`PrefaultingAllocator`]). It exposes safe functions that take a
//! [`BorrowedFd`] and plain Rust values; everything the kernel returns is parsed from bytes
//! with bounds checks. Struct sizes are checked at compile time against the values the gcc
//! probe printed for `/usr/include/linux/sctp.h` (shared/design/ecosystem.md §2.3).
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `SOL_SCTP` (libc defines it only for Android); equal to `IPPROTO_SCTP`.
pub const SOL_SCTP: libc::c_int = libc::IPPROTO_SCTP;
/// Per-type event subscription (`struct sctp_event`).
pub const SCTP_EVENT: libc::c_int = 127;
/// `sctp_bindx(SCTP_BINDX_ADD_ADDR)`.
pub const SCTP_SOCKOPT_BINDX_ADD: libc::c_int = 100;
/// `sctp_connectx` (setsockopt flavour: returns the association id or an error).
pub const SCTP_SOCKOPT_CONNECTX: libc::c_int = 110;
/// `sctp_getpaddrs`.
pub const SCTP_GET_PEER_ADDRS: libc::c_int = 108;
/// `sctp_getladdrs`.
pub const SCTP_GET_LOCAL_ADDRS: libc::c_int = 109;

/// Notification types (`sn_type`).
pub const SCTP_ASSOC_CHANGE: u16 = 0x8001;
/// Peer address change notification.
pub const SCTP_PEER_ADDR_CHANGE: u16 = 0x8002;
/// Remote error notification.
pub const SCTP_REMOTE_ERROR: u16 = 0x8004;
/// Peer sent SHUTDOWN.
pub const SCTP_SHUTDOWN_EVENT: u16 = 0x8005;
/// Partial delivery aborted.
pub const SCTP_PARTIAL_DELIVERY_EVENT: u16 = 0x8006;
/// Send failed (RFC 6458 form).
pub const SCTP_SEND_FAILED_EVENT: u16 = 0x800d;

/// `sac_state` values.
pub const SCTP_COMM_UP: u16 = 0;
/// Association lost (timeouts, or an ABORT received).
pub const SCTP_COMM_LOST: u16 = 1;
/// Peer restarted.
pub const SCTP_RESTART: u16 = 2;
/// Graceful shutdown completed.
pub const SCTP_SHUTDOWN_COMP: u16 = 3;
/// Association could not be set up.
pub const SCTP_CANT_STR_ASSOC: u16 = 4;

/// `struct sctp_event` (RFC 6458 §6.2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SctpEvent {
    /// Association (0 = future / the one of a one-to-one socket).
    pub se_assoc_id: libc::sctp_assoc_t,
    /// Notification type.
    pub se_type: u16,
    /// 1 = on.
    pub se_on: u8,
}
const _: () = assert!(size_of::<SctpEvent>() == 8);

/// Notification header (`sn_header`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SctpNotificationHeader {
    /// Notification type.
    pub sn_type: u16,
    /// Type-specific flags.
    pub sn_flags: u16,
    /// Length of the whole notification.
    pub sn_length: u32,
}
const _: () = assert!(size_of::<SctpNotificationHeader>() == 8);

/// `struct sctp_assoc_change` without its trailing `sac_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SctpAssocChange {
    /// `SCTP_ASSOC_CHANGE`.
    pub sac_type: u16,
    /// Flags.
    pub sac_flags: u16,
    /// Length including `sac_info`.
    pub sac_length: u32,
    /// `SCTP_COMM_UP` …
    pub sac_state: u16,
    /// Error cause.
    pub sac_error: u16,
    /// Outbound streams.
    pub sac_outbound_streams: u16,
    /// Inbound streams.
    pub sac_inbound_streams: u16,
    /// Association id.
    pub sac_assoc_id: libc::sctp_assoc_t,
}
const _: () = assert!(size_of::<SctpAssocChange>() == 20);

/// `struct sctp_shutdown_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SctpShutdownEvent {
    /// `SCTP_SHUTDOWN_EVENT`.
    pub sse_type: u16,
    /// Flags.
    pub sse_flags: u16,
    /// Length.
    pub sse_length: u32,
    /// Association id.
    pub sse_assoc_id: libc::sctp_assoc_t,
}
const _: () = assert!(size_of::<SctpShutdownEvent>() == 12);

/// `struct sctp_send_failed_event` without its trailing data.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SctpSendFailedEvent {
    /// `SCTP_SEND_FAILED_EVENT`.
    pub ssf_type: u16,
    /// `SCTP_DATA_UNSENT` / `SCTP_DATA_SENT`.
    pub ssf_flags: u16,
    /// Length including the undelivered data.
    pub ssf_length: u32,
    /// Error.
    pub ssf_error: u32,
    /// The send info of the failed message.
    pub ssfe_info: libc::sctp_sndinfo,
    /// Association id.
    pub ssf_assoc_id: libc::sctp_assoc_t,
}
const _: () = assert!(size_of::<SctpSendFailedEvent>() == 32);

/// `struct sctp_getaddrs` header (the addresses follow it, packed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SctpGetAddrs {
    /// Input: association (0 on a one-to-one socket).
    pub assoc_id: libc::sctp_assoc_t,
    /// Output: number of addresses.
    pub addr_num: u32,
}
const _: () = assert!(size_of::<SctpGetAddrs>() == 8);

// Sizes of the libc structs this module relies on (same probe).
const _: () = assert!(size_of::<libc::sctp_initmsg>() == 8);
const _: () = assert!(size_of::<libc::sctp_sndinfo>() == 16);
const _: () = assert!(size_of::<libc::sctp_rcvinfo>() == 28);
const _: () = assert!(size_of::<libc::sockaddr_in>() == 16);
const _: () = assert!(size_of::<libc::sockaddr_in6>() == 28);

fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised `T` of `size_of::<T>()` bytes for the
    // duration of the call; the kernel only reads that many bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt_bytes(fd: BorrowedFd<'_>, name: libc::c_int, bytes: &[u8]) -> io::Result<i32> {
    let len = libc::socklen_t::try_from(bytes.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `bytes` is a live slice of `len` bytes; the kernel only reads that many.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), SOL_SCTP, name, bytes.as_ptr().cast(), len) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `setsockopt(level, name, int)`.
pub fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: i32,
) -> io::Result<()> {
    setsockopt(fd, level, name, &(v as libc::c_int))
}

/// `SCTP_NODELAY` on.
pub fn set_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(fd, SOL_SCTP, libc::SCTP_NODELAY, 1)
}

/// `SCTP_RECVRCVINFO` on: every user message comes with an `SCTP_RCVINFO` cmsg.
pub fn set_recvrcvinfo(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(fd, SOL_SCTP, libc::SCTP_RECVRCVINFO, 1)
}

/// `SCTP_INITMSG`: streams and INIT retransmission limits.
pub fn set_initmsg(
    fd: BorrowedFd<'_>,
    ostreams: u16,
    instreams: u16,
    max_attempts: u16,
    max_init_timeo_ms: u16,
) -> io::Result<()> {
    let m = libc::sctp_initmsg {
        sinit_num_ostreams: ostreams,
        sinit_max_instreams: instreams,
        sinit_max_attempts: max_attempts,
        sinit_max_init_timeo: max_init_timeo_ms,
    };
    setsockopt(fd, SOL_SCTP, libc::SCTP_INITMSG, &m)
}

/// `struct sctp_sack_info` (`SCTP_DELAYED_SACK`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SctpSackInfo {
    /// Association (0 = the socket's default, inherited by its association).
    pub sack_assoc_id: libc::sctp_assoc_t,
    /// Delayed-SACK timer in ms (0 = leave as it is).
    pub sack_delay: u32,
    /// Packets before a SACK is sent (1 = every packet: delayed SACK off).
    pub sack_freq: u32,
}

const _: () = assert!(size_of::<SctpSackInfo>() == 12);

/// `SCTP_DELAYED_SACK` with `sack_freq` 1: every DATA packet is acknowledged at once
/// (delayed SACK off). A peer whose process dies sends SHUTDOWN only after its last data
/// was acknowledged (`rsplib-measured.md` defect 1): with the 200 ms delayed SACK the loss
/// is seen up to 200 ms late.
pub fn set_sack_immediately(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_sack_freq(fd, 1)
}

/// `SCTP_DELAYED_SACK` with `sack_freq` `freq` and the delay left as it is (the
/// `net.sctp.sack_timeout` default, 200 ms, unless set): 1 acknowledges every DATA packet at
/// once, 2 every second packet (RFC 9260 §6.2: the delayed SACK, which also rides on the next
/// DATA we send).
pub fn set_sack_freq(fd: BorrowedFd<'_>, freq: u32) -> io::Result<()> {
    let v = SctpSackInfo {
        sack_assoc_id: 0,
        sack_delay: 0,
        sack_freq: freq,
    };
    setsockopt(fd, SOL_SCTP, libc::SCTP_DELAYED_SACK, &v)
}

/// `SCTP_DELAYED_SACK` as it stands: `sack_freq` (1 = every packet acknowledged at once) of
/// the socket's association (one-to-one) or defaults (listener).
pub fn sack_freq(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut v = SctpSackInfo {
        sack_assoc_id: 0,
        sack_delay: 0,
        sack_freq: 0,
    };
    let mut len = size_of::<SctpSackInfo>() as libc::socklen_t;
    // SAFETY: `v` is a live, writable `SctpSackInfo` of `len` bytes (the size the kernel
    // writes for this option, checked at compile time above); `len` is a valid in/out length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_SCTP,
            libc::SCTP_DELAYED_SACK,
            (&mut v as *mut SctpSackInfo).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v.sack_freq)
    }
}

/// Subscribes to one notification type with `SCTP_EVENT`.
pub fn subscribe(fd: BorrowedFd<'_>, sn_type: u16) -> io::Result<()> {
    let e = SctpEvent {
        se_assoc_id: 0,
        se_type: sn_type,
        se_on: 1,
    };
    setsockopt(fd, SOL_SCTP, SCTP_EVENT, &e)
}

/// Packs socket addresses the way `sctp_bindx`/`sctp_connectx` expect them: `sockaddr_in`
/// and `sockaddr_in6` back to back, without padding.
pub fn pack_addrs(addrs: &[SocketAddr]) -> Vec<u8> {
    let mut out = Vec::with_capacity(addrs.len() * size_of::<libc::sockaddr_in6>());
    for a in addrs {
        match a {
            SocketAddr::V4(a) => {
                out.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                out.extend_from_slice(&a.port().to_be_bytes());
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&[0; 8]);
            }
            SocketAddr::V6(a) => {
                out.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                out.extend_from_slice(&a.port().to_be_bytes());
                out.extend_from_slice(&a.flowinfo().to_be_bytes());
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.scope_id().to_ne_bytes());
            }
        }
    }
    out
}

/// Parses `count` packed socket addresses (inverse of [`pack_addrs`]); stops at anything
/// malformed.
pub fn unpack_addrs(mut bytes: &[u8], count: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    while out.len() < count {
        let Some(fam) = bytes.get(..2) else { break };
        let fam = u16::from_ne_bytes([fam[0], fam[1]]);
        let (addr, len) = if fam == libc::AF_INET as u16 {
            let Some(b) = bytes.get(..16) else { break };
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            (SocketAddr::V4(SocketAddrV4::new(ip, port)), 16)
        } else if fam == libc::AF_INET6 as u16 {
            let Some(b) = bytes.get(..28) else { break };
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[8..24]);
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            let ip = Ipv6Addr::from(ip);
            // Report v4-mapped peers of a dual-stack socket as IPv4.
            let addr = match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)),
            };
            (addr, 28)
        } else {
            break;
        };
        out.push(addr);
        bytes = bytes.get(len..).unwrap_or_default();
    }
    out
}

/// True when `fd` is readable now (`poll` with a zero timeout; never sleeps): for a listening
/// SCTP socket, an association waits to be accepted. Ask this instead of trying `accept` when
/// nothing may be pending: Linux's SCTP `accept` finding no association sleeps until the
/// next timer tick even on a non-blocking socket (`sctp_wait_for_accept` calls
/// `schedule_timeout(0)`, which arms a timer for the current jiffy and sleeps): 9.5 ms seen
/// in the VM, before the first message of the association just accepted was read.
pub fn readable_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid, initialised `pollfd` that lives through the call; nfds is 1;
    // a zero timeout makes the call return at once.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc > 0 && p.revents & libc::POLLIN != 0)
    }
}

/// `sctp_bindx(SCTP_BINDX_ADD_ADDR)`: adds local addresses to a bound socket.
pub fn bindx_add(fd: BorrowedFd<'_>, addrs: &[SocketAddr]) -> io::Result<()> {
    if addrs.is_empty() {
        return Ok(());
    }
    setsockopt_bytes(fd, SCTP_SOCKOPT_BINDX_ADD, &pack_addrs(addrs)).map(|_| ())
}

/// `sctp_connectx` on a non-blocking one-to-one socket: `Ok(())` when the association set-up
/// started (EINPROGRESS) or completed; completion is reported by `SCTP_COMM_UP`.
pub fn connectx(fd: BorrowedFd<'_>, addrs: &[SocketAddr]) -> io::Result<()> {
    match setsockopt_bytes(fd, SCTP_SOCKOPT_CONNECTX, &pack_addrs(addrs)) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    }
}

fn get_addrs(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<Vec<SocketAddr>> {
    // Room for 64 IPv6 addresses (RSPLIB's per-transport maximum), 8-byte aligned.
    let mut buf = [0u64; (8 + 64 * 28) / 8 + 1];
    let mut len = (buf.len() * 8) as libc::socklen_t;
    // SAFETY: `buf` is a live, writable buffer of `len` bytes; the kernel writes at most
    // `len` bytes and stores the length used in `len`. The first 8 bytes (assoc id 0 =
    // "the association of this one-to-one socket") are zero-initialised input.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_SCTP,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // The returned length is not usable: SCTP_GET_LOCAL_ADDRS leaves the 8-byte header out
    // of it, SCTP_GET_PEER_ADDRS counts it. Parse `addr_num` addresses from the zeroed buffer.
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let Some(head) = bytes.get(..8) else {
        return Ok(Vec::new());
    };
    let count = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]) as usize;
    Ok(unpack_addrs(bytes.get(8..).unwrap_or_default(), count))
}

/// `sctp_getpaddrs` for the association of a one-to-one socket.
pub fn peer_addrs(fd: BorrowedFd<'_>) -> io::Result<Vec<SocketAddr>> {
    get_addrs(fd, SCTP_GET_PEER_ADDRS)
}

/// `sctp_getladdrs` for the association (or the bound endpoint) of a socket.
pub fn local_addrs(fd: BorrowedFd<'_>) -> io::Result<Vec<SocketAddr>> {
    get_addrs(fd, SCTP_GET_LOCAL_ADDRS)
}

/// Writes one `SCTP_SNDINFO` cmsg into `control` and points `msg` at it.
fn put_sndinfo(msg: &mut libc::msghdr, control: &mut [u64; 4], ppid: u32, stream: u16, flags: u16) {
    let info = libc::sctp_sndinfo {
        snd_sid: stream,
        snd_flags: flags,
        snd_ppid: ppid.to_be(),
        snd_context: 0,
        snd_assoc_id: 0,
    };
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation on a constant.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::sctp_sndinfo>() as u32) } as usize;
    const { assert!(size_of::<libc::cmsghdr>() + size_of::<libc::sctp_sndinfo>() <= 32) };
    msg.msg_controllen = space.min(size_of::<[u64; 4]>());
    // SAFETY: `msg.msg_control` points to `control`, which is 32 bytes long (at least
    // `space`: checked above) and 8-byte aligned, so CMSG_FIRSTHDR returns a pointer to its
    // start (non-null since `msg_controllen >= size_of::<cmsghdr>()`), and CMSG_DATA of it
    // has room for the `sctp_sndinfo`. `write_unaligned` needs no alignment.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = SOL_SCTP;
        (*cmsg).cmsg_type = libc::SCTP_SNDINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::sctp_sndinfo>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::sctp_sndinfo>(), info);
    }
}

/// Sends one whole message with an `SCTP_SNDINFO` cmsg (PPID converted to network byte
/// order here). `MSG_DONTWAIT | MSG_NOSIGNAL`. Returns the bytes accepted (the whole message).
pub fn send_message(
    fd: BorrowedFd<'_>,
    ppid: u32,
    stream: u16,
    flags: u16,
    data: &[u8],
) -> io::Result<usize> {
    // 8-byte aligned room for one cmsg header (16) + sctp_sndinfo (16).
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    put_sndinfo(&mut msg, &mut control, ppid, stream, flags);
    // SAFETY: `msg` points to `iov` (covering `data`, only read by the kernel) and to
    // `control`, all alive for the call.
    let rc = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Most messages one [`send_messages`] / [`recv_messages`] call moves.
pub const MAX_BATCH: usize = 32;

/// One message for [`send_messages`].
#[derive(Clone, Copy, Debug)]
pub struct OutMessage<'a> {
    /// Payload protocol identifier (host order).
    pub ppid: u32,
    /// Stream id.
    pub stream: u16,
    /// The whole message.
    pub data: &'a [u8],
}

/// Sends up to [`MAX_BATCH`] whole messages with `sendmmsg(MSG_DONTWAIT | MSG_NOSIGNAL)`
/// (two calls for two or more: all but the last with `MSG_MORE`, so that they are bundled
/// into as few packets as possible), each with its own `SCTP_SNDINFO`. Returns how many were sent, in order
/// (fewer than given when the socket filled up or failed after the first: the caller sends
/// the rest again and sees `WouldBlock` or the error then). An error only when none was sent.
pub fn send_messages(fd: BorrowedFd<'_>, msgs: &[OutMessage<'_>]) -> io::Result<usize> {
    let n = msgs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut controls = [[0u64; 4]; MAX_BATCH];
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_BATCH];
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (((m, iov), control), h) in msgs
        .iter()
        .take(n)
        .zip(iovs.iter_mut())
        .zip(controls.iter_mut())
        .zip(hdrs.iter_mut())
    {
        *iov = libc::iovec {
            iov_base: m.data.as_ptr() as *mut libc::c_void,
            iov_len: m.data.len(),
        };
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        put_sndinfo(&mut h.msg_hdr, control, m.ppid, m.stream, 0);
    }
    // All but the last message with MSG_MORE, the last one without: the kernel bundles the
    // batch into as few packets as it can and sends it with the last message (Linux holds
    // data sent with MSG_MORE back until a send without it). In the VM this cut the
    // registrar's CPU per handle resolution from 43 to 12.5 µs. If the last send finds the
    // socket full, what was held back is less than one packet while the rest is in flight:
    // its SACKs make the socket writable, and the caller's retry of the last message
    // releases the held data.
    let more = n.saturating_sub(1);
    let mut sent = 0usize;
    for (start, count, flags) in [(0, more, libc::MSG_MORE), (more, n - more, 0)] {
        if count == 0 {
            continue;
        }
        let Some(h) = hdrs.get_mut(start..start + count) else {
            break;
        };
        // SAFETY: the first `n` headers point to their own `iovs` entry (covering a message
        // that is only read by the kernel) and `controls` entry; all arrays are alive for
        // the call and are not moved after the pointers were taken.
        let rc = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                h.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | flags,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if sent == 0 { Err(e) } else { Ok(sent) };
        }
        sent += rc as usize;
        if (rc as usize) < count {
            break;
        }
    }
    Ok(sent)
}

/// Receive info of one user message (from its `SCTP_RCVINFO` cmsg), PPID in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RcvInfo {
    /// Stream id.
    pub stream: u16,
    /// Payload protocol identifier (host order).
    pub ppid: u32,
    /// `rcv_flags` (`SCTP_UNORDERED`).
    pub flags: u16,
}

/// What one `recvmsg` returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Bytes written into the buffer.
    pub len: usize,
    /// `MSG_NOTIFICATION` was set: the bytes are a notification.
    pub notification: bool,
    /// `MSG_EOR` was set: this read ends a message (or notification).
    pub end_of_record: bool,
    /// The `SCTP_RCVINFO` cmsg, if present.
    pub info: Option<RcvInfo>,
}

/// The `SCTP_RCVINFO` cmsg of a message `recvmsg`/`recvmmsg` filled in.
fn rcvinfo(msg: &libc::msghdr) -> Option<RcvInfo> {
    let mut info = None;
    // SAFETY: the kernel set `msg_controllen` to the bytes of the control buffer it filled
    // (the buffer is alive: the caller still holds it); the CMSG_* macros walk only within
    // `[msg_control, msg_control + msg_controllen)` and return null at the end. We read the
    // payload only when `cmsg_len` covers a whole `sctp_rcvinfo`, with `read_unaligned`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == SOL_SCTP
                && c.cmsg_type == libc::SCTP_RCVINFO
                && c.cmsg_len >= libc::CMSG_LEN(size_of::<libc::sctp_rcvinfo>() as u32) as usize
            {
                let r =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::sctp_rcvinfo>());
                info = Some(RcvInfo {
                    stream: r.rcv_sid,
                    ppid: u32::from_be(r.rcv_ppid),
                    flags: r.rcv_flags,
                });
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    info
}

/// One `recvmsg(MSG_DONTWAIT)` into `buf`. `Ok(None)` = end of stream (association closed).
pub fn recv_message(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid `msghdr`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: `msg` points to `iov` (covering the writable `buf`) and to the writable
    // `control` buffer, with their true lengths; both outlive the call.
    let rc = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = rc as usize;
    let notification = msg.msg_flags & libc::MSG_NOTIFICATION != 0;
    if len == 0 && !notification {
        return Ok(None);
    }
    Ok(Some(Received {
        len,
        notification,
        end_of_record: msg.msg_flags & libc::MSG_EOR != 0,
        info: rcvinfo(&msg),
    }))
}

/// Up to `out.len()` (at most [`MAX_BATCH`]) `recvmsg`s in one `recvmmsg(MSG_DONTWAIT)`:
/// `buf` is cut into `out.len()` equal slots, message `i` lands in slot `i` (a message
/// longer than a slot arrives in pieces, as with a short `recvmsg`: `end_of_record` only on
/// the last). Returns how many entries of `out` were filled; an entry with `len == 0` that
/// is no notification is the end of the stream (and so are all entries after it). Fewer
/// entries than slots: the socket had no more at that moment (or failed after the first;
/// the kernel keeps that error for the next call). `WouldBlock` when nothing was there.
pub fn recv_messages(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    out: &mut [Received],
) -> io::Result<usize> {
    let n = out.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let slot = buf.len() / n;
    if slot == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "buffer too small",
        ));
    }
    let mut controls = [[0u64; 16]; MAX_BATCH];
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_BATCH];
    // SAFETY: all-zero is a valid `mmsghdr`.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (((chunk, iov), control), h) in buf
        .chunks_exact_mut(slot)
        .take(n)
        .zip(iovs.iter_mut())
        .zip(controls.iter_mut())
        .zip(hdrs.iter_mut())
    {
        *iov = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        };
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = control.as_mut_ptr().cast();
        h.msg_hdr.msg_controllen = size_of::<[u64; 16]>();
    }
    // SAFETY: the first `n` headers point to their own `iovs` entry (covering a disjoint,
    // writable slot of `buf`) and `controls` entry, with their true lengths; everything is
    // alive for the call and not moved after the pointers were taken. No timeout.
    let rc = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = (rc as usize).min(n);
    for (h, r) in hdrs.iter().take(got).zip(out.iter_mut()) {
        let m = &h.msg_hdr;
        *r = Received {
            len: (h.msg_len as usize).min(slot),
            notification: m.msg_flags & libc::MSG_NOTIFICATION != 0,
            end_of_record: m.msg_flags & libc::MSG_EOR != 0,
            info: rcvinfo(m),
        };
    }
    Ok(got)
}

/// A parsed notification (the ones the transport acts on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// `SCTP_ASSOC_CHANGE`; `with_abort` when the peer's ABORT chunk is attached (`sac_info`).
    AssocChange {
        /// `sac_state`.
        state: u16,
        /// `sac_error`.
        error: u16,
        /// True when `sac_length` says an ABORT chunk follows the fixed part.
        with_abort: bool,
    },
    /// `SCTP_SHUTDOWN_EVENT`: the peer sent SHUTDOWN.
    Shutdown,
    /// `SCTP_SEND_FAILED_EVENT`.
    SendFailed {
        /// `ssf_error`.
        error: u32,
    },
    /// Any other type.
    Other(u16),
}

/// Parses a notification from the bytes `recvmsg` returned (host byte order fields).
pub fn parse_notification(b: &[u8]) -> Option<Notification> {
    let t = u16::from_ne_bytes(b.get(..2)?.try_into().ok()?);
    let len = u32::from_ne_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    Some(match t {
        SCTP_ASSOC_CHANGE => {
            let state = u16::from_ne_bytes(b.get(8..10)?.try_into().ok()?);
            let error = u16::from_ne_bytes(b.get(10..12)?.try_into().ok()?);
            Notification::AssocChange {
                state,
                error,
                with_abort: len > size_of::<SctpAssocChange>(),
            }
        }
        SCTP_SHUTDOWN_EVENT => Notification::Shutdown,
        SCTP_SEND_FAILED_EVENT => Notification::SendFailed {
            error: u32::from_ne_bytes(b.get(8..12)?.try_into().ok()?),
        },
        other => Notification::Other(other),
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (one fd per association) and returns
/// the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid `rlimit`, only read.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// The program break: the end of the main heap, which `malloc` moves up as it needs room
/// (`None` if the C library cannot tell it).
pub fn program_break() -> Option<usize> {
    // SAFETY: `sbrk(0)` moves nothing; it returns the current break (or -1).
    let brk = unsafe { libc::sbrk(0) } as usize;
    (brk != usize::MAX).then_some(brk)
}

/// `MADV_POPULATE_WRITE` (Linux 5.14; libc does not name it yet).
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Maps the pages of `[from, to)` writable now, in one call (`MADV_POPULATE_WRITE`), rather
/// than one page fault at a time as they are first written. No byte changes; pages already
/// mapped stay as they are. `from` is rounded down to its page. The range must lie in mapped,
/// writable memory (else the kernel refuses it: `ENOMEM`, `EFAULT`); kernels before 5.14
/// refuse the call with `EINVAL`.
pub fn populate_write(from: usize, to: usize) -> io::Result<()> {
    // SAFETY: `sysconf` only reads a system value.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    };
    let start = from & !(page - 1);
    if to <= start {
        return Ok(());
    }
    // SAFETY: MADV_POPULATE_WRITE faults the range's pages in as a write to each would, and
    // writes nothing: no memory the program can see changes, whatever the range. (A range
    // that is not mapped and writable is refused with an error.)
    let r = unsafe { libc::madvise(start as *mut libc::c_void, to - start, MADV_POPULATE_WRITE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// While on, [`PrefaultingAllocator`] maps the memory it hands out in bulk.
static PREFAULT_ON: AtomicBool = AtomicBool::new(false);
/// The kernel refused `MADV_POPULATE_WRITE`: [`set_prefaulting`] switches nothing on again.
static PREFAULT_REFUSED: AtomicBool = AtomicBool::new(false);
/// The program break as [`PrefaultingAllocator`] last saw it (0: not yet).
static PREFAULT_BRK: AtomicUsize = AtomicUsize::new(0);
/// Blocks at least this large are populated whole when handed out: `malloc` serves them
/// from fresh `mmap`s (its threshold is 128 KiB and up) or from a grown heap.
const PREFAULT_BLOCK: usize = 64 << 10;

/// A global allocator over the system's (`malloc`) that maps fresh memory in bulk, before the
/// program writes it, while switched on ([`set_prefaulting`]; off at the start): whenever the
/// heap grows (the program break moved) the new stretch, and every block of 64 KiB or more,
/// is populated in one `MADV_POPULATE_WRITE` call ([`populate_write`]) instead of one page
/// fault at a time. Off for good once the kernel refuses the call.
///
/// Why: a registrar downloading its mentor's handlespace at start-up writes a few MB of fresh
/// memory in a burst, and a page fault costs ~50 µs in the User-Mode Linux VM of
/// `benches/vm-registrar` (the populating call 2-5 µs a page; on bare metal 2.4 against
/// 1.7 µs). `rspregistrar` switches it on for that download only: a populated block is
/// resident whole, also the part of a grown table or vector not filled yet, which would
/// otherwise stay unmapped until used (the memory per PE of a registrar whose PEs register
/// with it is not affected).
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: PrefaultingAllocator = PrefaultingAllocator;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PrefaultingAllocator;

/// Switches [`PrefaultingAllocator`] on or off (it starts off).
pub fn set_prefaulting(on: bool) {
    let on = on && !PREFAULT_REFUSED.load(Ordering::Relaxed);
    if on && !PREFAULT_ON.load(Ordering::Relaxed) {
        // The heap's growth is counted from now on.
        PREFAULT_BRK.store(program_break().unwrap_or(0), Ordering::Relaxed);
    }
    PREFAULT_ON.store(on, Ordering::Relaxed);
}

impl PrefaultingAllocator {
    /// After `[block, block + len)` was handed out: populates it if large, and the heap's
    /// growth since the last call.
    fn fresh(block: *mut u8, len: usize) {
        if block.is_null() || !PREFAULT_ON.load(Ordering::Relaxed) {
            return;
        }
        let mut ok = true;
        if len >= PREFAULT_BLOCK {
            ok &= populate_write(block as usize, block as usize + len).is_ok();
        }
        if let Some(now) = program_break() {
            let last = PREFAULT_BRK.swap(now, Ordering::Relaxed);
            if last != 0 && now > last {
                ok &= populate_write(last, now).is_ok();
            }
        }
        if !ok {
            // The kernel refuses it (before 5.14): nothing to gain, a call to lose each time.
            PREFAULT_REFUSED.store(true, Ordering::Relaxed);
            PREFAULT_ON.store(false, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call goes to `System` with the caller's arguments unchanged and returns what
// `System` returned; `fresh` only asks the kernel to map pages of memory `System` handed out
// (or the heap's own growth), which writes no byte, allocates nothing and cannot re-enter.
unsafe impl std::alloc::GlobalAlloc for PrefaultingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `GlobalAlloc::alloc`, passed on.
        let p = unsafe { std::alloc::System.alloc(layout) };
        Self::fresh(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `GlobalAlloc::alloc_zeroed`, passed on.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        Self::fresh(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract for `GlobalAlloc::dealloc`, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size >= PREFAULT_BLOCK
            && new_size > layout.size()
            && PREFAULT_ON.load(Ordering::Relaxed)
            && let Ok(new_layout) = std::alloc::Layout::from_size_align(new_size, layout.align())
        {
            // A large block grows: a new one, populated before the old contents are copied
            // into it (`realloc` would copy them into fresh pages a fault at a time).
            // SAFETY: `new_layout` has the caller's alignment and a size `realloc`'s contract
            // allows (non-zero, not overflowing when rounded up to that alignment).
            let p = unsafe { self.alloc(new_layout) };
            if !p.is_null() {
                // SAFETY: `ptr` holds `layout.size()` readable bytes (the caller's contract),
                // `p` at least as many writable ones, and the two blocks are distinct; `ptr`
                // is then freed with the layout it was allocated with.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size());
                    self.dealloc(ptr, layout);
                }
            }
            return p;
        }
        // SAFETY: the caller's contract for `GlobalAlloc::realloc`, passed on.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !p.is_null() && new_size > layout.size() {
            // The part beyond the old contents is what may be fresh.
            Self::fresh(p.wrapping_add(layout.size()), new_size - layout.size());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far (`/proc/thread-self/stat` field 10:
    /// the test harness runs other tests in other threads at the same time).
    fn thread_minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) may hold spaces; the fields after it do not.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(7).unwrap().parse().unwrap()
    }

    /// A fresh private anonymous mapping (no page of it touched yet), unmapped on drop.
    struct Fresh {
        addr: usize,
        len: usize,
    }

    impl Fresh {
        fn new(len: usize) -> Fresh {
            // SAFETY: a new private anonymous mapping at an address the kernel picks: no
            // existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Fresh {
                addr: p as usize,
                len,
            }
        }

        fn bytes(&mut self) -> &mut [u8] {
            // SAFETY: the mapping is `len` readable and writable bytes, owned by `self` and
            // borrowed mutably with it.
            unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
        }
    }

    impl Drop for Fresh {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, no longer borrowed.
            unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        }
    }

    #[test]
    fn populated_pages_take_no_fault_when_first_written_and_keep_their_bytes() {
        const LEN: usize = 4 << 20;
        let pages = (LEN / 4096) as u64;
        let mut m = Fresh::new(LEN);
        match populate_write(m.addr, m.addr + LEN) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                eprintln!("kernel without MADV_POPULATE_WRITE (before 5.14): nothing to test");
                return;
            }
            r => r.unwrap(),
        }
        let before = thread_minor_faults();
        m.bytes().fill(0x5a);
        let populated = thread_minor_faults() - before;
        assert!(
            populated < 16,
            "{populated} faults writing {pages} populated pages"
        );
        // The same without it: one fault per page (unless the kernel backs the mapping with
        // huge pages, as with transparent_hugepage=always).
        let thp_always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]"));
        if !thp_always {
            let mut plain_map = Fresh::new(LEN);
            let before = thread_minor_faults();
            plain_map.bytes().fill(0x5a);
            let plain = thread_minor_faults() - before;
            assert!(
                plain >= pages / 2,
                "{plain} faults writing {pages} fresh pages"
            );
        }
        // Populating written memory changes none of it (a range that starts inside a page
        // is rounded down to it), and an empty range is nothing to do.
        populate_write(m.addr + 100, m.addr + LEN).unwrap();
        assert!(m.bytes().iter().all(|&b| b == 0x5a));
        assert!(populate_write(m.addr, m.addr).is_ok());
        // The heap's break is an address, not sbrk's -1.
        assert!(program_break().is_some_and(|b| b > 0));
    }

    #[test]
    fn the_prefaulting_allocator_hands_out_mapped_memory_until_switched_off() {
        use std::alloc::{GlobalAlloc, Layout};
        const LEN: usize = 2 << 20;
        let pages = (LEN / 4096) as u64;
        let probe = Fresh::new(4096);
        if populate_write(probe.addr, probe.addr + 4096).is_err() {
            eprintln!("kernel without MADV_POPULATE_WRITE (before 5.14): nothing to test");
            return;
        }
        let a = PrefaultingAllocator;
        set_prefaulting(true);
        let write = |p: *mut u8, len: usize, v: u8| {
            let before = thread_minor_faults();
            // SAFETY: `p` is a live allocation of at least `len` bytes, used by nobody else.
            unsafe { std::ptr::write_bytes(p, v, len) };
            thread_minor_faults() - before
        };
        // A large block: written without a fault per page.
        let big = Layout::from_size_align(LEN, 8).unwrap();
        // SAFETY: a non-zero size; the block is freed below with the same layout.
        let p = unsafe { a.alloc(big) };
        assert!(!p.is_null());
        let faults = write(p, LEN, 0x11);
        assert!(faults < 16, "{faults} faults writing {pages} pages");
        // Grown from 64 KiB to 2 MiB: the contents move along, the new pages are mapped.
        let small = Layout::from_size_align(64 << 10, 8).unwrap();
        // SAFETY: as above.
        let q = unsafe { a.alloc(small) };
        write(q, 64 << 10, 0x22);
        // SAFETY: `q` was allocated with `small`; the new size is non-zero.
        let q = unsafe { a.realloc(q, small, LEN) };
        assert!(!q.is_null());
        // SAFETY: `q` holds LEN bytes, the first 64 KiB of which were written.
        let kept = unsafe { std::slice::from_raw_parts(q, 64 << 10) };
        assert!(kept.iter().all(|&b| b == 0x22));
        // SAFETY: as above, beyond the kept part.
        let faults = write(unsafe { q.add(64 << 10) }, LEN - (64 << 10), 0x33);
        assert!(faults < 16, "{faults} faults writing the grown part");
        // Switched off, it hands out what `malloc` does. (Whether that faults page by page
        // cannot be told here: the test harness's other threads free large blocks too, which
        // raises `malloc`'s mmap threshold for the whole process.)
        set_prefaulting(false);
        assert!(!PREFAULT_ON.load(Ordering::Relaxed));
        // SAFETY: as above.
        let r = unsafe { a.alloc(big) };
        assert!(!r.is_null());
        write(r, LEN, 0x44);
        // SAFETY: each block freed once, with the layout it was allocated with.
        unsafe {
            a.dealloc(p, big);
            a.dealloc(q, Layout::from_size_align(LEN, 8).unwrap());
            a.dealloc(r, big);
        }
    }

    #[test]
    fn pack_unpack_roundtrip() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:3863".parse().unwrap(),
            "[::1]:9901".parse().unwrap(),
            "10.1.2.3:1".parse().unwrap(),
        ];
        let packed = pack_addrs(&addrs);
        assert_eq!(packed.len(), 16 + 28 + 16);
        assert_eq!(unpack_addrs(&packed, 3), addrs);
        assert_eq!(unpack_addrs(&packed[..20], 3), addrs[..1].to_vec());
        assert_eq!(unpack_addrs(&[0xff; 40], 3), vec![]);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(
            unpack_addrs(&pack_addrs(&[mapped]), 1),
            vec!["127.0.0.1:5".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn notification_parsing() {
        let mut b = Vec::new();
        b.extend_from_slice(&SCTP_ASSOC_CHANGE.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&24u32.to_ne_bytes());
        b.extend_from_slice(&SCTP_COMM_LOST.to_ne_bytes());
        b.extend_from_slice(&7u16.to_ne_bytes());
        b.extend_from_slice(&[0; 12]);
        assert_eq!(
            parse_notification(&b),
            Some(Notification::AssocChange {
                state: SCTP_COMM_LOST,
                error: 7,
                with_abort: true
            })
        );
        assert_eq!(parse_notification(&b[..5]), None);
        let mut s = Vec::new();
        s.extend_from_slice(&SCTP_SHUTDOWN_EVENT.to_ne_bytes());
        s.extend_from_slice(&[0, 0, 12, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(parse_notification(&s), Some(Notification::Shutdown));
    }
}
