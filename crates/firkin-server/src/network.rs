//! E2B's `network` object (create, `PUT /sandboxes/{id}/network`, sandbox detail): parsing it
//! into the core's egress policy, naming what firkin does not implement, and rendering it back.

use firkin_core::network::policy::PolicyError;
use firkin_core::network::EgressPolicy;
use firkin_core::record::SandboxRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// The `network` object of a create, or the body of a network update. Keys are camelCase, as
/// the SDKs send them; snake_case is accepted too.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBody {
    #[serde(default, alias = "allow_out")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, alias = "deny_out")]
    pub deny_out: Option<Vec<String>>,
    #[serde(default, alias = "allow_public_traffic")]
    pub allow_public_traffic: Option<bool>,
    #[serde(default, alias = "mask_request_host")]
    pub mask_request_host: Option<Value>,
    #[serde(default, alias = "dns_servers")]
    pub dns_servers: Option<Value>,
    #[serde(default, alias = "egress_proxy")]
    pub egress_proxy: Option<Value>,
    #[serde(default, alias = "https_ports")]
    pub https_ports: Option<Value>,
    #[serde(default)]
    pub rules: Option<Value>,
    /// Only in updates (the create carries it at the top level).
    #[serde(default, rename = "allow_internet_access", alias = "allowInternetAccess")]
    pub allow_internet_access: Option<bool>,
}

fn is_set(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

impl NetworkBody {
    /// The first field firkin does not implement, named for the caller (refused with 501).
    pub fn unsupported(&self) -> Option<&'static str> {
        let fields: [(&Option<Value>, &'static str); 5] = [
            (&self.rules, "network rules (network.rules: per-host request transforms)"),
            (&self.egress_proxy, "an egress proxy (network.egressProxy)"),
            (
                &self.dns_servers,
                "network.dnsServers (firkin answers every sandbox DNS query itself, through the server's resolvers)",
            ),
            (&self.mask_request_host, "network.maskRequestHost"),
            (&self.https_ports, "network.httpsPorts"),
        ];
        fields.iter().find(|(v, _)| is_set(v)).map(|(_, name)| *name)
    }

    /// Whether this body says anything about egress (else a create inherits its source's).
    pub fn sets_egress(&self) -> bool {
        self.allow_out.is_some() || self.deny_out.is_some()
    }

    /// The egress policy these fields (and `allow_internet_access`) describe.
    pub fn policy(&self, allow_internet_access: Option<bool>) -> Result<EgressPolicy, ApiError> {
        let empty = Vec::new();
        EgressPolicy::from_e2b(
            allow_internet_access,
            self.allow_out.as_ref().unwrap_or(&empty),
            self.deny_out.as_ref().unwrap_or(&empty),
        )
        .map_err(|e: PolicyError| ApiError::bad_request(e.to_string()))
    }
}

/// The egress policy of a create: `None` keeps the template's or snapshot's.
pub fn create_policy(
    network: Option<&NetworkBody>,
    allow_internet_access: Option<bool>,
) -> Result<Option<EgressPolicy>, ApiError> {
    let sets = network.is_some_and(NetworkBody::sets_egress);
    if !sets && allow_internet_access.is_none() {
        return Ok(None);
    }
    let body = network.map_or_else(NetworkBody::default, |n| NetworkBody {
        allow_out: n.allow_out.clone(),
        deny_out: n.deny_out.clone(),
        ..NetworkBody::default()
    });
    body.policy(allow_internet_access).map(Some)
}

/// `network` in a sandbox detail.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    pub allow_public_traffic: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
}

impl NetworkInfo {
    pub fn of(rec: &SandboxRecord) -> NetworkInfo {
        NetworkInfo {
            allow_public_traffic: rec.traffic_access_token.is_none(),
            allow_out: rec.egress.allow_out(),
            deny_out: rec.egress.deny_out(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> NetworkBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn names_what_is_not_implemented() {
        assert_eq!(body(serde_json::json!({"rules": {}, "dnsServers": null})).unsupported(), None);
        assert!(body(serde_json::json!({"rules": {"a.test": []}})).unsupported().unwrap().contains("rules"));
        assert!(body(serde_json::json!({"egressProxy": {"address": "p:1"}}))
            .unsupported()
            .unwrap()
            .contains("egressProxy"));
        assert!(body(serde_json::json!({"dns_servers": ["1.1.1.1"]}))
            .unsupported()
            .unwrap()
            .contains("dnsServers"));
        assert!(body(serde_json::json!({"maskRequestHost": "x"})).unsupported().unwrap().contains("mask"));
    }

    #[test]
    fn a_create_inherits_unless_it_speaks_of_egress() {
        assert_eq!(create_policy(None, None).unwrap(), None);
        let n = body(serde_json::json!({"allowPublicTraffic": true}));
        assert_eq!(create_policy(Some(&n), None).unwrap(), None);
        assert_eq!(create_policy(Some(&n), Some(true)).unwrap(), Some(EgressPolicy::default()));
        let closed = create_policy(None, Some(false)).unwrap().unwrap();
        assert_eq!(closed.deny_out(), ["0.0.0.0/0"]);
        let n = body(serde_json::json!({"allowOut": ["web.example.test"], "denyOut": ["0.0.0.0/0"]}));
        let p = create_policy(Some(&n), None).unwrap().unwrap();
        assert_eq!(
            (p.allow_out(), p.deny_out()),
            (vec!["web.example.test".to_owned()], vec!["0.0.0.0/0".to_owned()])
        );
        let bad = body(serde_json::json!({"denyOut": ["example.com"]}));
        assert!(create_policy(Some(&bad), None).is_err());
    }

    #[test]
    fn an_update_clears_what_it_omits() {
        let p = body(serde_json::json!({"allow_internet_access": false})).policy(Some(false)).unwrap();
        assert_eq!(p.deny_out(), ["0.0.0.0/0"]);
        assert!(body(serde_json::json!({})).policy(None).unwrap().is_open());
    }
}
