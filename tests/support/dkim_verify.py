"""Verifies a message's DKIM signature with dkimpy, an implementation
independent of the one that signed it (lettre), against a public key given
as a file rather than looked up in DNS.

Usage: python3 dkim_verify.py MESSAGE PUBLIC_KEY_DER EXPECTED_DNS_NAME

The key record is what the README tells operators to publish
(`v=DKIM1; k=rsa; p=<base64 of the DER public key>`); the name dkimpy asks
for must be EXPECTED_DNS_NAME (selector._domainkey.domain). Prints "pass"
and exits 0, or prints why and exits 1.
"""
import base64
import sys

import dkim


def main():
    message_path, key_path, expected = sys.argv[1:4]
    with open(message_path, "rb") as f:
        message = f.read()
    with open(key_path, "rb") as f:
        record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(f.read())
    asked = []

    def dns(name, timeout=5):
        asked.append(name.decode() if isinstance(name, bytes) else name)
        return record

    ok = dkim.verify(message, dnsfunc=dns)
    if asked != [expected] and asked != [expected + "."]:
        print("looked up %r, not %r" % (asked, expected))
        sys.exit(1)
    if not ok:
        print("fail: the signature does not verify")
        sys.exit(1)
    print("pass")


if __name__ == "__main__":
    main()
