#!/usr/bin/env python3
"""What an unauthenticated peer costs ssm-gateway on loopback (issue 13; BENCHMARKS.md): the
gateway's RSS with 150 connections each half-way through a 1 MiB StartSession body, and a 5 s
flood of unsigned requests (reconnecting whenever the gateway closes): requests answered and
audit bytes written.

usage: python3 benches/edge_attack.py <ssm-gateway binary> <scratch state dir>
build: cargo build --release --no-default-features --features gateway,programs --bin ssm-gateway"""
import json, os, shutil, socket, subprocess, sys, threading, time

binary, state = sys.argv[1], sys.argv[2]
shutil.rmtree(state, ignore_errors=True)
port = socket.socket(); port.bind(("127.0.0.1", 0)); listen = port.getsockname()[1]; port.close()
proc = subprocess.Popen([binary, "--dev", "--listen", f"127.0.0.1:{listen}", "--state-dir", state],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = proc.stdout.readline()
time.sleep(0.5)
def rss():
    for l in open(f"/proc/{proc.pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1])
base = rss()
audit = os.path.join(state, "audit.jsonl")
# 1. 150 connections each announcing a 1 MiB StartSession body and sending half of it.
held = []
big = 1 << 20
for i in range(150):
    s = socket.create_connection(("127.0.0.1", listen))
    head = (f"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-amz-target: AmazonSSM.StartSession\r\n"
            f"content-length: {big}\r\n\r\n").encode()
    try:
        s.sendall(head + b"x" * (big // 2))
    except OSError:
        pass
    held.append(s)
time.sleep(1.0)
with_bodies = rss()
for s in held:
    s.close()
time.sleep(1.0)
# 2. Junk flood: a new connection per unsigned request, 5 s.
before = os.path.getsize(audit)
answered = 0
deadline = time.time() + 5
junk = b"POST / HTTP/1.1\r\nhost: x\r\nx-amz-target: AmazonSSM.StartSession\r\ncontent-length: 2\r\n\r\n{}"
s = None
while time.time() < deadline:
    try:
        if s is None:
            s = socket.create_connection(("127.0.0.1", listen))
        s.sendall(junk)
        reply = s.recv(65536)
        if reply.startswith(b"HTTP/1.1"):
            answered += 1
        if not reply or b"connection: close" in reply.lower():
            s.close(); s = None
    except OSError:
        if s is not None:
            s.close()
        s = None
time.sleep(0.5)
after = os.path.getsize(audit)
proc.terminate(); proc.wait()
print(json.dumps({"rss_base_kib": base, "rss_150_bodies_kib": with_bodies,
                  "held_mib": round((with_bodies - base) / 1024, 1),
                  "junk_requests_answered_5s": answered, "audit_bytes": after - before,
                  "audit_bytes_per_s": round((after - before) / 5)}))
