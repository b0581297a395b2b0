//! RFC 3161 trusted time-stamps: asking a time-stamp authority (TSA) for a token over the
//! SHA-256 of a manifest's canonical bytes, and checking a token offline against the TSA's CA.
//!
//! The ASN.1 types come from the RustCrypto crates (`x509-tsp`, `cms`, `x509-cert`); the
//! signature arithmetic from aws-lc-rs, the crypto library rustls already uses here.

use std::time::Duration;

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{Int, ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifier;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA_384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA_512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Why a time-stamp could not be obtained or does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("the time-stamp authority could not be reached: {0}")]
    Unreachable(String),
    #[error("the time-stamp authority refused the request: {0}")]
    Refused(String),
    #[error("the time-stamp token is malformed: {0}")]
    Malformed(String),
    #[error("the time-stamp token is over other data (its message imprint does not match)")]
    ImprintMismatch,
    #[error("the time-stamp token's signature does not verify: {0}")]
    BadSignature(String),
    #[error("the time-stamp token's signer is not trusted: {0}")]
    Untrusted(String),
}

/// A TSA the export asks for a token per manifest.
#[derive(Debug, Clone)]
pub struct TimestampAuthority {
    url: String,
    client: reqwest::Client,
    /// When set, every token is checked against these roots before it is accepted.
    ca: Vec<Certificate>,
}

impl TimestampAuthority {
    /// A client for `url`, checking tokens against `ca` (none: tokens are only checked for
    /// their message imprint), trusting `ssl_ca_path`'s certificates besides the system's for
    /// HTTPS.
    pub fn new(
        url: &str,
        ca: Vec<Certificate>,
        ssl_ca_path: Option<&std::path::Path>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let builder = crate::http_client::trust(
            reqwest::Client::builder(),
            ssl_ca_path,
            "export.timestamp_authority_ssl_ca_path",
        )
        .map_err(anyhow::Error::msg)?;
        let client = builder
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            url: url.to_owned(),
            client,
            ca,
        })
    }

    /// A token over SHA-256 of `data`, base64 of its DER.
    pub async fn stamp(&self, data: &[u8]) -> Result<String, TimestampError> {
        let nonce: [u8; 8] = rand::random();
        let mut nonce = nonce.to_vec();
        nonce[0] &= 0x7f; // positive
        nonce[0] |= 0x01; // minimal encoding: no leading zero byte
        let request = TimeStampReq {
            version: TspVersion::V1,
            message_imprint: sha256_imprint(data)?,
            req_policy: None,
            nonce: Some(Int::new(&nonce).map_err(malformed)?),
            cert_req: true,
            extensions: None,
        }
        .to_der()
        .map_err(malformed)?;
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/timestamp-query")
            .header("accept", "application/timestamp-reply")
            .body(request)
            .send()
            .await
            .map_err(|e| {
                let hint = if crate::http_client::is_certificate_error(&e) {
                    format!(
                        "; {}",
                        crate::http_client::certificate_hint(
                            "export.timestamp_authority_ssl_ca_path"
                        )
                    )
                } else {
                    String::new()
                };
                TimestampError::Unreachable(format!("{}: {e}{hint}", self.url))
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TimestampError::Unreachable(format!("{}: {e}", self.url)))?;
        if !status.is_success() {
            return Err(TimestampError::Unreachable(format!(
                "{} answered HTTP {status}",
                self.url
            )));
        }
        let reply = TimeStampResp::from_der(&body).map_err(malformed)?;
        // 0 granted, 1 granted with modifications.
        if reply.status.status as u8 > 1 {
            return Err(TimestampError::Refused(format!(
                "status {:?} {}",
                reply.status.status,
                reply
                    .status
                    .status_string
                    .as_ref()
                    .map(|s| format!("{s:?}"))
                    .unwrap_or_default()
            )));
        }
        let token = reply
            .time_stamp_token
            .ok_or_else(|| TimestampError::Malformed("a granted reply without a token".into()))?
            .to_der()
            .map_err(malformed)?;
        let info = token_info(&token)?;
        if info.nonce.as_ref().map(Int::as_bytes) != Some(nonce.as_slice()) {
            return Err(TimestampError::Malformed(
                "the reply's nonce is not the request's".into(),
            ));
        }
        if self.ca.is_empty() {
            check_imprint(&info, data)?;
        } else {
            verify_token(&token, data, &self.ca)?;
        }
        Ok(STANDARD.encode(token))
    }
}

/// Reads the PEM certificates of a TSA's CA file.
pub fn load_ca(pem: &[u8]) -> anyhow::Result<Vec<Certificate>> {
    let certs = Certificate::load_pem_chain(pem)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate file: {e}"))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the file");
    Ok(certs)
}

fn malformed(e: impl std::fmt::Display) -> TimestampError {
    TimestampError::Malformed(e.to_string())
}

fn sha256_imprint(data: &[u8]) -> Result<MessageImprint, TimestampError> {
    Ok(MessageImprint {
        hash_algorithm: AlgorithmIdentifier {
            oid: ID_SHA_256,
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(Sha256::digest(data).to_vec()).map_err(malformed)?,
    })
}

fn signed_data(token: &[u8]) -> Result<SignedData, TimestampError> {
    let info = ContentInfo::from_der(token).map_err(malformed)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(TimestampError::Malformed("not CMS signed data".into()));
    }
    SignedData::from_der(&info.content.to_der().map_err(malformed)?).map_err(malformed)
}

/// The TSTInfo a token signs, unchecked.
pub fn token_info(token: &[u8]) -> Result<TstInfo, TimestampError> {
    let data = signed_data(token)?;
    tst_info(&data).map(|(info, _)| info)
}

fn tst_info(data: &SignedData) -> Result<(TstInfo, Vec<u8>), TimestampError> {
    if data.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(TimestampError::Malformed(
            "the content is not a TSTInfo".into(),
        ));
    }
    let content = data
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| TimestampError::Malformed("no TSTInfo".into()))?;
    let octets = OctetString::from_der(&content.to_der().map_err(malformed)?).map_err(malformed)?;
    let bytes = octets.as_bytes().to_vec();
    Ok((TstInfo::from_der(&bytes).map_err(malformed)?, bytes))
}

fn check_imprint(info: &TstInfo, data: &[u8]) -> Result<(), TimestampError> {
    let imprint = &info.message_imprint;
    let expected = match imprint.hash_algorithm.oid {
        ID_SHA_256 => Sha256::digest(data).to_vec(),
        ID_SHA_384 => Sha384::digest(data).to_vec(),
        ID_SHA_512 => Sha512::digest(data).to_vec(),
        other => {
            return Err(TimestampError::Malformed(format!(
                "unsupported imprint hash {other}"
            )));
        }
    };
    if imprint.hashed_message.as_bytes() == expected.as_slice() {
        Ok(())
    } else {
        Err(TimestampError::ImprintMismatch)
    }
}

fn digest(alg: &ObjectIdentifier, data: &[u8]) -> Result<Vec<u8>, TimestampError> {
    Ok(match *alg {
        ID_SHA_256 => Sha256::digest(data).to_vec(),
        ID_SHA_384 => Sha384::digest(data).to_vec(),
        ID_SHA_512 => Sha512::digest(data).to_vec(),
        other => {
            return Err(TimestampError::Malformed(format!(
                "unsupported digest {other}"
            )));
        }
    })
}

/// Checks a token (DER) over `data` against the trusted CA certificates: the imprint, the
/// signer's signature over the signed attributes, the signer's certificate chain to a trusted
/// CA, its timeStamping extended key usage and validity at the stamped time. Returns the
/// stamped time.
pub fn verify_token(
    token: &[u8],
    data: &[u8],
    trusted: &[Certificate],
) -> Result<DateTime<Utc>, TimestampError> {
    let signed = signed_data(token)?;
    let (info, content) = tst_info(&signed)?;
    check_imprint(&info, data)?;
    let certs: Vec<Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let signer_info = signed
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| TimestampError::Malformed("no signer".into()))?;
    let signer = certs
        .iter()
        .chain(trusted)
        .find(|c| match &signer_info.sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                c.tbs_certificate.issuer == id.issuer
                    && c.tbs_certificate.serial_number == id.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => subject_key_id(c).as_ref() == Some(ski),
        })
        .ok_or_else(|| {
            TimestampError::Untrusted("the signer's certificate is not in the token".into())
        })?;

    // The signed attributes: the content type and the digest of the TSTInfo.
    let attrs = signer_info
        .signed_attrs
        .as_ref()
        .ok_or_else(|| TimestampError::Malformed("no signed attributes".into()))?;
    let attr = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
            .ok_or_else(|| TimestampError::Malformed(format!("no signed attribute {oid}")))
    };
    let content_type =
        ObjectIdentifier::from_der(&attr(ID_CONTENT_TYPE)?.to_der().map_err(malformed)?)
            .map_err(malformed)?;
    if content_type != ID_CT_TST_INFO {
        return Err(TimestampError::Malformed(
            "signed content type is not TSTInfo".into(),
        ));
    }
    let message_digest =
        OctetString::from_der(&attr(ID_MESSAGE_DIGEST)?.to_der().map_err(malformed)?)
            .map_err(malformed)?;
    if message_digest.as_bytes() != digest(&signer_info.digest_alg.oid, &content)?.as_slice() {
        return Err(TimestampError::BadSignature(
            "the signed digest is not the TSTInfo's (altered)".into(),
        ));
    }
    let signed_bytes = attrs.to_der().map_err(malformed)?;
    verify_signature(
        signer,
        &signer_info.signature_algorithm.oid,
        &signer_info.digest_alg.oid,
        &signed_bytes,
        signer_info.signature.as_bytes(),
    )
    .map_err(TimestampError::BadSignature)?;

    // The signer may stamp time, and did so while its certificate was valid.
    let usages = signer
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_CE_EXT_KEY_USAGE)
        .and_then(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
        });
    if !usages.is_some_and(|u| u.0.contains(&ID_KP_TIME_STAMPING)) {
        return Err(TimestampError::Untrusted(
            "the signer's certificate lacks the timeStamping extended key usage".into(),
        ));
    }
    let gen_time = info.gen_time.to_unix_duration();
    let validity = &signer.tbs_certificate.validity;
    if gen_time < validity.not_before.to_unix_duration()
        || gen_time > validity.not_after.to_unix_duration()
    {
        return Err(TimestampError::Untrusted(
            "the signer's certificate was not valid at the stamped time".into(),
        ));
    }
    chain_to_trusted(signer, &certs, trusted)?;
    DateTime::from_timestamp(gen_time.as_secs() as i64, gen_time.subsec_nanos())
        .ok_or_else(|| TimestampError::Malformed("the stamped time is out of range".into()))
}

fn subject_key_id(cert: &Certificate) -> Option<x509_cert::ext::pkix::SubjectKeyIdentifier> {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ObjectIdentifier::new_unwrap("2.5.29.14"))
        .and_then(|e| {
            x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok()
        })
}

/// Walks issuer links from `cert` through the token's certificates to a trusted one.
fn chain_to_trusted(
    cert: &Certificate,
    certs: &[Certificate],
    trusted: &[Certificate],
) -> Result<(), TimestampError> {
    let mut current = cert.clone();
    for _ in 0..5 {
        if trusted.contains(&current) {
            return Ok(());
        }
        let issued_by = |issuer: &Certificate| {
            issuer.tbs_certificate.subject == current.tbs_certificate.issuer
                && current.tbs_certificate.to_der().ok().is_some_and(|tbs| {
                    verify_signature(
                        issuer,
                        &current.signature_algorithm.oid,
                        &current.signature_algorithm.oid,
                        &tbs,
                        current.signature.raw_bytes(),
                    )
                    .is_ok()
                })
        };
        if trusted.iter().any(issued_by) {
            return Ok(());
        }
        match certs.iter().find(|c| *c != &current && issued_by(c)) {
            Some(next) => current = next.clone(),
            None => break,
        }
    }
    Err(TimestampError::Untrusted(
        "the signer's certificate does not chain to the TSA CA".into(),
    ))
}

/// Verifies `signature` over `message` with `cert`'s key. `algorithm` is the signature
/// algorithm (or, in CMS, possibly just `rsaEncryption`, in which case `digest` names the hash).
fn verify_signature(
    cert: &Certificate,
    algorithm: &ObjectIdentifier,
    digest: &ObjectIdentifier,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let verifier: &'static dyn VerificationAlgorithm = match (*algorithm, *digest) {
        (SHA256_WITH_RSA, _) | (RSA_ENCRYPTION, ID_SHA_256) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (SHA384_WITH_RSA, _) | (RSA_ENCRYPTION, ID_SHA_384) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (SHA512_WITH_RSA, _) | (RSA_ENCRYPTION, ID_SHA_512) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (ECDSA_WITH_SHA256, _) | (ID_EC_PUBLIC_KEY, ID_SHA_256) if curve == Some(SECP256R1) => {
            &sig::ECDSA_P256_SHA256_ASN1
        }
        (ECDSA_WITH_SHA384, _) | (ID_EC_PUBLIC_KEY, ID_SHA_384) if curve == Some(SECP384R1) => {
            &sig::ECDSA_P384_SHA384_ASN1
        }
        (ECDSA_WITH_SHA256, _) if curve == Some(SECP384R1) => &sig::ECDSA_P384_SHA256_ASN1,
        (ECDSA_WITH_SHA384, _) if curve == Some(SECP256R1) => &sig::ECDSA_P256_SHA384_ASN1,
        (other, _) => return Err(format!("unsupported signature algorithm {other}")),
    };
    UnparsedPublicKey::new(verifier, spki.subject_public_key.raw_bytes())
        .verify(message, signature)
        .map_err(|_| "the signature does not match".to_owned())
}
