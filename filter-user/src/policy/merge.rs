//! The interface-level merge of socket filters (RFC 3376 §3.2, RFC 3810 §4.2).
//!
//! If any socket is in EXCLUDE mode, the interface is EXCLUDE with the intersection of the
//! EXCLUDE lists minus the union of the INCLUDE lists; otherwise it is INCLUDE with the union
//! of the INCLUDE lists. Equivalently — and this is what the property test checks — the
//! interface accepts a source exactly when at least one socket accepts it. A per-interface
//! drop that used anything else would starve a client that still wants a source.

use std::collections::BTreeSet;

use msfilter_common::Addr;

use super::{GroupFilter, Mode};

/// Merge the filters of every member socket of one group on one interface. `None` when there
/// is no member at all (the group is then not msfilter's to filter).
pub fn merge<'a>(filters: impl IntoIterator<Item = &'a GroupFilter>) -> Option<GroupFilter> {
    let mut any = false;
    let mut exclude: Option<BTreeSet<Addr>> = None;
    let mut include: BTreeSet<Addr> = BTreeSet::new();
    for filter in filters {
        any = true;
        match filter.mode {
            Mode::Include => include.extend(filter.sources.iter().copied()),
            Mode::Exclude => {
                exclude = Some(match exclude {
                    None => filter.sources.clone(),
                    Some(so_far) => so_far.intersection(&filter.sources).copied().collect(),
                });
            }
        }
    }
    if !any {
        return None;
    }
    Some(match exclude {
        Some(excluded) => GroupFilter {
            mode: Mode::Exclude,
            sources: excluded.difference(&include).copied().collect(),
        },
        None => GroupFilter {
            mode: Mode::Include,
            sources: include,
        },
    })
}

/// Whether a filter accepts traffic from `source`.
pub fn accepts(filter: &GroupFilter, source: &Addr) -> bool {
    match filter.mode {
        Mode::Include => filter.sources.contains(source),
        Mode::Exclude => !filter.sources.contains(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> Addr {
        msfilter_common::maps::ipv4_mapped([10, 0, 0, n])
    }

    fn f(mode: Mode, sources: &[u8]) -> GroupFilter {
        GroupFilter::new(mode, sources.iter().map(|&n| a(n)))
    }

    #[test]
    fn no_members_is_unmanaged() {
        assert_eq!(merge([]), None);
    }

    #[test]
    fn rfc_3376_examples() {
        use Mode::{Exclude as EX, Include as IN};
        // INCLUDE only: union.
        assert_eq!(
            merge(&[f(IN, &[1, 2]), f(IN, &[2, 3])]),
            Some(f(IN, &[1, 2, 3]))
        );
        // EXCLUDE only: intersection.
        assert_eq!(
            merge(&[f(EX, &[1, 2, 3]), f(EX, &[2, 3, 4])]),
            Some(f(EX, &[2, 3]))
        );
        // Mixed: intersection of EXCLUDE minus union of INCLUDE.
        assert_eq!(
            merge(&[f(EX, &[1, 2, 3]), f(EX, &[2, 3, 4]), f(IN, &[3])]),
            Some(f(EX, &[2]))
        );
        // One any-source member without blocks accepts everything.
        assert_eq!(merge(&[f(EX, &[]), f(IN, &[5])]), Some(f(EX, &[])));
        // A member that wants nothing still makes the group managed: nothing passes.
        assert_eq!(merge(&[f(IN, &[])]), Some(f(IN, &[])));
    }

    /// Property: for random sets of member filters, the merged filter accepts exactly the
    /// sources that at least one member accepts (checked over every address in play plus
    /// one that no list mentions).
    #[test]
    fn merged_filter_accepts_exactly_what_some_member_accepts() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let members = (next() % 5) as usize;
            let filters: Vec<GroupFilter> = (0..members)
                .map(|_| {
                    let mode = if next() % 2 == 0 {
                        Mode::Include
                    } else {
                        Mode::Exclude
                    };
                    let sources: Vec<u8> =
                        (0..next() % 6).map(|_| (next() % 8) as u8 + 1).collect();
                    f(mode, &sources)
                })
                .collect();
            let merged = merge(&filters);
            if filters.is_empty() {
                assert_eq!(merged, None);
                continue;
            }
            let merged = merged.unwrap();
            for n in 1..=9 {
                let wanted = filters.iter().any(|f| accepts(f, &a(n)));
                assert_eq!(
                    accepts(&merged, &a(n)),
                    wanted,
                    "source {n}: members {filters:?} merged {merged:?}"
                );
            }
        }
    }
}
