//! Networks in CIDR notation, as settings name them (`federation.allowed_peer_networks`).

use std::net::IpAddr;

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            let keep = width - prefix.min(width);
            if keep >= 128 { 0 } else { bits >> keep }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32) == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128) == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a network (address/prefix)"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("'{addr}' is not an IP address"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("'{prefix}' is not a prefix length of 0..={width}"))?;
        Ok(Self { addr, prefix })
    }
}

/// A comma-separated list of networks (empty: none).
pub fn parse_networks(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_strictly() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(parse_networks("").unwrap(), vec![]);
        assert!(parse_networks("10.0.0.0/33").is_err());
        assert!(parse_networks("10.0.0.0").is_err());
        assert!(parse_networks("host/8").is_err());
        let all = parse_networks("0.0.0.0/0").unwrap();
        assert!(all[0].contains(ip("10.0.0.1")));
        assert!(!all[0].contains(ip("::1")));
    }
}
