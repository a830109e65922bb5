//! Packet trace (`msfilter trace`): what the XDP program and userspace share.
//!
//! The program holds a switch, [`TraceControl`] in the one-element array
//! [`TRACE_CONTROL_MAP`]. While it is off (the default) a frame costs one load and one
//! branch more than without tracing. While it is on, every frame that [`TraceControl::selects`]
//! (interface, group, one in `sample_one_in`) is written to the ring buffer
//! [`TRACE_EVENTS_MAP`] as a [`TraceEvent`]: interface, group, source, verdict, reason and
//! length. A full ring buffer loses the event and counts it in [`TraceControl::lost`].
//!
//! The read-only global [`TRACE_CAPABLE_GLOBAL`] (1 in the object) lets a loader remove the
//! trace path entirely: loaded as 0, the verifier proves the branch dead and drops it. The
//! product always loads it as 1, so a trace needs no reload; the benchmark loads both to
//! measure what the switch costs while off.

use crate::{Reason, Verdict, maps::Addr};

/// One-element array holding the [`TraceControl`] switch.
pub const TRACE_CONTROL_MAP: &str = "MSF_TRACE_CTL";
/// Ring buffer of [`TraceEvent`]s.
pub const TRACE_EVENTS_MAP: &str = "MSF_TRACE";
/// Ring buffer size: 256 KiB, about 4,600 events in flight.
pub const TRACE_RING_BYTES: u32 = 256 * 1024;
/// Name of the read-only global (`u8`) that keeps the trace path in the program (1) or lets
/// the verifier remove it (0).
pub const TRACE_CAPABLE_GLOBAL: &str = "MSF_TRACE_CAPABLE";

/// The trace switch and its selection, written by `msfilter trace`, read by every frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TraceControl {
    /// 0: off. Anything else: on.
    pub enabled: u32,
    /// Only frames received on this interface; 0: every interface.
    pub ifindex: u32,
    /// Trace one frame in this many (chosen at random); 0 and 1: every frame.
    pub sample_one_in: u32,
    /// 1: only frames to [`Self::group`] (frames the program could not parse far enough to
    /// know their group are then never traced).
    pub match_group: u32,
    /// The group, as the maps hold addresses (IPv4 as IPv4-mapped).
    pub group: Addr,
    /// The process that owns the trace (one trace at a time).
    pub owner_pid: u32,
    pub reserved: u32,
    /// Events the ring buffer had no room for (added by the program, atomically).
    pub lost: u64,
}

impl TraceControl {
    /// Whether a frame on `ifindex` to `group` (`None`: unknown, the frame was not parsed
    /// that far) is traced, before sampling. The XDP program applies the same rule on
    /// 32-bit words.
    pub fn selects(&self, ifindex: u32, group: Option<&Addr>) -> bool {
        if self.enabled == 0 || (self.ifindex != 0 && self.ifindex != ifindex) {
            return false;
        }
        self.match_group == 0 || group == Some(&self.group)
    }
}

/// One traced frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TraceEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the frame was judged.
    pub time_ns: u64,
    /// The interface whose entries judged the frame: the ingress interface, or the VLAN
    /// sub-interface its outer 802.1Q tag maps to (`verdict::judging_interface`).
    pub ifindex: u32,
    /// Frame length in bytes.
    pub len: u32,
    /// The [`Reason`] (index).
    pub reason: u8,
    /// 1: `group` and `source` hold the frame's addresses (the frame was parsed as a
    /// multicast datagram). 0: they are zero.
    pub addressed: u8,
    pub reserved: [u8; 6],
    pub group: Addr,
    pub source: Addr,
}

impl TraceEvent {
    pub fn reason(&self) -> Option<Reason> {
        Reason::from_index(u32::from(self.reason))
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.reason().map(Reason::verdict)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), no padding (checked by the size tests below and by bytemuck's derive).
    unsafe impl aya::Pod for super::TraceControl {}
    unsafe impl aya::Pod for super::TraceEvent {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;
    use crate::maps::ipv4_mapped;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<TraceControl>(), 48);
        assert_eq!(offset_of!(TraceControl, group), 16);
        assert_eq!(offset_of!(TraceControl, lost), 40);
        assert_eq!(size_of::<TraceEvent>(), 56);
        assert_eq!(offset_of!(TraceEvent, group), 24);
        assert_eq!(offset_of!(TraceEvent, source), 40);
    }

    #[test]
    fn selection_by_interface_and_group() {
        let g = ipv4_mapped([232, 1, 1, 1]);
        let other = ipv4_mapped([232, 1, 1, 2]);
        let off = TraceControl::default();
        assert!(!off.selects(3, Some(&g)));

        let any = TraceControl {
            enabled: 1,
            ..TraceControl::default()
        };
        assert!(any.selects(3, Some(&g)) && any.selects(9, None));

        let on_3 = TraceControl { ifindex: 3, ..any };
        assert!(on_3.selects(3, None) && !on_3.selects(4, Some(&g)));

        let group_g = TraceControl {
            match_group: 1,
            group: g,
            ..on_3
        };
        assert!(group_g.selects(3, Some(&g)));
        assert!(!group_g.selects(3, Some(&other)));
        assert!(
            !group_g.selects(3, None),
            "a frame of unknown group is not traced"
        );
        assert!(!group_g.selects(4, Some(&g)));
    }

    #[test]
    fn events_name_their_verdict() {
        let e = TraceEvent {
            reason: Reason::Excluded as u8,
            ..TraceEvent::default()
        };
        assert_eq!(e.reason(), Some(Reason::Excluded));
        assert_eq!(e.verdict(), Some(Verdict::Drop));
        let bad = TraceEvent {
            reason: 200,
            ..TraceEvent::default()
        };
        assert_eq!(bad.reason(), None);
    }
}
