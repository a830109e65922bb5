//! What each hook does.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr,
};

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
            bpf_sk_storage_get,
        },
    },
    programs::{SockContext, SockoptContext},
};
use msfilter_common::{
    follow::{
        EVENT_RELEASE, EVENT_SETSOCKOPT, Event, HOOK_ID_BIT, OPTVAL_PREFIX, SockStore, SocketSeq,
        Stat, is_membership_option,
    },
    unjoined::GATE_BEGUN,
};

use crate::maps::{
    MSF_FOLLOW_EVENTS, MSF_FOLLOW_NETNS_COOKIE, MSF_FOLLOW_SOCKETS, MSF_FOLLOW_SOCKID,
    MSF_FOLLOW_STATS, MSF_UNJOINED_GATE,
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const NOEXIST: u64 = 1;

#[inline(always)]
fn count(stat: Stat) {
    if let Some(slot) = MSF_FOLLOW_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *slot += 1 };
    }
}

/// Whether the context's socket belongs to the followed network namespace.
#[inline(always)]
fn followed_namespace(ctx: *mut c_void) -> bool {
    // SAFETY: the helper reads the context's socket's namespace; the global is read-only
    // data set by the loader (read volatile so the compiler does not fold the 0 in).
    unsafe { bpf_get_netns_cookie(ctx) == ptr::read_volatile(&raw const MSF_FOLLOW_NETNS_COOKIE) }
}

#[inline(always)]
fn sock_store_map() -> *mut c_void {
    ptr::from_ref(&MSF_FOLLOW_SOCKID).cast_mut().cast()
}

/// `cgroup/setsockopt`: a membership option is about to be handled.
#[inline(always)]
pub(crate) fn setsockopt(ctx: &SockoptContext) {
    // SAFETY: the kernel's context for this program type.
    let opt = unsafe { &*ctx.sockopt };
    let (level, optname) = (opt.level, opt.optname);
    if !is_membership_option(level, optname) || !followed_namespace(ctx.as_ptr()) {
        return;
    }
    // SAFETY: reading the context's socket pointer (a union holding only the pointer).
    let sk = unsafe { opt.__bindgen_anon_1.sk };
    // SAFETY: the socket is the context's; the helper creates zeroed storage if none.
    let store = unsafe {
        bpf_sk_storage_get(
            sock_store_map(),
            sk.cast(),
            ptr::null_mut(),
            u64::from(BPF_SK_STORAGE_GET_F_CREATE),
        )
    }
    .cast::<SockStore>();
    let mut event = Event::ZERO;
    if store.is_null() {
        // No memory for the storage: the follower cannot name this socket. The event (id 0)
        // still says which process changed some socket.
        count(Stat::Untracked);
    } else {
        // SAFETY: socket-local storage of this socket, valid while the program runs.
        let id = unsafe { (*store).id };
        event.id = if id == 0 {
            // SAFETY: no arguments.
            let fresh = HOOK_ID_BIT
                | (u64::from(unsafe { bpf_get_prandom_u32() }) << 32)
                | u64::from(unsafe { bpf_get_prandom_u32() });
            // SAFETY: as above.
            unsafe { (*store).id = fresh };
            fresh
        } else {
            id
        };
        event.seq = begin(event.id);
    }
    event.pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: no arguments.
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    event.kind = EVENT_SETSOCKOPT;
    event.level = level;
    event.optname = optname;
    event.optlen = opt.optlen;
    // SAFETY: the kernel's copy of the option value, bounded by `optval_end`.
    let (start, end) = unsafe {
        (
            opt.__bindgen_anon_2.optval.cast::<u8>().cast_const(),
            opt.__bindgen_anon_3.optval_end.cast::<u8>().cast_const(),
        )
    };
    event.copied = copy_prefix(start, end, &mut event.optval);
    emit(&event);
    open_gate();
}

/// One more option in flight for drop-unjoined (`msfilter_common::unjoined`): counted after
/// its event is out, so a follower that read the count has the events it covers.
#[inline(always)]
fn open_gate() {
    if let Some(begun) = MSF_UNJOINED_GATE.get_ptr_mut(GATE_BEGUN) {
        // SAFETY: an element of an array map, 8-byte aligned; shared by all CPUs.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(begun, 1) };
    }
}

/// Count one more begun option on socket `id` and return the new count (0 if the socket
/// cannot be tracked).
#[inline(always)]
fn begin(id: u64) -> u64 {
    if let Some(seq) = add_begun(id) {
        return seq;
    }
    if MSF_FOLLOW_SOCKETS
        .insert(id, SocketSeq { begun: 1 }, NOEXIST)
        .is_ok()
    {
        return 1;
    }
    // Another CPU inserted it meanwhile, or the map is full.
    add_begun(id).unwrap_or_else(|| {
        count(Stat::Untracked);
        0
    })
}

#[inline(always)]
fn add_begun(id: u64) -> Option<u64> {
    let seq = MSF_FOLLOW_SOCKETS.get_ptr_mut(id)?;
    // SAFETY: a map value, 8-byte aligned, valid while the program runs; another CPU may add
    // to it concurrently, hence the atomic add. Reading it back after the add gives a count
    // that includes this option (perhaps also a concurrent one: the follower keeps the
    // highest it saw).
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*seq).begun, 1);
        Some(ptr::read_volatile(&raw const (*seq).begun))
    }
}

/// Copy the largest of a few prefix lengths that the value holds (the verifier needs each
/// read's bounds as constants); returns the bytes copied.
#[inline(always)]
fn copy_prefix(start: *const u8, end: *const u8, out: &mut [u8; OPTVAL_PREFIX]) -> u32 {
    macro_rules! try_copy {
        ($n:expr) => {
            if start.wrapping_add($n) <= end {
                // SAFETY: [start, start + n) lies within the option value (checked above).
                let bytes = unsafe { ptr::read_unaligned(start.cast::<[u8; $n]>()) };
                out[..$n].copy_from_slice(&bytes);
                return $n;
            }
        };
    }
    try_copy!(48);
    try_copy!(32);
    try_copy!(20);
    try_copy!(16);
    try_copy!(12);
    try_copy!(8);
    try_copy!(4);
    0
}

/// `cgroup/sock_release`: forget a followed socket and report it.
#[inline(always)]
pub(crate) fn released(ctx: &SockContext) {
    let sk = ctx.as_ptr();
    if !followed_namespace(sk) {
        return;
    }
    // SAFETY: the context is the socket; no creation (flags 0).
    let store =
        unsafe { bpf_sk_storage_get(sock_store_map(), sk, ptr::null_mut(), 0) }.cast::<SockStore>();
    if store.is_null() {
        return;
    }
    let mut event = Event::ZERO;
    // SAFETY: socket-local storage of this socket, valid while the program runs.
    event.id = unsafe { (*store).id };
    let _ = MSF_FOLLOW_SOCKETS.remove(event.id);
    count(Stat::Closes);
    // SAFETY: the helper reads (or assigns) the context socket's cookie.
    event.cookie = unsafe { bpf_get_socket_cookie(sk) };
    event.pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: no arguments.
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    event.kind = EVENT_RELEASE;
    emit(&event);
}

#[inline(always)]
fn emit(event: &Event) {
    match MSF_FOLLOW_EVENTS.output::<Event>(event, 0) {
        Ok(()) => count(Stat::Events),
        Err(_) => count(Stat::Lost),
    }
}
