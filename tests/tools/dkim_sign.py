#!/usr/bin/python3
"""Sign a message with python3-dkim (the test suite's independent signer).

argv: selector domain keyfile algorithm (rsa-sha256 | rsa-sha1); message on stdin; signed message on stdout.
"""
import sys

import dkim

selector, domain, keyfile, alg = sys.argv[1:5]
msg = sys.stdin.buffer.read()
key = open(keyfile, "rb").read()
sig = dkim.sign(msg, selector.encode(), domain.encode(), key,
                include_headers=[b"from", b"to", b"subject"], signature_algorithm=alg.encode())
sys.stdout.buffer.write(sig + msg)
