-- v2: Autocrypt keys seen in inbound mail (the OpenPGP work needs them).
CREATE TABLE autocrypt_peer (
    addr TEXT PRIMARY KEY,
    keydata BLOB NOT NULL,
    prefer_encrypt_mutual INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER NOT NULL
) STRICT;
