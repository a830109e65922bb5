//! The frames `msfilter explain` reads: a text file of hex, one frame per line, or a
//! classic libpcap capture of Ethernet frames.
//!
//! * Hex: whitespace and colons between digits are ignored, `#` starts a comment to the end
//!   of the line, empty lines are skipped.
//! * pcap: both byte orders, microsecond (`a1b2c3d4`) and nanosecond (`a1b23c4d`)
//!   timestamps, link type Ethernet (1) only. pcapng and other link types are refused, as
//!   is a record cut short.
//!
//! Every refusal names the line or record.

/// One frame and where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) place: Place,
    pub(crate) bytes: Vec<u8>,
    /// The length on the wire when the capture kept less (pcap's snap length).
    pub(crate) original_len: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Line(usize),
    Record(usize),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InputError {
    #[error("line {line}: {found:?} is not a hex digit")]
    NotHex { line: usize, found: char },
    #[error("line {line}: an odd number of hex digits ({digits}); a byte is two")]
    OddHex { line: usize, digits: usize },
    #[error("no frames (one frame per line, in hex)")]
    NoHexFrames,
    #[error("a pcapng file; explain reads classic pcap files (convert it: editcap -F pcap IN OUT)")]
    Pcapng,
    #[error("not a pcap file (it starts with {0:02x?})")]
    NotPcap(Vec<u8>),
    #[error("the pcap file header is cut short ({0} of 24 bytes)")]
    ShortHeader(usize),
    #[error("pcap format version {0}.{1} is not supported (2.4 is)")]
    Version(u16, u16),
    #[error(
        "link type {0} ({1}) is not Ethernet (1): explain judges Ethernet frames, as XDP sees \
         them"
    )]
    LinkType(u32, &'static str),
    #[error("record {record}: its header is cut short ({got} of 16 bytes)")]
    ShortRecordHeader { record: usize, got: usize },
    #[error("record {record}: it claims {claims} bytes, the file has {left} left")]
    ShortRecord {
        record: usize,
        claims: usize,
        left: usize,
    },
    #[error("record {record}: {claims} bytes is more than a frame can be (at most {MAX_FRAME})")]
    HugeRecord { record: usize, claims: usize },
    #[error("no frames in the capture")]
    NoRecords,
}

/// The largest record read: more than any link's frame (pcap's own writers cap at 256 KiB).
const MAX_FRAME: usize = 1 << 18;

/// Frames of a hex file.
pub(crate) fn read_hex(text: &str) -> Result<Vec<Frame>, InputError> {
    let mut frames = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let content = line.split('#').next().unwrap_or_default();
        let digits: Vec<char> = content
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        if digits.is_empty() {
            continue;
        }
        if let Some(found) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
            return Err(InputError::NotHex {
                line: line_no,
                found: *found,
            });
        }
        if !digits.len().is_multiple_of(2) {
            return Err(InputError::OddHex {
                line: line_no,
                digits: digits.len(),
            });
        }
        let bytes = digits
            .chunks(2)
            .map(|pair| {
                let hi = pair[0].to_digit(16).expect("checked");
                let lo = pair[1].to_digit(16).expect("checked");
                (hi * 16 + lo) as u8
            })
            .collect();
        frames.push(Frame {
            place: Place::Line(line_no),
            bytes,
            original_len: None,
        });
    }
    if frames.is_empty() {
        return Err(InputError::NoHexFrames);
    }
    Ok(frames)
}

/// The names of link types a capture is likely to have instead of Ethernet.
fn link_type_name(link_type: u32) -> &'static str {
    match link_type {
        0 => "BSD loopback",
        1 => "Ethernet",
        101 => "raw IP",
        105 => "IEEE 802.11",
        113 => "Linux cooked capture",
        127 => "802.11 radiotap",
        228 => "raw IPv4",
        229 => "raw IPv6",
        276 => "Linux cooked capture v2",
        _ => "unknown",
    }
}

/// Frames of a classic pcap file.
pub(crate) fn read_pcap(data: &[u8]) -> Result<Vec<Frame>, InputError> {
    let magic: [u8; 4] = match data.get(..4) {
        Some(m) => m.try_into().expect("4 bytes"),
        None => return Err(InputError::NotPcap(data.to_vec())),
    };
    // The magic is written in the writer's byte order; it says the order of every field.
    let big_endian = match magic {
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        [0x0a, 0x0d, 0x0d, 0x0a] => return Err(InputError::Pcapng),
        other => return Err(InputError::NotPcap(other.to_vec())),
    };
    let u16_at = |at: usize| {
        let b = [data[at], data[at + 1]];
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = data[at..at + 4].try_into().expect("4 bytes");
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    if data.len() < 24 {
        return Err(InputError::ShortHeader(data.len()));
    }
    let (major, minor) = (u16_at(4), u16_at(6));
    if major != 2 {
        return Err(InputError::Version(major, minor));
    }
    // The low 16 bits are the link type; the high ones may say whether frames end in an FCS
    // (which the verdict ignores, as it ignores Ethernet padding).
    let link_type = u32_at(20) & 0xffff;
    if link_type != 1 {
        return Err(InputError::LinkType(link_type, link_type_name(link_type)));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let record = frames.len() + 1;
        let left = data.len() - at;
        if left < 16 {
            return Err(InputError::ShortRecordHeader { record, got: left });
        }
        let captured = u32_at(at + 8) as usize;
        let original = u32_at(at + 12) as usize;
        if captured > MAX_FRAME {
            return Err(InputError::HugeRecord {
                record,
                claims: captured,
            });
        }
        if captured > left - 16 {
            return Err(InputError::ShortRecord {
                record,
                claims: captured,
                left: left - 16,
            });
        }
        frames.push(Frame {
            place: Place::Record(record),
            bytes: data[at + 16..at + 16 + captured].to_vec(),
            original_len: (original > captured).then_some(original),
        });
        at += 16 + captured;
    }
    if frames.is_empty() {
        return Err(InputError::NoRecords);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lines_with_spaces_colons_and_comments() {
        let text = "# two frames\n\
                    01 00 5e 00:00:01 # the first\n\
                    \n\
                    \tABcd  \n";
        let frames = read_hex(text).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].place, Place::Line(2));
        assert_eq!(frames[0].bytes, [1, 0, 0x5e, 0, 0, 1]);
        assert_eq!(frames[1].place, Place::Line(4));
        assert_eq!(frames[1].bytes, [0xab, 0xcd]);
    }

    #[test]
    fn bad_hex_names_the_line() {
        assert_eq!(
            read_hex("0102\n01 0\n"),
            Err(InputError::OddHex { line: 2, digits: 3 })
        );
        assert_eq!(
            read_hex("0102\n\n01 0g\n"),
            Err(InputError::NotHex {
                line: 3,
                found: 'g'
            })
        );
        assert_eq!(
            read_hex("0x0102\n"),
            Err(InputError::NotHex {
                line: 1,
                found: 'x'
            })
        );
        assert_eq!(read_hex("# nothing\n\n"), Err(InputError::NoHexFrames));
        assert_eq!(
            InputError::OddHex { line: 2, digits: 3 }.to_string(),
            "line 2: an odd number of hex digits (3); a byte is two"
        );
    }

    /// A pcap file of `frames` as a writer of `big_endian` order and `nanos` precision
    /// would write it.
    fn pcap(big_endian: bool, nanos: bool, link_type: u32, frames: &[(&[u8], u32)]) -> Vec<u8> {
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend(u32b(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        out.extend(u16b(2));
        out.extend(u16b(4));
        out.extend(u32b(0));
        out.extend(u32b(0));
        out.extend(u32b(65535));
        out.extend(u32b(link_type));
        for (i, (bytes, original)) in frames.iter().enumerate() {
            out.extend(u32b(1_700_000_000 + i as u32));
            out.extend(u32b(999));
            out.extend(u32b(bytes.len() as u32));
            out.extend(u32b(*original));
            out.extend_from_slice(bytes);
        }
        out
    }

    #[test]
    fn pcap_in_both_byte_orders_and_precisions() {
        let a: &[u8] = &[1, 2, 3, 4];
        let b: &[u8] = &[5; 60];
        for big_endian in [false, true] {
            for nanos in [false, true] {
                let file = pcap(big_endian, nanos, 1, &[(a, 4), (b, 1514)]);
                let frames = read_pcap(&file).unwrap();
                assert_eq!(frames.len(), 2, "{big_endian} {nanos}");
                assert_eq!(frames[0].bytes, a);
                assert_eq!(frames[0].original_len, None);
                assert_eq!(frames[1].place, Place::Record(2));
                assert_eq!(frames[1].bytes, b);
                assert_eq!(frames[1].original_len, Some(1514));
            }
        }
        // The FCS bits above the link type do not change it.
        let fcs = pcap(false, false, 1 | (1 << 28) | (4 << 29), &[(a, 4)]);
        assert_eq!(read_pcap(&fcs).unwrap().len(), 1);
    }

    #[test]
    fn bad_captures_are_refused_naming_the_record() {
        let a: &[u8] = &[1, 2, 3, 4];
        let good = pcap(false, false, 1, &[(a, 4), (a, 4)]);
        assert_eq!(
            read_pcap(&good[..good.len() - 1]),
            Err(InputError::ShortRecord {
                record: 2,
                claims: 4,
                left: 3
            })
        );
        assert_eq!(
            read_pcap(&good[..24 + 20 + 10]),
            Err(InputError::ShortRecordHeader { record: 2, got: 10 })
        );
        assert_eq!(read_pcap(&good[..20]), Err(InputError::ShortHeader(20)));
        assert_eq!(read_pcap(&good[..24]), Err(InputError::NoRecords));
        let mut huge = pcap(false, false, 1, &[(a, 4)]);
        huge[24 + 8..24 + 12].copy_from_slice(&(1u32 << 30).to_le_bytes());
        assert_eq!(
            read_pcap(&huge),
            Err(InputError::HugeRecord {
                record: 1,
                claims: 1 << 30
            })
        );
        assert_eq!(
            read_pcap(&pcap(true, false, 113, &[(a, 4)])),
            Err(InputError::LinkType(113, "Linux cooked capture"))
        );
        let pcapng = [0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0];
        assert_eq!(read_pcap(&pcapng), Err(InputError::Pcapng));
        assert_eq!(
            read_pcap(b"0102 0304\n"),
            Err(InputError::NotPcap(b"0102".to_vec()))
        );
        let mut v1 = good.clone();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(read_pcap(&v1), Err(InputError::Version(1, 4)));
    }
}
