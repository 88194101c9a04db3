"""A real SMTP server (aiosmtpd) for Dossier's test suites.

Usage: python3 smtp_capture.py PORT DIR

Listens on 127.0.0.1:PORT and stores every message it accepts as DIR/N.eml
(written under a temporary name, then renamed). Some recipients play
faults, by the local part of their address:
  reject…    550 at RCPT (permanent)
  tempfail…  451 at RCPT on their first two attempts, then accepted
  stallrcpt… the RCPT reply is held for 60 s (a client killed meanwhile
             never reaches DATA)
  stalldata… on its first message, the message is stored and then the
             final reply held for 10 s: the client, timing out, cannot
             know it was taken (RFC 1047)
Accepted messages are answered "250 2.0.0 Ok: queued as N", N being the
file's number, as Postfix names its queue ids.
Prints "ready" on stdout once listening.
"""
import asyncio
import itertools
import os
import sys

from aiosmtpd.controller import Controller


class Capture:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)
        self.tries = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if local.startswith("tempfail"):
            n = self.tries.get(address, 0) + 1
            self.tries[address] = n
            if n <= 2:
                return "451 4.3.0 try again later"
        if local.startswith("stallrcpt"):
            n = self.tries.get(address, 0) + 1
            self.tries[address] = n
            if n == 1:
                await asyncio.sleep(60)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        # A restarted server keeps the messages of the one before it.
        while os.path.exists(os.path.join(self.directory, "%d.eml" % n)):
            n = next(self.counter)
        tmp = os.path.join(self.directory, ".%d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, "%d.eml" % n))
        for address in envelope.rcpt_tos:
            if address.split("@", 1)[0].lower().startswith("stalldata"):
                key = "data:" + address
                self.tries[key] = self.tries.get(key, 0) + 1
                if self.tries[key] == 1:
                    await asyncio.sleep(10)
        return "250 2.0.0 Ok: queued as %d" % n


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Capture(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            asyncio.run(asyncio.sleep(3600))
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
