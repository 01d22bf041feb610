//! Which addresses this instance may open connections to for peers: public
//! addresses, plus the networks `federation.allowed_peer_networks` names.
//! Checked on the resolved address before any connection is made (a DNS
//! resolver for names, [`check_url_host`] for IP literals, which reqwest does
//! not resolve), so CONNECT cannot make us probe loopback or private networks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::IpNet;

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))) // benchmarking
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // IPv4 addresses embedded in IPv6 are judged as IPv4 (mapped, NAT64).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from(u128::from(ip) as u32));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[0] == 0x2002 // 6to4 (embeds any IPv4 address)
        || (s[0] == 0 && s[1..6] == [0, 0, 0, 0, 0])) // IPv4-compatible, reserved
}

/// Whether peers may be reached at `ip`.
pub fn permitted(ip: IpAddr, allowed: &[IpNet]) -> bool {
    let public = match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    };
    public || allowed.iter().any(|net| net.contains(ip))
}

/// Refuses a URL whose host is an IP literal peers may not be reached at.
pub fn check_url_host(url: &reqwest::Url, allowed: &[IpNet]) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    // IPv6 literals come bracketed; a name does not parse as an address.
    let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else {
        return Ok(());
    };
    if permitted(ip, allowed) {
        Ok(())
    } else {
        Err(format!(
            "{ip} is not a public address (see federation.allowed_peer_networks)"
        ))
    }
}

/// Resolves names for the peer client, keeping only permitted addresses.
pub struct GuardedResolver {
    pub allowed: Arc<Vec<IpNet>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found.into_iter().filter(|a| permitted(a.ip(), &allowed)).collect();
            if usable.is_empty() {
                return Err(format!("{host} has no public address (see federation.allowed_peer_networks)").into());
            }
            Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_networks;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_unless_allowed() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(!permitted(ip(private), &[]), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(permitted(ip(public), &[]), "{public}");
        }
        let loopback = parse_networks("127.0.0.0/8, ::1/128").unwrap();
        assert!(permitted(ip("127.0.0.1"), &loopback));
        assert!(permitted(ip("::1"), &loopback));
        assert!(!permitted(ip("10.0.0.1"), &loopback));
    }
}
