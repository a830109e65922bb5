//! msfilter userspace library.
//!
//! * [`client`]: the library client applications link instead of shelling out.
//! * [`daemon`]: the controller daemon and its wire protocol.
//! * [`datapath`]: the XDP program, its attachments and where its maps are written.
//! * [`policy`]: where the policy model lives (per-client filters, RFC 3376 merge).
//! * [`sockopt`]: where socket options are set (the kernel judges every membership request).
pub mod client;
pub mod daemon;
pub mod datapath;
pub mod iface;
pub mod policy;
pub mod sockopt;
