"""Raw HTTP/2 over cleartext (prior knowledge), frame by frame, with the `h2` package: a client
that can do what attackers do (trailers, thousands of held streams, HPACK-indexed headers) and an
h2c echo upstream that reports the request headers, body size and trailers it received."""

import json
import socket
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class Client:
    """One h2c connection to `port`. Streams are driven by hand: `open`, `data`, `trailers`,
    then `response` reads until that stream ends or is reset."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.responses = {}  # stream id -> {"status", "headers", "body", "ended", "reset"}
        self.peer_settings = {}
        # Read the server's SETTINGS so the stream limit is known.
        while h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS not in self.peer_settings:
            if not self._read():
                break

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    @property
    def max_streams(self):
        return self.conn.remote_settings.max_concurrent_streams

    def open(self, headers, end_stream=False):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.responses[sid] = {"status": None, "headers": [], "body": b"", "ended": False, "reset": None}
        return sid

    def data(self, sid, body, end_stream=False):
        self.conn.send_data(sid, body, end_stream=end_stream)
        self.flush()

    def trailers(self, sid, trailers):
        self.conn.send_headers(sid, trailers, end_stream=True)
        self.flush()

    def _read(self):
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, OSError):
            return False
        if not data:
            return False
        for event in self.conn.receive_data(data):
            r = self.responses.get(getattr(event, "stream_id", None))
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.peer_settings.update({k: v.new_value for k, v in event.changed_settings.items()})
            elif isinstance(event, h2.events.ResponseReceived) and r is not None:
                r["headers"] = list(event.headers)
                r["status"] = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived) and r is not None:
                r["body"] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and r is not None:
                r["ended"] = True
            elif isinstance(event, h2.events.StreamReset) and r is not None:
                r["reset"] = event.error_code
                r["ended"] = True
        self.flush()
        return True

    def response(self, sid):
        while not self.responses[sid]["ended"]:
            if not self._read():
                break
        return self.responses[sid]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def request_headers(port, path="/v1/chat/completions", method="POST", extra=()):
    return [(":method", method), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"), (":path", path),
            *extra]


class EchoUpstream:
    """An h2c server on a free port: every request is answered 200 with JSON
    `{"upstream": {"name", "headers": [[n, v]...], "trailers": [[n, v]...], "body_bytes"}}`."""

    def __init__(self, name="vllm"):
        self.name = name
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams = {}
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = {"headers": list(event.headers), "trailers": [], "body": 0}
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id]["body"] += len(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.TrailersReceived):
                        streams[event.stream_id]["trailers"] = list(event.headers)
                    elif isinstance(event, h2.events.StreamEnded):
                        s = streams.pop(event.stream_id)
                        self.requests += 1
                        body = json.dumps({"upstream": {"name": self.name, "headers": [list(h) for h in s["headers"]],
                                                        "trailers": [list(t) for t in s["trailers"]],
                                                        "body_bytes": s["body"]}}).encode()
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                            ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body, end_stream=True)
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError, KeyError):
            return
        finally:
            sock.close()

    def close(self):
        self.stopped = True
        self.listener.close()


def use_h2_upstream(cfg, cluster, port):
    """Points `cluster` of an Envoy config dict at an h2c upstream on `port`."""
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == cluster:
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = port
            c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
