//! Network interfaces as msfilter sees them, through rtnetlink and `bpf(2)`: the requests
//! aya 0.14 does not offer.
//!
//! * [`resolve`] / [`name_of`]: names and indexes (`names.rs`).
//! * [`xdp`]: which XDP program holds an interface and in which mode, what that program is,
//!   the bpf_link it is attached through, attaching through netlink and removing it.
//! * [`monitor`]: every interface of the namespace, and interfaces coming, going and being
//!   renamed ([`LinkMonitor`]).
//! * [`groups`]: the multicast groups the kernel has joined on each interface
//!   (`/proc/net/igmp*`), with their membership counts and the IGMP version in use.
//! * [`vlan`]: whether an interface is an 802.1Q VLAN sub-interface, of which parent and VLAN.
//! * [`xdp_features`]: what XDP each driver supports, as the kernel reports it (the
//!   `netdev` generic-netlink family).
//! * `netlink.rs`: the sockets, requests, messages and attributes underneath.
//!
//! Interface indexes are those of the calling thread's network namespace; BPF object ids
//! are global.

pub mod forwarding;
pub mod groups;
pub mod monitor;
mod names;
mod netlink;
pub mod vlan;
pub mod xdp;
pub mod xdp_features;

pub use monitor::{LinkEvent, LinkMonitor, interfaces};
pub use names::{Interface, NoSuchInterface, by_index, label, name_of, resolve};
