//! Decoding of `GET /v2/sandboxes` query parameters into a core [`ListQuery`].

use std::collections::{BTreeMap, HashMap};

use firkin_core::runtime::ListQuery;

use crate::error::ApiError;

/// Builds the core query from already URL-decoded query parameters.
pub fn list_query(params: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::default();
    if let Some(m) = params.get("metadata").or_else(|| params.get("query")) {
        q.metadata = decode_metadata(m)?;
    }
    if let Some(s) = params.get("state") {
        for st in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if st != "running" && st != "paused" {
                return Err(ApiError::bad_request(format!(
                    "invalid state filter {st:?}: expected running or paused"
                )));
            }
            q.states.push(st.to_owned());
        }
    }
    if let Some(l) = params.get("limit") {
        let n: usize = l.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?;
        q.limit = Some(n);
    }
    q.cursor = params.get("nextToken").filter(|t| !t.is_empty()).cloned();
    q.started_after = params.get("startedAfter").map(|t| timestamp("startedAfter", t)).transpose()?;
    q.started_before = params.get("startedBefore").map(|t| timestamp("startedBefore", t)).transpose()?;
    q.template = params.get("template").filter(|t| !t.is_empty()).cloned();
    match params.get("order").map(String::as_str) {
        None | Some("desc") | Some("") => {}
        Some("asc") => q.ascending = true,
        Some(o) => return Err(ApiError::bad_request(format!("invalid order {o:?}: expected asc or desc"))),
    }
    Ok(q)
}

/// An RFC 3339 time (the SDK sends `datetime.isoformat()` of an aware time).
fn timestamp(field: &str, value: &str) -> Result<time::OffsetDateTime, ApiError> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).map_err(|e| {
        ApiError::bad_request(format!("invalid {field} {value:?}: expected an RFC 3339 time ({e})"))
    })
}

/// `metadata` arrives (after the framework's one URL decode) as a query string `k=v&k2=v2`
/// whose keys and values the SDK percent-quoted before form-encoding them: so each key and
/// value is form-decoded, then percent-decoded once more.
pub fn decode_metadata(raw: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode_component(k)?, decode_component(v)?);
    }
    Ok(out)
}

fn decode_component(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("metadata filter is not valid percent-encoded UTF-8: {s:?}"));
    let plus_as_space = s.replace('+', " ");
    let form = urlencoding::decode(&plus_as_space).map_err(|_| bad())?;
    let quoted = urlencoding::decode(&form).map_err(|_| bad())?;
    Ok(quoted.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_decoded_like_the_sdk_encodes_it() {
        // The SDK sends {"a b":"c/d"} as `metadata=a%252520b%3Dc%252Fd`; after the framework's
        // query decode this function sees "a%2520b=c%2Fd".
        let m = decode_metadata("a%2520b=c%2Fd&k=v").unwrap();
        assert_eq!(m.get("a b").map(String::as_str), Some("c/d"));
        assert_eq!(m.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn states_limit_and_order() {
        let p: HashMap<String, String> =
            [("state", "running,paused"), ("limit", "2"), ("order", "asc"), ("nextToken", "x")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let q = list_query(&p).unwrap();
        assert_eq!(q.states, vec!["running", "paused"]);
        assert_eq!(q.limit, Some(2));
        assert!(q.ascending);
        assert_eq!(q.cursor.as_deref(), Some("x"));
        let bad: HashMap<String, String> = [("state".to_string(), "dead".to_string())].into();
        assert!(list_query(&bad).is_err());
    }

    #[test]
    fn started_bounds_are_rfc3339_as_the_sdk_sends_them() {
        let p: HashMap<String, String> = [
            ("startedAfter".to_string(), "2026-11-29T14:44:00.123456+00:00".to_string()),
            ("startedBefore".to_string(), "2026-11-29T15:44:00+01:00".to_string()),
        ]
        .into();
        let q = list_query(&p).unwrap();
        assert_eq!(q.started_after.unwrap().unix_timestamp(), 1_795_963_440);
        assert_eq!(q.started_before.unwrap().unix_timestamp(), 1_795_963_440);
        let bad: HashMap<String, String> = [("startedAfter".to_string(), "yesterday".to_string())].into();
        assert!(list_query(&bad).unwrap_err().message.contains("startedAfter"));
    }
}
