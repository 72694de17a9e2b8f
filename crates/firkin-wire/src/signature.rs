//! Signed `/files` URLs, compatible with the E2B SDK's `download_url` / `upload_url`.
//!
//! The signed string is `"{path}:{operation}:{username}:{token}"`, with `":{expiration}"`
//! appended when an expiration is given; the signature is `"v1_"` followed by the unpadded
//! standard base64 of its SHA-256.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Operation a file URL is signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOperation {
    Read,
    Write,
}

impl FileOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            FileOperation::Read => "read",
            FileOperation::Write => "write",
        }
    }
}

/// Computes the signature for `path`, `operation`, `username` (empty for the default user).
pub fn sign(
    path: &str,
    operation: FileOperation,
    username: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let mut input = format!("{path}:{}:{username}:{token}", operation.as_str());
    if let Some(exp) = expiration {
        input.push(':');
        input.push_str(&exp.to_string());
    }
    let digest = Sha256::digest(input.as_bytes());
    format!("v1_{}", STANDARD_NO_PAD.encode(digest))
}

/// Why a presented signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureRejection {
    Mismatch,
    Expired,
}

impl SignatureRejection {
    /// The message of the 401 answered for this rejection (envd's wording, which clients may
    /// match on).
    pub fn message(self) -> &'static str {
        match self {
            SignatureRejection::Mismatch => "invalid signature",
            SignatureRejection::Expired => "signature is already expired",
        }
    }
}

/// Checks a presented signature. `now_unix` is the current time in Unix seconds.
pub fn verify(
    presented: &str,
    path: &str,
    operation: FileOperation,
    username: &str,
    token: &str,
    expiration: Option<i64>,
    now_unix: i64,
) -> Result<(), SignatureRejection> {
    let expected = sign(path, operation, username, token, expiration);
    if !constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
        return Err(SignatureRejection::Mismatch);
    }
    match expiration {
        Some(exp) if exp < now_unix => Err(SignatureRejection::Expired),
        _ => Ok(()),
    }
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_matches_sdk_algorithm() {
        // sha256("/a:read::tok") computed independently with python hashlib.
        let sig = sign("/a", FileOperation::Read, "", "tok", None);
        assert_eq!(sig, "v1_2/gNbgFPxFSqkheS/SD0NHlzA121E/nxkOtc/ovxeoI");
    }

    #[test]
    fn verify_accepts_own_signature_and_rejects_others() {
        let sig = sign("/x", FileOperation::Write, "root", "k", Some(100));
        assert_eq!(verify(&sig, "/x", FileOperation::Write, "root", "k", Some(100), 50), Ok(()));
        assert_eq!(
            verify(&sig, "/x", FileOperation::Write, "root", "k", Some(100), 101),
            Err(SignatureRejection::Expired)
        );
        assert_eq!(
            verify(&sig, "/x", FileOperation::Read, "root", "k", Some(100), 50),
            Err(SignatureRejection::Mismatch)
        );
    }

    #[test]
    fn an_expired_url_is_rejected_as_expired_only_when_its_signature_is_right() {
        let sig = sign("/x", FileOperation::Read, "", "k", Some(100));
        assert_eq!(
            verify(&sig, "/x", FileOperation::Read, "", "k", Some(100), 101).map_err(|r| r.message()),
            Err("signature is already expired")
        );
        // Right up to the second it names, the URL still works.
        assert_eq!(verify(&sig, "/x", FileOperation::Read, "", "k", Some(100), 100), Ok(()));
        let forged = sign("/x", FileOperation::Read, "", "other", Some(100));
        assert_eq!(
            verify(&forged, "/x", FileOperation::Read, "", "k", Some(100), 101).map_err(|r| r.message()),
            Err("invalid signature")
        );
    }
}
