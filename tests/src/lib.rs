//! msfilter's test bed: what the integration tests, the demo and the benchmark share.
//!
//! * [`netns`]: network namespaces and veth pairs that clean up after themselves.
//! * [`traffic`]: real multicast senders and receiving applications.
//! * [`scene`]: sources, a daemon and a listening application, ready to use.
//! * [`daemon`]: a real `msfilter daemon` process in a namespace, and the CLI against it.
//! * [`capture`]: IGMPv3/MLDv2 reports captured from an interface.
//! * [`foreign`]: an XDP program msfilter did not load, attached through a link or netlink.
//! * [`inject`]: frames sent as they are (`AF_PACKET`) out of an interface.
//! * [`kernel`]: the kernel's own view of multicast filters (`/proc/net/mcfilter*`).
//! * [`metrics`]: the daemon's metrics endpoint scraped from its namespace, parsed by
//!   Python's `prometheus_client`.
//! * [`option_sets`]: requests as msfilter's `MCAST_*` options or the family-specific ones,
//!   validated or not: the kernel oracle of the sequence and equivalence tests.
//! * [`sequences`]: scripted membership sequences with the kernel's measured outcomes.
//! * [`packet`]: frames built field by field, for verdict tests.
//! * [`rng`]: a seeded generator, so generated tests are reproducible.
//! * [`model`]: the reference model consulting exactly what the maps hold.
//! * [`unit`]: a systemd unit's service run as systemd would (environment, notify socket,
//!   capabilities), where systemd is not PID 1.
//! * [`apps`]: unmodified applications (plain libc sockets, python3) that join groups
//!   with their own socket options.
//! * [`followed`]: the follower in a namespace, and the kernel's view to hold it to.
//! * [`follow_cost`]: follow mode's latency and hook cost, for the test and the benchmark.
pub mod apps;
pub mod capture;
pub mod daemon;
pub mod follow_cost;
pub mod followed;
pub mod foreign;
pub mod inject;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod option_sets;
pub mod packet;
pub mod rng;
pub mod scene;
pub mod sequences;
pub mod traffic;
pub mod unit;
