//! `Lsn`: a WAL position, stored as the byte offset Patroni publishes as an integer and displayed
//! the way PostgreSQL prints it (`0/3000060`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("invalid LSN {s:?}"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|e| format!("invalid LSN {s:?}: {e}"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|e| format!("invalid LSN {s:?}: {e}"))?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(format!("invalid LSN {s:?}: out of range"));
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        assert_eq!(Lsn(0x3000060).to_string(), "0/3000060");
        assert_eq!("1/A0".parse::<Lsn>().unwrap(), Lsn((1 << 32) | 0xa0));
        assert!("zz".parse::<Lsn>().is_err());
    }
}
