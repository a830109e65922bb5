//! Empty library target: lets `msfilter-bench` name this crate as a build-dependency, so
//! cargo rebuilds the benchmark when these programs change.
#![no_std]
