//! Map keys and values, byte for byte as the kernel stores them.
//!
//! Every type is `#[repr(C)]` with explicit reserved bytes where alignment would otherwise
//! insert padding, so that hashing (which covers every key byte) and `Pod` are sound. The
//! size tests at the bottom pin the layouts.
//!
//! Addresses are 16 bytes in network order: IPv6 as is, IPv4 as IPv4-mapped
//! (`::ffff:a.b.c.d`, see [`ipv4_mapped`]). One key shape serves both families; the group
//! address tells them apart (IPv4 groups are `::ffff:224.0.0.0/100`, IPv6 groups `ff00::/8`).

/// An IP address as stored in keys (16 bytes, network order; IPv4 is IPv4-mapped).
pub type Addr = [u8; 16];

/// Filter mode of a group on an interface (RFC 3376 §3.2 / RFC 3810 §4.2).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "lowercase"))]
pub enum Mode {
    /// Only the listed sources are wanted; every other source is dropped.
    Include = 0,
    /// Every source is wanted except the listed ones, which are dropped.
    Exclude = 1,
}

/// The filter mode of a group, in one byte (bit 0: 1 = EXCLUDE; the other bits are zero).
///
/// One byte so that a reader on another CPU never sees a torn value while userspace rewrites
/// the per-CPU values.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GroupState(pub u8);

impl GroupState {
    const EXCLUDE_BIT: u8 = 0b01;

    #[inline(always)]
    pub const fn new(mode: Mode) -> Self {
        match mode {
            Mode::Include => Self(0),
            Mode::Exclude => Self(Self::EXCLUDE_BIT),
        }
    }

    #[inline(always)]
    pub const fn mode(self) -> Mode {
        if self.0 & Self::EXCLUDE_BIT != 0 {
            Mode::Exclude
        } else {
            Mode::Include
        }
    }
}

/// Packets and bytes (bytes = whole frame length as seen by XDP).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub const ZERO: Self = Self {
        packets: 0,
        bytes: 0,
    };

    #[inline(always)]
    pub const fn add(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }

    /// Sum of two counters (for adding up per-CPU values).
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// Key of the groups map: a multicast group on an ingress interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GroupKey {
    pub ifindex: u32,
    pub group: Addr,
}

impl GroupKey {
    #[inline(always)]
    pub const fn new(ifindex: u32, group: Addr) -> Self {
        Self { ifindex, group }
    }
}

/// Value of the groups map (a per-CPU map: each CPU has its own copy). The program reads it
/// only for frames whose source has no pair entry ([`SourceValue`]).
///
/// Userspace writes `state` and `published` into every CPU's copy at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GroupValue {
    pub state: GroupState,
    pub reserved: [u8; 3],
    /// The publication epoch (`limits::EPOCH_MAP`) of the write that last set `state`
    /// together with new pair entries. A frame that began in an earlier epoch and found no
    /// pair entry looks again (see `limits::EPOCH_MAP`).
    pub published: u32,
    /// Frames of this group without a pair entry that XDP passed.
    pub passed: Counter,
    /// Frames of this group without a pair entry that XDP dropped.
    pub dropped: Counter,
}

impl GroupValue {
    pub const fn new(state: GroupState, published: u32) -> Self {
        Self {
            state,
            reserved: [0; 3],
            published,
            passed: Counter::ZERO,
            dropped: Counter::ZERO,
        }
    }
}

/// Whether a group value was published after `epoch` (the epoch a frame began in). Epochs
/// wrap; a frame lasts far fewer than 2³¹ publications.
#[inline(always)]
pub const fn published_after(published: u32, epoch: u32) -> bool {
    (published.wrapping_sub(epoch) as i32) > 0
}

/// Key of the pairs map: one listed source of a group on an interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SourceKey {
    pub ifindex: u32,
    pub group: Addr,
    pub source: Addr,
}

impl SourceKey {
    #[inline(always)]
    pub const fn new(ifindex: u32, group: Addr, source: Addr) -> Self {
        Self {
            ifindex,
            group,
            source,
        }
    }

    pub const fn group_key(&self) -> GroupKey {
        GroupKey::new(self.ifindex, self.group)
    }
}

/// Key of the IPv4 groups map: [`GroupKey`] of an IPv4 group, 8 bytes instead of 20 (the
/// kernel hashes and compares every key byte on every lookup).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GroupKey4 {
    pub ifindex: u32,
    pub group: [u8; 4],
}

impl GroupKey4 {
    /// The IPv4 form of `key`, if its group is IPv4.
    pub const fn of(key: &GroupKey) -> Option<Self> {
        match ipv4_unmapped(&key.group) {
            Some(group) => Some(Self {
                ifindex: key.ifindex,
                group,
            }),
            None => None,
        }
    }

    pub const fn key(&self) -> GroupKey {
        GroupKey::new(self.ifindex, ipv4_mapped(self.group))
    }
}

/// Key of the IPv4 pairs map: [`SourceKey`] of an IPv4 group, 12 bytes instead of 36.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SourceKey4 {
    pub ifindex: u32,
    pub group: [u8; 4],
    pub source: [u8; 4],
}

impl SourceKey4 {
    /// The IPv4 form of `key`, if its group and source are IPv4.
    pub const fn of(key: &SourceKey) -> Option<Self> {
        match (ipv4_unmapped(&key.group), ipv4_unmapped(&key.source)) {
            (Some(group), Some(source)) => Some(Self {
                ifindex: key.ifindex,
                group,
                source,
            }),
            _ => None,
        }
    }

    pub const fn key(&self) -> SourceKey {
        SourceKey::new(
            self.ifindex,
            ipv4_mapped(self.group),
            ipv4_mapped(self.source),
        )
    }
}

/// Value of the pairs map: the mode under which the group lists this source (so the entry
/// alone decides the frame: EXCLUDE drops, INCLUDE passes) and the frames it matched. Shared
/// by all CPUs and incremented with atomic adds: one source's flow normally stays on one
/// receive queue, so the cache line rarely moves.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SourceValue {
    pub listed: GroupState,
    pub reserved: [u8; 7],
    pub matched: Counter,
}

impl SourceValue {
    pub const fn new(mode: Mode) -> Self {
        Self {
            listed: GroupState::new(mode),
            reserved: [0; 7],
            matched: Counter::ZERO,
        }
    }
}

/// Value of the retired-counters map (`limits::RETIRED_MAP`): frames counted by a group's
/// pair entries that were since deleted or relisted, by verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Retired {
    pub passed: Counter,
    pub dropped: Counter,
}

/// Key of the VLAN map ([`crate::limits::VLANS_MAP`]): a VLAN on the interface the program
/// runs on (the parent of an 802.1Q sub-interface). The value is the sub-interface's index:
/// a frame whose outer 802.1Q tag carries `vid` and that arrives on `ifindex` is judged by
/// the sub-interface's group and source entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct VlanKey {
    pub ifindex: u32,
    /// The VLAN id (0–4095).
    pub vid: u16,
    pub reserved: u16,
}

impl VlanKey {
    #[inline(always)]
    pub const fn new(ifindex: u32, vid: u16) -> Self {
        Self {
            ifindex,
            vid,
            reserved: 0,
        }
    }
}

/// Offsets the XDP program relies on when it writes keys as 32-bit words (every address
/// field is 4-byte aligned).
pub mod word_offsets {
    use core::mem::offset_of;

    use super::{GroupKey, GroupKey4, SourceKey, SourceKey4, VlanKey};

    pub const GROUP_KEY_GROUP: usize = offset_of!(GroupKey, group);
    pub const SOURCE_KEY_GROUP: usize = offset_of!(SourceKey, group);
    pub const SOURCE_KEY_SOURCE: usize = offset_of!(SourceKey, source);

    const _: () = assert!(GROUP_KEY_GROUP == 4 && size_of::<GroupKey>() == 20);
    const _: () = assert!(SOURCE_KEY_GROUP == 4 && SOURCE_KEY_SOURCE == 20);
    const _: () = assert!(size_of::<SourceKey>() == 36);
    // VlanKey as two words: ifindex, then the VLAN id in the low half (little-endian).
    pub const VLAN_KEY_VID: usize = offset_of!(VlanKey, vid);
    const _: () = assert!(VLAN_KEY_VID == 4 && size_of::<VlanKey>() == 8);
    // The IPv4 keys as two and three words: ifindex, group, source.
    const _: () = assert!(offset_of!(GroupKey4, group) == 4 && size_of::<GroupKey4>() == 8);
    const _: () =
        assert!(offset_of!(SourceKey4, group) == 4 && offset_of!(SourceKey4, source) == 8);
    const _: () = assert!(size_of::<SourceKey4>() == 12);
}

/// IPv4 address as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn ipv4_mapped(a: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// The IPv4 address inside an IPv4-mapped address, if it is one.
pub const fn ipv4_unmapped(a: &Addr) -> Option<[u8; 4]> {
    if a[0] == 0
        && a[1] == 0
        && a[2] == 0
        && a[3] == 0
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
    {
        Some([a[12], a[13], a[14], a[15]])
    } else {
        None
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C)/repr(transparent) plain data without implicit padding
    // (checked by the size tests below and by bytemuck's derive).
    unsafe impl aya::Pod for super::GroupKey {}
    unsafe impl aya::Pod for super::GroupValue {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::GroupKey4 {}
    unsafe impl aya::Pod for super::SourceKey4 {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::SourceValue {}
    unsafe impl aya::Pod for super::Retired {}
    unsafe impl aya::Pod for super::VlanKey {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // Sum of field sizes == struct size means no padding anywhere.
        assert_eq!(size_of::<GroupKey>(), 4 + 16);
        assert_eq!(size_of::<GroupValue>(), 1 + 3 + 4 + 16 + 16);
        assert_eq!(size_of::<SourceKey>(), 4 + 16 + 16);
        assert_eq!(size_of::<SourceValue>(), 1 + 7 + 16);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<VlanKey>(), 4 + 2 + 2);
        assert_eq!(size_of::<GroupState>(), 1);
        assert_eq!(align_of::<GroupValue>(), 8);
        assert_eq!(align_of::<SourceKey>(), 4);
    }

    #[test]
    fn ipv4_keys_are_compact_and_round_trip() {
        assert_eq!(size_of::<GroupKey4>(), 8);
        assert_eq!(size_of::<SourceKey4>(), 12);
        let g = ipv4_mapped([232, 1, 2, 3]);
        let s = ipv4_mapped([10, 0, 0, 9]);
        let key = SourceKey::new(7, g, s);
        assert_eq!(SourceKey4::of(&key).unwrap().key(), key);
        let group = GroupKey::new(7, g);
        assert_eq!(GroupKey4::of(&group).unwrap().key(), group);
        let mut v6 = [0u8; 16];
        v6[0] = 0xff;
        assert_eq!(GroupKey4::of(&GroupKey::new(7, v6)), None);
        assert_eq!(SourceKey4::of(&SourceKey::new(7, v6, s)), None);
    }

    #[test]
    fn group_state_round_trips() {
        for mode in [Mode::Include, Mode::Exclude] {
            assert_eq!(GroupState::new(mode).mode(), mode);
        }
        assert_eq!(GroupState(0).mode(), Mode::Include);
        // Bit 1 was an earlier layout's generation; it does not change the mode.
        assert_eq!(GroupState(0b11).mode(), Mode::Exclude);
    }

    #[test]
    fn publication_epochs_compare_across_the_wrap() {
        assert!(published_after(5, 4));
        assert!(!published_after(4, 4));
        assert!(!published_after(3, 4));
        assert!(published_after(1, u32::MAX));
        assert!(!published_after(u32::MAX, 1));
    }

    #[test]
    fn ipv4_mapping_round_trips() {
        let a = ipv4_mapped([232, 1, 2, 3]);
        assert_eq!(ipv4_unmapped(&a), Some([232, 1, 2, 3]));
        let mut v6 = [0u8; 16];
        v6[0] = 0xff;
        assert_eq!(ipv4_unmapped(&v6), None);
    }
}
