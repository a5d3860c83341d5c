// Package launch is the contract between a tenant and the attestation
// service for trusted launches: the service's HPKE launch key, the sealed
// launch request, the signed launch receipt and the in-instance proof of
// possession. The tenant side (the trustpool CLI) seals requests, verifies
// receipts and checks proofs; the service opens requests and signs
// receipts. The secret's path from the service to one host's TPM is package
// importblob.
//
// # Launch key
//
// An HPKE (RFC 9180, crypto/hpke) key pair of the service: ML-KEM-768 +
// X25519 by default, DHKEM(X25519) accepted, with HKDF-SHA256 and
// AES-256-GCM. Its fingerprint is the SHA-256 of its KEM id and public key;
// tenants pin the key (its PEM file or its fingerprint) out of band.
//
// # Request
//
// A tenant seals a Request (secret, profile, project id, not_after, random
// nonce) to the pinned key with info "trustpool-launch-v1". Open checks the
// AEAD (a request sealed to another key or for another purpose, or altered,
// does not open) and decodes strictly; Request.Check refuses a request
// sealed for another project than the caller's (a blob copied to another
// project is useless there) and one past its not_after. Not checked here:
// replays of one sealed request (the service keeps the nonces it has seen).
//
// # Receipt
//
// A Receipt is signed like a verdict (package verdict's Ed25519 key, over
// the exact JSON bytes, with a kid) and carries "type":
// "trustpool.launch.receipt", so that it cannot pass for a verdict or
// another statement. VerifyReceipt checks the signature against pinned keys
// and the receipt's shape; Receipt.Check compares it with what the tenant
// expects (launch, instance, profile, state).
//
// # Proof
//
// Inside the instance, Prove answers a tenant's fresh challenge with
// HMAC-SHA256(secret, "trustpool-launch-proof" ‖ challenge); CheckProof
// verifies it. An instance the provider started elsewhere has no secret and
// cannot answer.
//
// The package logs nothing and never puts secrets or plaintext in errors.
package launch
