#!/usr/bin/python3
"""Independent DKIM verifier for the test suite (Debian's python3-dkim, not mail-auth).

stdin: JSON {"message": base64 of the RFC 5322 message, "records": {"sel._domainkey.dom": "v=DKIM1; ..."}}
stdout: JSON list, one entry per DKIM-Signature (top first): true when it verifies.
"""
import base64
import json
import sys

import dkim

req = json.load(sys.stdin)
msg = base64.b64decode(req["message"])
records = {k.lower().rstrip("."): v for k, v in req["records"].items()}


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    value = records.get(name.lower().rstrip("."))
    return value.encode() if value is not None else None


headers, _ = dkim.rfc822_parse(msg)
count = sum(1 for name, _ in headers if name.lower() == b"dkim-signature")
results = []
for i in range(count):
    d = dkim.DKIM(msg)
    try:
        results.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
    except Exception as e:  # a verifier error is a failure, reported with its reason
        sys.stderr.write("signature %d: %s\n" % (i, e))
        results.append(False)
print(json.dumps(results))
