"""An independent tester (the PyPI packages doipclient and udsoncan) against `axle ecu-sim`:
vehicle identification, routing activation, reading identification DIDs, and a complete
download sequence with the demo seed/key, ending in a reset and the new version read back.

The sim's address comes from AXLE_ECU (host:port) and its logical address from AXLE_ECU_ADDRESS.
"""

import os
import socket
import struct

import udsoncan
from doipclient import DoIPClient
from doipclient.connectors import DoIPClientUDSConnector
from udsoncan.client import Client
from udsoncan.common.MemoryLocation import MemoryLocation
from udsoncan.common.DataFormatIdentifier import DataFormatIdentifier
from udsoncan.services import DiagnosticSessionControl, RoutineControl, ECUReset

HOST, PORT = os.environ["AXLE_ECU"].rsplit(":", 1)
PORT = int(PORT)
ECU_ADDRESS = int(os.environ["AXLE_ECU_ADDRESS"], 0)


def demo_key(level, seed, params=None):
    """Axle's documented demo algorithm: rotate_left(seed, 7) XOR 0xA5C35A3C."""
    value = struct.unpack(">I", bytes(seed).rjust(4, b"\0")[-4:])[0]
    rotated = ((value << 7) | (value >> 25)) & 0xFFFFFFFF
    return struct.pack(">I", rotated ^ 0xA5C35A3C)


class AsciiCodec(udsoncan.DidCodec):
    def encode(self, value):
        return value.encode()

    def decode(self, payload):
        return payload.decode()

    def __len__(self):
        raise udsoncan.DidCodec.ReadAllRemainingData


def connect():
    doip = DoIPClient(HOST, ECU_ADDRESS, tcp_port=PORT, udp_port=PORT, client_logical_address=0x0E80,
                      activation_type=0)
    config = dict(udsoncan.configs.default_client_config)
    config["data_identifiers"] = {0xF189: AsciiCodec, 0xF190: AsciiCodec, 0xF18C: AsciiCodec}
    config["security_algo"] = demo_key
    config["request_timeout"] = 10
    config["p2_timeout"] = 2
    config["p2_star_timeout"] = 10
    client = Client(DoIPClientUDSConnector(doip), config=config)
    return doip, client


def test_vehicle_identification_over_udp():
    # doipclient's discovery listens for broadcasts; ask the sim directly over UDP instead.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.sendto(bytes.fromhex("02fd000100000000"), (HOST, PORT))
    data, _ = sock.recvfrom(1500)
    assert data[2:4] == b"\x00\x04"
    assert data[8:25] == b"WAXLE000000000001"
    assert struct.unpack(">H", data[25:27])[0] == ECU_ADDRESS


def test_read_identification():
    doip, client = connect()
    with client:
        assert client.read_data_by_identifier_first(0xF190) == "WAXLE000000000001"
        assert client.read_data_by_identifier_first(0xF189) == "1.0.0"
        client.tester_present()
    doip.close()


def test_download_sequence_installs_the_image():
    image = b"AXLE-FW udsoncan-test 9.9.9\n" + bytes(range(256)) * 2000
    doip, client = connect()
    with client:
        client.change_session(DiagnosticSessionControl.Session.extendedDiagnosticSession)
        client.control_dtc_setting(udsoncan.services.ControlDTCSetting.SettingType.off)
        client.change_session(DiagnosticSessionControl.Session.programmingSession)
        client.unlock_security_access(1)
        client.start_routine(0xFF00)
        location = MemoryLocation(address=0, memorysize=len(image), address_format=32, memorysize_format=32)
        response = client.request_download(location, dfi=DataFormatIdentifier(compression=0, encryption=0))
        block = response.service_data.max_length - 2
        counter = 1
        for start in range(0, len(image), block):
            client.transfer_data(counter & 0xFF, image[start:start + block])
            counter += 1
        client.request_transfer_exit()
        status = client.start_routine(0xFF01)
        assert status.service_data.routine_status_record[:1] == b"\x00"
        client.ecu_reset(ECUReset.ResetType.hardReset)
    doip.close()
    # After the reboot: a new connection reads the new version.
    doip, client = connect()
    with client:
        assert client.read_data_by_identifier_first(0xF189) == "9.9.9"
    doip.close()


def test_wrong_key_is_refused():
    doip, client = connect()
    client.config["security_algo"] = lambda level, seed, params=None: b"\x00\x00\x00\x00"
    with client:
        client.change_session(DiagnosticSessionControl.Session.programmingSession)
        try:
            client.unlock_security_access(1)
            raise AssertionError("a wrong key was accepted")
        except udsoncan.exceptions.NegativeResponseException as e:
            assert e.response.code == 0x35
    doip.close()
