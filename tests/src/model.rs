//! The reference model and the XDP program, asked the same question.
//!
//! [`MapsPolicy`] lets the model (`msfilter_common::verdict::verdict`) consult exactly what the
//! datapath's maps hold, as mirrored by [`Datapath::installed`]. [`judge_kernel`] runs the
//! program on a frame through `BPF_PROG_TEST_RUN` and reads the reason it gave from the
//! reason counters; [`judge_model`] asks the model. Tests compare the two.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use msfilter::datapath::{Capacities, Datapath, Installed, LoadOptions, monotonic_ns};
use msfilter_common::{
    Addr, GroupKey, GroupState, Mode, Policy, Reason, SourceKey, Verdict, VlanKey,
    maps::ipv4_unmapped, unjoined, verdict::verdict,
};

use crate::netns::Netns;
use crate::packet::hex;

/// What the maps hold, as a policy for the model: the groups map's mirror and the VLAN map.
/// A listed source's pair entry carries its group's mode, as userspace writes it.
#[derive(Clone, Copy, Debug)]
pub struct MapsPolicy<'a>(
    pub &'a BTreeMap<GroupKey, Installed>,
    pub &'a BTreeMap<VlanKey, u32>,
);

impl Policy for MapsPolicy<'_> {
    fn vlan(&self, key: &VlanKey) -> Option<u32> {
        self.1.get(key).copied()
    }

    fn group(&self, key: &GroupKey) -> Option<GroupState> {
        self.0.get(key).map(|installed| installed.state)
    }

    fn source(&self, key: &SourceKey) -> Option<Mode> {
        self.0
            .get(&key.group_key())
            .filter(|installed| installed.sources.contains(&key.source))
            .map(|installed| installed.state.mode())
    }
}

/// Everything the program consults: the maps' groups and sources, and the drop-unjoined
/// state as it stands now (the interfaces' bits count only while the gate is closed).
#[derive(Clone, Debug)]
pub struct DatapathPolicy<'a> {
    pub maps: MapsPolicy<'a>,
    pub unjoined: BTreeMap<u32, u32>,
    pub gate_closed: bool,
}

impl Policy for DatapathPolicy<'_> {
    fn vlan(&self, key: &VlanKey) -> Option<u32> {
        self.maps.vlan(key)
    }

    fn group(&self, key: &GroupKey) -> Option<GroupState> {
        self.maps.group(key)
    }

    fn source(&self, key: &SourceKey) -> Option<Mode> {
        self.maps.source(key)
    }

    fn drops_unjoined(&self, ifindex: u32) -> u32 {
        if self.gate_closed {
            self.unjoined.get(&ifindex).copied().unwrap_or(0)
        } else {
            0
        }
    }
}

/// What `dp` holds now, as a policy for the model.
pub fn policy_of(dp: &Datapath) -> DatapathPolicy<'_> {
    let gate = dp.gate().expect("reading the drop-unjoined gate");
    DatapathPolicy {
        maps: MapsPolicy(dp.installed(), dp.vlans()),
        unjoined: dp.unjoined().expect("reading the drop-unjoined interfaces"),
        gate_closed: unjoined::gate_closed(
            gate.begun,
            gate.settled,
            gate.lease_until_ns,
            monotonic_ns(),
        ),
    }
}

/// Load the program with small maps (tests need few entries, and loading is faster).
pub fn load_datapath() -> Datapath {
    let options = LoadOptions {
        capacities: Capacities {
            max_groups: 256,
            max_sources: 4096,
        },
        pin_dir: None,
    };
    Datapath::load(&options).unwrap_or_else(|e| {
        panic!(
            "loading the XDP program failed (these tests need root and a BPF-capable kernel): {e}"
        )
    })
}

/// A new namespace with two interfaces, `d0` and `d1`, both up, and their indexes: for
/// tests where the ingress interface matters. They are the two ends of a veth pair (not
/// dummies: kernels without the dummy driver have veth, which the test bed needs anyway).
/// Run `test_run` for them inside the namespace (`Netns::run`).
pub fn two_interfaces(tag: &str) -> (Netns, u32, u32) {
    let ns = Netns::new(tag).expect("creating a namespace");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .expect("creating the veth pair d0/d1");
    for name in ["d0", "d1"] {
        ns.ip(&["link", "set", name, "up"])
            .expect("setting the interface up");
    }
    let d0 = ns.ifindex("d0").expect("index of d0");
    let d1 = ns.ifindex("d1").expect("index of d1");
    assert_ne!(d0, d1);
    (ns, d0, d1)
}

/// The model's verdict and reason for `frame` arriving on `ifindex`, under what `dp`'s maps
/// hold.
pub fn judge_model(dp: &Datapath, frame: &[u8], ifindex: u32) -> (Verdict, Reason) {
    verdict(frame, ifindex, &policy_of(dp))
}

/// The XDP program's verdict and reason for `frame` arriving on `ifindex` (which must exist
/// in the calling thread's network namespace). The reason is the one reason counter that
/// grew, by exactly one packet of the frame's length; anything else, or an XDP action that
/// does not match the reason, is an error describing what happened.
pub fn try_judge_kernel(
    dp: &Datapath,
    frame: &[u8],
    ifindex: u32,
) -> Result<(Verdict, Reason), String> {
    let counters = || {
        dp.reason_counters()
            .map_err(|e| format!("reading the reason counters: {e}"))
    };
    let before = counters()?;
    let action = dp
        .test_run(frame, Some(ifindex))
        .map_err(|e| format!("test run on ifindex {ifindex}: {e}"))?;
    let delta = counters()?.since(&before);

    let grown: Vec<_> = Reason::ALL
        .into_iter()
        .map(|r| (r, delta.get(r)))
        .filter(|(_, c)| c.packets != 0 || c.bytes != 0)
        .collect();
    let reason = match grown.as_slice() {
        [(reason, c)] if c.packets == 1 && c.bytes == frame.len() as u64 => *reason,
        _ => {
            return Err(format!(
                "expected exactly one reason counter to grow by 1 packet and {} bytes, got {grown:?}",
                frame.len()
            ));
        }
    };
    let verdict = Verdict::from_action(action)
        .ok_or_else(|| format!("XDP action {action} is neither DROP nor PASS ({reason:?})"))?;
    if verdict != reason.verdict() {
        return Err(format!(
            "XDP action {verdict:?} does not match the counted reason {reason:?}"
        ));
    }
    Ok((verdict, reason))
}

/// [`try_judge_kernel`], failing the test with the frame in hex if the counters or the action
/// are inconsistent.
pub fn judge_kernel(dp: &Datapath, frame: &[u8], ifindex: u32) -> (Verdict, Reason) {
    try_judge_kernel(dp, frame, ifindex)
        .unwrap_or_else(|e| panic!("{e}\nframe ({} bytes): {}", frame.len(), hex(frame)))
}

/// An address as people write it (IPv4-mapped addresses as dotted quads).
pub fn addr_to_string(addr: &Addr) -> String {
    match ipv4_unmapped(addr) {
        Some(v4) => Ipv4Addr::from(v4).to_string(),
        None => Ipv6Addr::from(*addr).to_string(),
    }
}

/// What the maps hold, one group per line: `if 3 232.1.1.1 Exclude {10.0.0.1, ...}`.
pub fn policy_summary(installed: &BTreeMap<GroupKey, Installed>) -> String {
    if installed.is_empty() {
        return "(no groups)".to_string();
    }
    let mut out = String::new();
    for (key, group) in installed {
        let sources: Vec<_> = group.sources.iter().map(addr_to_string).collect();
        let _ = writeln!(
            out,
            "if {} {} {:?} {{{}}}",
            key.ifindex,
            addr_to_string(&key.group),
            group.state.mode(),
            sources.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use msfilter_common::maps::ipv4_mapped;

    use super::*;

    #[test]
    fn listed_sources_carry_their_groups_mode() {
        let group = ipv4_mapped([232, 1, 1, 1]);
        let source = ipv4_mapped([10, 0, 0, 1]);
        let key = GroupKey::new(3, group);
        let mut installed = BTreeMap::new();
        installed.insert(
            key,
            Installed {
                state: GroupState::new(Mode::Exclude),
                sources: BTreeSet::from([source]),
            },
        );
        let vlans = BTreeMap::from([(VlanKey::new(3, 100), 5)]);
        let policy = MapsPolicy(&installed, &vlans);
        assert_eq!(policy.vlan(&VlanKey::new(3, 100)), Some(5));
        assert_eq!(policy.vlan(&VlanKey::new(3, 101)), None);
        assert_eq!(policy.group(&key), Some(GroupState::new(Mode::Exclude)));
        assert_eq!(policy.group(&GroupKey::new(4, group)), None);
        assert_eq!(
            policy.source(&SourceKey::new(3, group, source)),
            Some(Mode::Exclude)
        );
        assert_eq!(policy.source(&SourceKey::new(3, group, group)), None);
        assert_eq!(policy.source(&SourceKey::new(4, group, source)), None);
        assert_eq!(
            policy_summary(&installed),
            "if 3 232.1.1.1 Exclude {10.0.0.1}\n"
        );
        assert_eq!(
            addr_to_string(&[0xff; 16]),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }
}
