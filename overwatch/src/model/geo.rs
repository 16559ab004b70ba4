//! Where a client is: custom CIDR mappings first, then a MaxMind database, then the
//! default region. Every answer says how many leading address bits it depended on, so
//! DNS can give an honest ECS scope.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use crate::config::{GeoSettings, RegionSettings};

/// An opened MaxMind (Country or City) database.
#[derive(Debug)]
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

/// What the database says of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbLocation {
    /// ISO country code, upper case.
    pub country: Option<Code>,
    /// Continent code, upper case.
    pub continent: Option<Code>,
    /// Prefix length of the database network that contains the address.
    pub prefix: u8,
}

/// A two-letter code (ISO 3166 country, or continent), upper case. Held inline: a DNS
/// query that needs the database allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Code([u8; 2]);

impl Code {
    /// Two ASCII letters, any case; `None` otherwise.
    pub fn parse(code: &str) -> Option<Code> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Code([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// Whether `config` (a region's country or continent) names this code.
    fn is(&self, config: &str) -> bool {
        config.as_bytes().eq_ignore_ascii_case(&self.0)
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The only fields read from a record, borrowed: names and everything else are skipped.
#[derive(serde::Deserialize)]
struct Codes<'a> {
    #[serde(borrow)]
    country: Option<CountryCode<'a>>,
    #[serde(borrow)]
    continent: Option<ContinentCode<'a>>,
}

#[derive(serde::Deserialize)]
struct CountryCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct ContinentCode<'a> {
    code: Option<&'a str>,
}

impl GeoDb {
    /// Opens and checks a database file.
    pub fn open(path: &Path) -> Result<GeoDb, String> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(GeoDb { reader })
    }

    /// From bytes (tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, String> {
        maxminddb::Reader::from_source(bytes)
            .map(|reader| GeoDb { reader })
            .map_err(|e| e.to_string())
    }

    /// Looks an address up; `None` on a database error.
    pub fn lookup(&self, ip: IpAddr) -> Option<DbLocation> {
        let result = self.reader.lookup(ip).ok()?;
        let prefix = result.network().ok()?.prefix();
        let record: Option<Codes<'_>> = result.decode().ok()?;
        let (country, continent) = record.map_or((None, None), |r| {
            (
                r.country.and_then(|c| c.iso_code).and_then(Code::parse),
                r.continent.and_then(|c| c.code).and_then(Code::parse),
            )
        });
        Some(DbLocation {
            country,
            continent,
            prefix,
        })
    }
}

/// A located client: the region index (if any) and the prefix length the decision
/// depended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Index into `settings.regions`.
    pub region: Option<usize>,
    /// Leading bits of the client address that decided it.
    pub prefix: u8,
}

/// Finds the region of `ip` (custom mappings, database, default region, in that order).
pub fn locate(
    ip: IpAddr,
    geo: &GeoSettings,
    db: Option<&GeoDb>,
    regions: &[RegionSettings],
) -> Located {
    let ip = ip.to_canonical();
    let full = if ip.is_ipv4() { 32 } else { 128 };
    if let Some((net, region)) = geo
        .custom_mappings
        .iter()
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
    {
        // A narrower mapping inside the matched one decides differently for part of it.
        let prefix = narrowest_overlap(ip, net.prefix_len(), &geo.custom_mappings);
        return Located {
            region: Some(*region),
            prefix,
        };
    }
    if let Some(loc) = db.and_then(|db| db.lookup(ip)) {
        let by_country = loc.country.and_then(|c| {
            regions
                .iter()
                .position(|r| r.countries.iter().any(|x| c.is(x)))
        });
        let by_continent = || {
            loc.continent.and_then(|c| {
                regions
                    .iter()
                    .position(|r| r.continents.iter().any(|x| c.is(x)))
            })
        };
        let region = by_country.or_else(by_continent).or(geo.default_region);
        // The database network is the unit of its answers; a custom mapping inside it
        // could make a narrower part decide differently.
        let prefix = narrowest_overlap(ip, loc.prefix, &geo.custom_mappings).min(full);
        return Located { region, prefix };
    }
    // Nothing matched: the answer depends on the address not being in any mapping, which
    // only holds at full precision in general.
    let prefix = if geo.custom_mappings.is_empty() {
        0
    } else {
        full
    };
    Located {
        region: geo.default_region,
        prefix,
    }
}

/// The shortest prefix of `ip` that still decides like `prefix` does: every custom mapping
/// inside `ip`'s network (at `prefix`) that does not contain `ip` must fall outside the
/// scope, so the scope must reach the first bit where `ip` and that mapping differ.
fn narrowest_overlap(ip: IpAddr, prefix: u8, mappings: &[(IpNet, usize)]) -> u8 {
    let Ok(network) = IpNet::new(ip, prefix).map(|n| n.trunc()) else {
        return prefix;
    };
    mappings
        .iter()
        .filter(|(m, _)| m.prefix_len() > prefix && network.contains(m) && !m.contains(&ip))
        .map(|(m, _)| {
            common_prefix_len(ip, m.network())
                .saturating_add(1)
                .min(m.prefix_len())
        })
        .fold(prefix, u8::max)
}

/// Leading bits two addresses of the same family share.
fn common_prefix_len(a: IpAddr, b: IpAddr) -> u8 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u32::from(a) ^ u32::from(b)).leading_zeros().min(32) as u8
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            (u128::from(a) ^ u128::from(b)).leading_zeros().min(128) as u8
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared fixture: 1.0.0.0/16 US/NA, 2.0.0.0/8 DE/EU, 2001:db8::/32 JP/AS.
    fn fixture() -> GeoDb {
        GeoDb::from_bytes(opengslb_tests::country_mmdb()).expect("open fixture")
    }

    fn region(name: &str, countries: &[&str], continents: &[&str]) -> RegionSettings {
        RegionSettings {
            name: name.into(),
            servers: Vec::new(),
            check: None,
            countries: countries.iter().map(|s| s.to_string()).collect(),
            continents: continents.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn database_lookup_returns_country_continent_and_network() {
        let db = fixture();
        let loc = db.lookup(ip("1.0.3.4")).expect("found");
        assert_eq!(
            (
                loc.country.as_ref().map(Code::as_str),
                loc.continent.as_ref().map(Code::as_str),
                loc.prefix
            ),
            (Some("US"), Some("NA"), 16)
        );
        let loc = db.lookup(ip("2001:db8::1")).expect("found");
        assert_eq!(
            (loc.country.as_ref().map(Code::as_str), loc.prefix),
            (Some("JP"), 32)
        );
        let loc = db.lookup(ip("9.9.9.9")).expect("lookup works");
        assert_eq!(loc.country, None, "not in the database");
    }

    #[test]
    fn a_database_lookup_allocates_nothing() {
        let db = fixture();
        let regions = [region("us", &["US"], &[]), region("asia", &[], &["AS"])];
        let geo = GeoSettings {
            database: None,
            default_region: None,
            ecs_enabled: true,
            custom_mappings: Vec::new(),
        };
        let before = crate::alloc_count::allocations();
        let us = locate(ip("1.0.3.4"), &geo, Some(&db), &regions);
        let jp = locate(ip("2001:db8::1"), &geo, Some(&db), &regions);
        assert_eq!(crate::alloc_count::allocations(), before, "allocations");
        assert_eq!((us.region, jp.region), (Some(0), Some(1)));
    }

    #[test]
    fn custom_mappings_win_longest_prefix_first() {
        let regions = [
            region("us", &["US"], &[]),
            region("eu", &[], &["EU"]),
            region("office", &[], &[]),
        ];
        let geo = GeoSettings {
            database: None,
            default_region: Some(0),
            custom_mappings: vec![
                ("1.0.0.0/8".parse().expect("net"), 1),
                ("1.0.5.0/24".parse().expect("net"), 2),
            ],
            ecs_enabled: true,
        };
        let db = fixture();
        assert_eq!(
            locate(ip("1.0.5.9"), &geo, Some(&db), &regions),
            Located {
                region: Some(2),
                prefix: 24
            }
        );
        // The /8 decides, but the /24 inside it answers differently: the scope must be
        // long enough to exclude it. 1.0.6.9 and 1.0.5.0 share 22 bits → /23.
        assert_eq!(
            locate(ip("1.0.6.9"), &geo, Some(&db), &regions),
            Located {
                region: Some(1),
                prefix: 23
            }
        );
        // 1.7.x and 1.0.x share 13 bits → /14 already excludes 1.0.5.0/24.
        assert_eq!(
            locate(ip("1.7.6.9"), &geo, Some(&db), &regions),
            Located {
                region: Some(1),
                prefix: 14
            }
        );
        // Inside the /24 itself nothing narrower exists.
        assert_eq!(
            locate(ip("1.0.5.200"), &geo, Some(&db), &regions),
            Located {
                region: Some(2),
                prefix: 24
            }
        );
    }

    #[test]
    fn database_country_then_continent_then_default() {
        let regions = [
            region("us", &["US"], &[]),
            region("eu", &[], &["EU"]),
            region("fallback", &[], &[]),
        ];
        let geo = GeoSettings {
            database: None,
            default_region: Some(2),
            custom_mappings: Vec::new(),
            ecs_enabled: true,
        };
        let db = fixture();
        assert_eq!(
            locate(ip("1.0.200.1"), &geo, Some(&db), &regions),
            Located {
                region: Some(0),
                prefix: 16
            }
        );
        assert_eq!(
            locate(ip("2.3.4.5"), &geo, Some(&db), &regions),
            Located {
                region: Some(1),
                prefix: 8
            }
        );
        assert_eq!(
            locate(ip("2001:db8::7"), &geo, Some(&db), &regions).region,
            Some(2),
            "JP/AS: no region, default"
        );
        // IPv4-mapped IPv6 is treated as IPv4.
        assert_eq!(
            locate(ip("::ffff:1.0.0.1"), &geo, Some(&db), &regions).region,
            Some(0)
        );
    }

    #[test]
    fn scope_grows_when_a_mapping_sits_inside_the_database_network() {
        let regions = [region("us", &["US"], &[]), region("office", &[], &[])];
        let geo = GeoSettings {
            database: None,
            default_region: None,
            custom_mappings: vec![("1.0.9.0/24".parse().expect("net"), 1)],
            ecs_enabled: true,
        };
        let db = fixture();
        // DB network 1.0.0.0/16 holds the 1.0.9.0/24 mapping; 1.0.1.1 and 1.0.9.0 share 20 bits.
        assert_eq!(
            locate(ip("1.0.1.1"), &geo, Some(&db), &regions),
            Located {
                region: Some(0),
                prefix: 21
            }
        );
        assert_eq!(
            locate(ip("1.0.9.1"), &geo, Some(&db), &regions),
            Located {
                region: Some(1),
                prefix: 24
            }
        );
    }

    #[test]
    fn no_inputs_means_the_default_and_scope_zero() {
        let regions = [region("only", &[], &[])];
        let geo = GeoSettings {
            database: None,
            default_region: Some(0),
            custom_mappings: Vec::new(),
            ecs_enabled: true,
        };
        assert_eq!(
            locate(ip("8.8.8.8"), &geo, None, &regions),
            Located {
                region: Some(0),
                prefix: 0
            }
        );
    }
}
