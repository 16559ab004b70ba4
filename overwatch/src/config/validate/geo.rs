//! `overwatch.geolocation` — the database, the default region and custom CIDR mappings.

use std::collections::HashMap;

use ipnet::IpNet;

use super::{Collector, region_ref};
use crate::config::schema::RawConfig;
use crate::config::settings::GeoSettings;

pub(super) fn geolocation(
    c: &mut Collector,
    raw: &RawConfig,
    region_index: &HashMap<String, usize>,
) -> GeoSettings {
    let mut geo = GeoSettings {
        ecs_enabled: true,
        ..GeoSettings::default()
    };
    if let Some(g) = &raw.overwatch.geolocation {
        geo.ecs_enabled = g.ecs_enabled;
        if let Some(path) = g
            .database_path
            .as_ref()
            .filter(|p| !p.value.as_os_str().is_empty())
        {
            if !path.value.is_file() {
                c.at(
                    path,
                    format!(
                        "overwatch.geolocation.database_path: {} is not a readable file",
                        path.value.display()
                    ),
                );
            }
            geo.database = Some(path.value.clone());
        }
        if let Some(region) = &g.default_region {
            geo.default_region = region_ref(
                c,
                region_index,
                region,
                "overwatch.geolocation.default_region",
            );
        }
        for mapping in &g.custom_mappings {
            let net = match mapping.cidr.value.trim().parse::<IpNet>() {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    c.at(&mapping.cidr, format!("overwatch.geolocation.custom_mappings: {:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", mapping.cidr.value));
                    None
                }
            };
            let region = region_ref(
                c,
                region_index,
                &mapping.region,
                "overwatch.geolocation.custom_mappings[].region",
            );
            if let (Some(net), Some(region)) = (net, region) {
                geo.custom_mappings.push((net, region));
            }
        }
    }
    geo
}
