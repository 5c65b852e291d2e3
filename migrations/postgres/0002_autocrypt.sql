-- v2: Autocrypt keys seen in inbound mail (the OpenPGP work needs them).
CREATE TABLE autocrypt_peer (
    addr TEXT PRIMARY KEY,
    keydata BYTEA NOT NULL,
    prefer_encrypt_mutual BIGINT NOT NULL DEFAULT 0,
    last_seen BIGINT NOT NULL
);
