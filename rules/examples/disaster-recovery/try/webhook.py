"""A webhook receiver for the example: prints every JSON body POSTed to 127.0.0.1:9999."""

import http.server
import json


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(json.loads(body or b"{}"), flush=True)
        self.send_response(200)
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", 9999), Hook).serve_forever()
