"""Security with Kafka's names and semantics: authentication, authorization (ACLs), quotas.

Authentication: `listeners.py` parses Kafka's listener settings; `tls.py` builds the SSL
contexts and maps a client certificate's subject to a principal; `scram.py` is RFC 5802/7677
SCRAM (hand-written with hashlib/hmac); `credentials.py` keeps SCRAM credentials durable in the
data dir; `sasl.py` holds a connection's authentication state (`SaslSession`), which the
SaslHandshake and SaslAuthenticate handlers drive and the connection obeys.
Authorization: `acl.py`, `acl_store.py`.
"""
