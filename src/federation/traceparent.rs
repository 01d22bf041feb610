//! W3C Trace Context `traceparent` (version 00), as carried in a signed
//! envelope: a strict parser (a peer's value is used only if it is exactly
//! well formed; anything else is ignored, never an error) and its writer.
//! Pure: the OpenTelemetry side is in `telemetry.rs`.

/// `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex.
pub const LEN: usize = 55;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a version-00 `traceparent`: exactly 55 characters of lowercase
    /// hex in its four fields, neither id all zeros. Any other version is
    /// refused too: a later version's fields are not ours to guess at.
    pub fn parse(value: &str) -> Option<Self> {
        let b = value.as_bytes();
        if b.len() != LEN || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex(&b[3..35], &mut trace_id)?;
        hex(&b[36..52], &mut span_id)?;
        hex(&b[53..55], &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("00-")?;
        self.trace_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// Lowercase hex only (the spec's form), two digits per byte of `out`.
fn hex(digits: &[u8], out: &mut [u8]) -> Option<()> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example_and_writes_it_back() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(tp.span_id[7], 0xb7);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn refuses_anything_not_exactly_well_formed() {
        let bad = [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}0"),
            &format!("{VALID}-extra"),
            &VALID.replace("00-4b", "01-4b"),
            &VALID.replace("00-4b", "ff-4b"),
            &VALID.to_uppercase(),
            &VALID.replace("4bf9", "4bg9"),
            &VALID.replacen('-', "_", 1),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1é",
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value), None, "{value:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_ids_round_trip(t: [u8; 16], s: [u8; 8], flags: u8) {
            let tp = TraceParent { trace_id: t, span_id: s, flags };
            let parsed = TraceParent::parse(&tp.to_string());
            if t == [0; 16] || s == [0; 8] {
                proptest::prop_assert_eq!(parsed, None);
            } else {
                proptest::prop_assert_eq!(parsed, Some(tp));
            }
        }

        #[test]
        fn never_panics(value in "\\PC{0,80}") {
            let _ = TraceParent::parse(&value);
        }
    }
}
