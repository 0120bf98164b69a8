"""An independent ECU for Axle's flasher: the PyPI package python-uds-server (a stateful UDS
server: sessions, seed/key with lockout, download with block-counter checks) behind a thin
DoIP shim (routing activation, diagnostic ACKs, alive checks), on 127.0.0.1:PORT.

Usage: python uds_server_shim.py PORT. Prints "ready" when it listens. The application's
version (DID F189) is read from the first line of the downloaded image (`AXLE-FW name version`),
as it is on Axle's simulated ECU; "1.0.0" before any download.
"""

import os
import socket
import struct
import sys
import threading

from uds_server.communication import CommunicationControlDefinition
from uds_server.did import DidAccess, DidDefinition
from uds_server.memory import MemoryRegionDefinition
from uds_server.reset import EcuResetDefinition
from uds_server.routine import RoutineDefinition
from uds_server.security import SecurityLevel
from uds_server.server import UdsServer

ECU_ADDRESS = 0x00E0
BANK = bytearray(2 * 1024 * 1024)
STATE = {"version": b"1.0.0", "written": 0}


def demo_key(level, seed, params=None):
    value = struct.unpack(">I", bytes(seed).rjust(4, b"\0")[-4:])[0]
    rotated = ((value << 7) | (value >> 25)) & 0xFFFFFFFF
    return struct.pack(">I", rotated ^ 0xA5C35A3C)


def write(address, data):
    BANK[address:address + len(data)] = data
    STATE["written"] = max(STATE["written"], address + len(data))


def read(address, length):
    return bytes(BANK[address:address + length])


def activate():
    first_line = bytes(BANK[:200]).split(b"\n", 1)[0].split()
    if len(first_line) >= 3 and first_line[0] == b"AXLE-FW":
        STATE["version"] = first_line[2]


def server():
    return UdsServer(
        dids=[DidDefinition(0xF189, 16, DidAccess.READ, read_callback=lambda: STATE["version"].ljust(16, b"\0")),
              DidDefinition(0xF18C, 8, DidAccess.READ, read_callback=lambda: b"PYUDS001"),
              DidDefinition(0xF190, 17, DidAccess.READ, read_callback=lambda: b"WAXLE000000000002")],
        security_levels=[SecurityLevel(1, seed_callback=lambda: os.urandom(4), key_algorithm=demo_key)],
        routines=[RoutineDefinition(0xFF00, start_callback=lambda options: b"\x00"),
                  RoutineDefinition(0xFF01, start_callback=lambda options: b"\x00")],
        memory_regions=[MemoryRegionDefinition(0, len(BANK), read_callback=read, write_callback=write)],
        resets=[EcuResetDefinition(0x01, callback=activate)],
        communication_controls=[CommunicationControlDefinition(0x00), CommunicationControlDefinition(0x03)],
        max_transfer_block_length=0x402,
    )


UDS = server()
LOCK = threading.Lock()


def frame(payload_type, payload):
    return struct.pack(">BBHI", 2, 0xFD, payload_type, len(payload)) + payload


def serve(conn):
    buffer = b""
    tester = None
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buffer += data
        while len(buffer) >= 8:
            version, inverse, payload_type, length = struct.unpack(">BBHI", buffer[:8])
            if len(buffer) < 8 + length:
                break
            payload, buffer = buffer[8:8 + length], buffer[8 + length:]
            if payload_type == 0x0005:
                tester = struct.unpack(">H", payload[:2])[0]
                conn.sendall(frame(0x0006, struct.pack(">HHB", tester, ECU_ADDRESS, 0x10) + b"\0" * 4))
            elif payload_type == 0x0007:
                conn.sendall(frame(0x0008, struct.pack(">H", ECU_ADDRESS)))
            elif payload_type == 0x8001:
                source, target = struct.unpack(">HH", payload[:4])
                request = payload[4:]
                conn.sendall(frame(0x8002, struct.pack(">HHB", ECU_ADDRESS, source, 0) + request[:4]))
                with LOCK:
                    response = UDS.handle_request(request)
                if response:
                    conn.sendall(frame(0x8001, struct.pack(">HH", ECU_ADDRESS, source) + response))
                if request[:1] == b"\x11" and response[:1] == b"\x51":
                    # The reset reboots the ECU: the connection ends.
                    conn.close()
                    return


def main():
    port = int(sys.argv[1])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
