//! msfilter's test bed: what the integration tests, the demo and the benchmark share.
//!
//! * [`netns`]: network namespaces and veth pairs that clean up after themselves.
pub mod netns;
pub mod traffic;
pub mod packet;
pub mod rng;
pub mod model;
pub mod daemon;
pub mod kernel;
pub mod sequences;
