"""A real gRPC peer over TLS for airtrust's tests, run with the image's own grpcio.

    python grpc_echo.py serve PORT CERT KEY      # echoes /airtrust.Echo/Say
    python grpc_echo.py call HOST:PORT           # default roots: grpcio's roots.pem or
                                                 # $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH

No protobuf: the method takes and returns raw bytes. The client exits 0 when
the call returned the bytes it sent, 2 with the gRPC error otherwise.
"""

import sys
from concurrent import futures

import grpc

METHOD = "/airtrust.Echo/Say"


def serve(port: str, cert: str, key: str) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "airtrust.Echo", {"Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)}
    )
    server.add_generic_rpc_handlers((handler,))
    with open(cert, "rb") as c, open(key, "rb") as k:
        credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def call(target: str) -> None:
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
    try:
        reply = channel.unary_unary(METHOD)(b"ping", timeout=10)
    except grpc.RpcError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if reply == b"ping" else 1)


if __name__ == "__main__":
    {"serve": serve, "call": call}[sys.argv[1]](*sys.argv[2:])
