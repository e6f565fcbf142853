#!/usr/bin/python3
"""kiln's gRPC server (src/net/grpc.c) against the gRPC client our users run: Debian's
python3-grpcio, calling the echo server tests/integration/grpc_echo.c through grpcio's generic
API with raw bytes (no protobuf): unary and streaming calls, metadata both ways, a 10 MiB message,
many concurrent calls on one channel, the statuses the server answers itself (unknown method,
compressed message, deadline) and the service's own (percent-encoded message), a cancelled call,
and draining on SIGTERM.

    test_grpc_wire.py GRPC_ECHO_BINARY
"""
import subprocess
import sys
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

import grpc

ECHO = None


class GrpcWire(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen([ECHO], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError("grpc_echo did not start: %r %s" % (line, cls.proc.stderr.read()))
        cls.target = "127.0.0.1:%d" % int(line.split()[1])
        cls.channel = grpc.insecure_channel(cls.target, options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        grpc.channel_ready_future(cls.channel).result(timeout=10)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.proc.terminate()
        try:
            cls.proc.wait(timeout=10)
        finally:
            if cls.proc.poll() is None:
                cls.proc.kill()

    def unary(self, method):
        return self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)

    def test_unary_echo_with_metadata(self):
        reply, call = self.unary("/test.Echo/Unary").with_call(b"hello kiln", metadata=[("x-request-id", "abc-123")],
                                                                timeout=10)
        self.assertEqual(reply, b"hello kiln")
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertIn(("x-request-id", "abc-123"), list(call.initial_metadata()))
        self.assertEqual(self.unary("/test.Echo/Unary")(b"", timeout=10), b"")

    def test_large_message(self):
        data = bytes((i * 7919) & 0xFF for i in range(256)) * (40 * 1024)  # 10 MiB
        self.assertEqual(self.unary("/test.Echo/Unary")(data, timeout=30), data)

    def test_concurrent_calls(self):
        call = self.unary("/test.Echo/Unary")
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: call(b"n%d" % i, timeout=10), range(200)))
        self.assertEqual(replies, [b"n%d" % i for i in range(200)])

    def test_streaming(self):
        stream = self.channel.stream_stream("/test.Echo/Stream", request_serializer=None, response_deserializer=None)
        call = stream(iter([b"m%d" % i for i in range(100)]), timeout=10)
        self.assertEqual(list(call), [b"m%d" % i for i in range(100)])
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertEqual(call.details(), "100 messages")
        empty = stream(iter([]), timeout=10)
        self.assertEqual(list(empty), [])
        self.assertEqual(empty.details(), "0 messages")

    def test_unknown_method(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.unary("/x.Y/Z")(b"", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertEqual(e.exception.details(), "unknown method /x.Y/Z")

    def test_service_error_is_percent_decoded(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.unary("/test.Echo/Fail")(b"x", timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(e.exception.details(), "bad: 100% \u00fcnicode\nline two")

    def test_compressed_message(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.unary("/test.Echo/Unary")(b"z" * 1000, timeout=10, compression=grpc.Compression.Gzip)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertEqual(e.exception.details(), "compressed messages are not supported")

    def test_deadline(self):
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as e:
            self.unary("/test.Echo/Slow")(b"late", timeout=0.1)
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - start, 2)
        self.assertEqual(self.unary("/test.Echo/Slow")(b"in time", timeout=10), b"in time")

    def test_cancel(self):
        future = self.unary("/test.Echo/Slow").future(b"x", timeout=10)
        time.sleep(0.05)
        self.assertTrue(future.cancel())
        self.assertEqual(self.unary("/test.Echo/Unary")(b"after", timeout=10), b"after")

    def test_zz_drain(self):
        """SIGTERM while a call is in flight: the call completes, then the server exits."""
        result = {}

        def slow():
            result["reply"] = self.unary("/test.Echo/Slow")(b"drained", timeout=10)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.1)
        self.proc.terminate()
        t.join(10)
        self.assertEqual(result.get("reply"), b"drained")
        self.channel.close()
        self.assertEqual(self.proc.wait(timeout=10), 0)
        log = self.proc.stderr.read()
        self.assertIn("drained after", log)
        # the deadline and the cancelled call reached the service as kiln_grpc_cancelled
        self.assertGreaterEqual(log.count("slow call cancelled"), 2)


if __name__ == "__main__":
    ECHO = sys.argv.pop(1)
    unittest.main(verbosity=2)
